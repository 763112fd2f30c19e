"""The Django admin of the orgs app: staff only, every model searchable, secrets and
their hashes never shown, the audit log untouchable, writes through the services."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from orgs import audit, services
from orgs.choices import InvitationStatus, Role
from orgs.models import (
    ApiKey,
    AuditChainHead,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    Team,
    User,
)
from orgs.permissions import Principal

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
ORGS_MODELS = list(apps.get_app_config("orgs").get_models())


def url(model, view: str, *args) -> str:
    return reverse(f"admin:orgs_{model._meta.model_name}_{view}", args=args)


def last_event(organization) -> AuditEvent:
    return AuditEvent.objects.filter(organization=organization).latest("seq")


@pytest.fixture
def world(organization, member):
    """A row of every orgs model in Acme, made through the services; keeps the secrets."""
    boss = User.objects.create_user("ann@acme.test", PASSWORD)
    Membership.objects.create(user=boss, organization=organization, role=Role.ADMIN)
    admin_principal = Principal.member(boss, organization)
    ada = Membership.objects.get(user=member, organization=organization)
    team = services.create_team(admin_principal, "Ops", members=[ada.pk])
    auditors = services.create_team(admin_principal, "Auditors")
    services.grant(admin_principal, "operate", organization, user=member)
    services.grant(admin_principal, "view", organization, team=team)
    services.grant(admin_principal, "manage", team, user=member)
    services.grant(admin_principal, "view", team, team=auditors)
    invitation, token = services.invite(admin_principal, "new@acme.test", Role.VIEWER)
    key, secret = services.create_api_key(
        Principal.member(member, organization), "deploy-bot", scopes=["read"]
    )
    rotated, old_secret = services.create_api_key(admin_principal, "rotated", scopes=["read"])
    rotated, new_secret = services.rotate_api_key(admin_principal, rotated, grace=timedelta(days=1))
    assert rotated.previous_hash
    hidden = [
        secret,
        key.key_hash,
        old_secret,
        new_secret,
        rotated.key_hash,
        rotated.previous_hash,
        token,
        invitation.token_hash,
    ]
    return SimpleNamespace(
        organization=organization,
        boss=boss,
        ada=ada,
        team=team,
        invitation=invitation,
        key=key,
        rotated=rotated,
        hidden=hidden,
    )


def every_page(client):
    """(url, html) of each orgs changelist and of each orgs row's change page."""
    for model in ORGS_MODELS:
        for page in [url(model, "changelist")] + [
            url(model, "change", pk) for pk in model._default_manager.values_list("pk", flat=True)
        ]:
            response = client.get(page)
            assert response.status_code == 200, page
            yield page, response.content.decode()


def change_form_data(response, **changes) -> dict:
    """What the browser would post back from an admin change page, with ``changes``."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None and value is not False:
                data[form.add_prefix(name)] = value
    data.update(changes)
    return data


# --- registration, access, secrets ----------------------------------------------------------


def test_every_orgs_model_is_registered():
    registered = {model for model in admin.site._registry if model._meta.app_label == "orgs"}
    assert registered == set(ORGS_MODELS)


def test_staff_open_every_page_and_never_see_a_secret_or_its_hash(staff_client, world):
    pages = dict(every_page(staff_client))

    assert len(pages) > 2 * len(ORGS_MODELS)
    assert world.key.prefix in pages[url(ApiKey, "change", world.key.pk)]
    assert world.invitation.email in pages[url(Invitation, "change", world.invitation.pk)]
    for page, html in pages.items():
        for hidden in world.hidden:
            assert hidden not in html, f"{page} shows a secret or its hash"


@pytest.mark.parametrize("model", ORGS_MODELS, ids=lambda model: model.__name__)
def test_every_changelist_searches(staff_client, world, model):
    for term in ["acme", "192.0.2", "ada"]:
        response = staff_client.get(url(model, "changelist"), {"q": term})
        assert response.status_code == 200
    assert admin.site._registry[model].search_fields, "no search fields"


@pytest.mark.parametrize(
    ("model", "term", "expected"),
    [
        (ApiKey, "deploy-bot", 1),
        (ApiKey, "ada@acme", 1),
        (Membership, "ann@", 1),
        (Invitation, "new@acme", 1),
        (Team, "ops", 1),
        (Organization, "acme", 1),
        (AuditEvent, "apikey.rotate", 1),
        (User, "nobody-by-that-name", 0),
    ],
)
def test_search_finds_what_it_should(staff_client, world, model, term, expected):
    response = staff_client.get(url(model, "changelist"), {"q": term})
    assert response.context["cl"].result_count == expected


def test_grants_filter_by_action(staff_client, world):
    from orgs.models import OrganizationUserGrant

    changelist = url(OrganizationUserGrant, "changelist")
    assert staff_client.get(changelist, {"action": "operate"}).context["cl"].result_count == 1
    assert staff_client.get(changelist, {"action": "manage"}).context["cl"].result_count == 0


def test_people_without_staff_status_are_sent_to_the_admin_login(client, member):
    pages = [reverse("admin:index"), url(ApiKey, "changelist"), url(AuditEvent, "changelist")]
    for signed_in in (False, True):
        if signed_in:
            client.force_login(member)
        for page in pages:
            response = client.get(page)
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("admin:login"))


def test_staff_still_add_users_with_a_password(staff_client):
    response = staff_client.post(
        url(User, "add"),
        {
            "email": "carol@argus.test",
            "usable_password": "true",
            "password1": "plum orchard lantern 42",
            "password2": "plum orchard lantern 42",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(email="carol@argus.test").check_password("plum orchard lantern 42")


def test_staff_who_are_not_superusers_see_no_orgs_model(client, world):
    clerk = User.objects.create_user("clerk@argus.test", PASSWORD, is_staff=True)
    client.force_login(clerk)
    for model in ORGS_MODELS:
        assert client.get(url(model, "changelist")).status_code == 403
    response = client.post(
        url(ApiKey, "changelist"), {"action": "revoke_selected", "_selected_action": [world.key.pk]}
    )
    assert response.status_code == 403
    world.key.refresh_from_db()
    assert world.key.revoked_at is None


# --- the audit log cannot be edited -----------------------------------------------------------


@pytest.mark.parametrize("model", [AuditEvent, AuditChainHead], ids=lambda model: model.__name__)
def test_the_audit_log_is_read_only_even_for_superusers(staff_client, world, model):
    obj = model.objects.first()
    before = list(model.objects.values())

    page = staff_client.get(url(model, "change", obj.pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert url(model, "delete", obj.pk) not in html
    assert staff_client.post(url(model, "change", obj.pk), {"seq": 99}).status_code == 403
    assert staff_client.get(url(model, "add")).status_code == 403
    assert staff_client.post(url(model, "add"), {"seq": 99}).status_code == 403
    assert staff_client.get(url(model, "delete", obj.pk)).status_code == 403
    assert staff_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    staff_client.post(
        url(model, "changelist"), {"action": "delete_selected", "_selected_action": [obj.pk]}
    )
    assert list(model.objects.values()) == before


def test_events_of_deleted_people_and_organizations_still_show(staff_client, world, member):
    event = AuditEvent.objects.filter(actor=member).latest("seq")
    member.delete()
    world.organization.delete()  # events keep their ids: they are part of the hash

    assert staff_client.get(url(AuditEvent, "changelist")).status_code == 200
    page = staff_client.get(url(AuditEvent, "change", event.pk))
    assert page.status_code == 200
    assert "ada@acme.test" in page.content.decode()  # the actor's label


def test_chain_heads_can_be_verified_from_the_admin(staff_client, world):
    head = AuditChainHead.objects.get(key=f"org:{world.organization.pk}")
    action = {"action": "verify_selected", "_selected_action": [head.pk]}

    response = staff_client.post(url(AuditChainHead, "changelist"), action, follow=True)
    assert f"Chain {head.key} is intact up to #{head.seq}." in response.content.decode()

    AuditEvent.objects.filter(organization=world.organization, seq=2).update(action="forged")
    response = staff_client.post(url(AuditChainHead, "changelist"), action, follow=True)
    assert f"Chain {head.key} is broken at #2: its content does not match its hash." in (
        response.content.decode()
    )


# --- revoking keys and invitations -------------------------------------------------------------


def test_a_superuser_outside_the_org_revokes_keys_as_the_system_under_their_name(
    staff_client, root, world
):
    keys = [world.key.pk, world.rotated.pk]
    seq = last_event(world.organization).seq

    response = staff_client.post(
        url(ApiKey, "changelist"),
        {"action": "revoke_selected", "_selected_action": keys},
        follow=True,
    )

    assert "Revoked: 2." in response.content.decode()
    for key in ApiKey.objects.filter(pk__in=keys):
        assert key.revoked_at is not None and key.previous_hash is None
    events = AuditEvent.objects.filter(organization=world.organization, seq__gt=seq)
    assert sorted(events.values_list("action", "channel", "actor", "actor_label", "target_id")) == [
        ("apikey.revoke", "admin", root.pk, root.email, str(pk)) for pk in sorted(keys)
    ]

    again = staff_client.post(
        url(ApiKey, "changelist"),
        {"action": "revoke_selected", "_selected_action": [world.key.pk]},
        follow=True,
    )
    assert "This key is already revoked." in again.content.decode()
    assert AuditEvent.objects.filter(organization=world.organization, seq__gt=seq).count() == 2


def test_revoking_as_a_superuser_who_is_an_org_admin_names_them(staff_client, root, world):
    Membership.objects.create(user=root, organization=world.organization, role=Role.ADMIN)

    staff_client.post(
        url(ApiKey, "changelist"), {"action": "revoke_selected", "_selected_action": [world.key.pk]}
    )

    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor, event.actor_label) == (
        "apikey.revoke",
        "admin",
        root,
        root.email,
    )


def test_revoking_invitations_is_audited(staff_client, root, world):
    response = staff_client.post(
        url(Invitation, "changelist"),
        {"action": "revoke_selected", "_selected_action": [world.invitation.pk]},
        follow=True,
    )

    assert "Revoked: 1." in response.content.decode()
    world.invitation.refresh_from_db()
    assert world.invitation.status == InvitationStatus.REVOKED
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("invitation.revoke", "admin", root)


@pytest.mark.parametrize("model", [ApiKey, Invitation], ids=lambda model: model.__name__)
def test_keys_and_invitations_are_neither_added_changed_nor_deleted_here(
    staff_client, world, model
):
    obj = model.objects.first()
    assert staff_client.get(url(model, "add")).status_code == 403
    page = staff_client.get(url(model, "change", obj.pk)).content.decode()
    assert 'name="_save"' not in page
    assert staff_client.post(url(model, "change", obj.pk), {"name": "x"}).status_code == 403
    assert staff_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403


# --- memberships, organizations and teams through the services ---------------------------------


def test_changing_a_role_goes_through_the_service(staff_client, root, world):
    response = staff_client.post(
        url(Membership, "change", world.ada.pk), {"role": Role.MANAGER, "_save": "Save"}
    )

    assert response.status_code == 302
    world.ada.refresh_from_db()
    assert world.ada.role == Role.MANAGER
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("member.role_change", "admin", root)
    assert event.changes == {"role": [Role.OPERATOR, Role.MANAGER]}


def test_the_last_admin_cannot_be_demoted_here_either(staff_client, world):
    boss = Membership.objects.get(user=world.boss)
    seq = last_event(world.organization).seq

    response = staff_client.post(
        url(Membership, "change", boss.pk), {"role": Role.VIEWER, "_save": "Save"}, follow=True
    )

    assert "The organization needs at least one admin" in response.content.decode()
    boss.refresh_from_db()
    assert boss.role == Role.ADMIN
    assert last_event(world.organization).seq == seq


def test_adding_and_removing_members_go_through_the_services(staff_client, root, world):
    newcomer = User.objects.create_user("bob@acme.test", PASSWORD)

    response = staff_client.post(
        url(Membership, "add"),
        {"user": newcomer.pk, "organization": world.organization.pk, "role": Role.VIEWER},
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer)
    added = last_event(world.organization)
    assert (added.action, added.channel, added.actor, added.target_label) == (
        "member.add",
        "admin",
        root,
        "bob@acme.test",
    )
    assert membership.role == Role.VIEWER

    response = staff_client.post(url(Membership, "delete", membership.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    removed = last_event(world.organization)
    assert (removed.action, removed.channel, removed.actor) == ("member.remove", "admin", root)


def test_removing_selected_members_keeps_the_last_admin(staff_client, world):
    boss = Membership.objects.get(user=world.boss)

    response = staff_client.post(
        url(Membership, "changelist"),
        {"action": "remove_selected", "_selected_action": [world.ada.pk, boss.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert "Removed: 1." in html and "The last admin cannot leave or be removed" in html
    assert list(Membership.objects.filter(organization=world.organization)) == [boss]
    assert "delete_selected" not in admin.site._registry[Membership].get_actions(
        response.wsgi_request
    )


def test_organization_settings_change_through_the_service(staff_client, root, world):
    page = staff_client.get(url(Organization, "change", world.organization.pk))
    data = change_form_data(page, name="Acme Corp", slug="hacked", plan="ENTERPRISE")

    response = staff_client.post(url(Organization, "change", world.organization.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    world.organization.refresh_from_db()
    assert (world.organization.name, world.organization.slug) == ("Acme Corp", "acme")
    assert world.organization.plan == "FREE"
    event = last_event(world.organization)
    assert (event.action, event.channel, event.changes) == (
        "organization.update",
        "admin",
        {"name": ["Acme", "Acme Corp"]},
    )
    assert staff_client.get(url(Organization, "add")).status_code == 403
    assert staff_client.get(url(Organization, "delete", world.organization.pk)).status_code == 403


def test_organization_settings_refused_by_the_service_show_an_error(staff_client, world):
    page = staff_client.get(url(Organization, "change", world.organization.pk))
    data = change_form_data(page, retention_days=365)  # the Free plan keeps 7 days

    response = staff_client.post(
        url(Organization, "change", world.organization.pk), data, follow=True
    )

    assert "keeps recordings for at most 7 days" in response.content.decode()
    world.organization.refresh_from_db()
    assert world.organization.retention_days is None


def test_teams_change_and_go_through_the_services(staff_client, root, world):
    response = staff_client.post(
        url(Team, "change", world.team.pk), {"name": "Operations", "description": "On call"}
    )
    assert response.status_code == 302
    world.team.refresh_from_db()
    assert (world.team.name, world.team.description) == ("Operations", "On call")
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("team.update", "admin", root)

    response = staff_client.post(url(Team, "delete", world.team.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Team.objects.filter(pk=world.team.pk).exists()
    assert last_event(world.organization).action == "team.delete"


def test_the_admin_signs_in_through_allauth(client, db):
    """Two-factor authentication and allauth's rate limits apply to staff too."""
    response = client.get("/admin/")
    assert response.status_code == 302
    follow = client.get(response["Location"])
    assert follow.status_code == 302
    assert follow["Location"].startswith("/accounts/login/?next=")


def test_account_changes_in_the_admin_are_audited_and_guarded(client, personas):
    from orgs.models import User

    staff = User.objects.create_superuser("root@argus.test", "correct horse battery")
    client.force_login(staff)
    viewer = personas.viewer
    page = client.get(f"/admin/orgs/user/{viewer.pk}/change/").content.decode()
    assert 'name="groups"' not in page
    response = client.post(
        f"/admin/orgs/user/{viewer.pk}/change/",
        {
            "email": viewer.email,
            "name": "Victor",
            "is_staff": "",
            "is_superuser": "",
            "last_login_0": "",
            "last_login_1": "",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "10:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    viewer.refresh_from_db()
    assert (viewer.name, viewer.is_active) == ("Victor", False)
    event = AuditEvent.objects.get(action="account.update", organization=personas.org_a)
    assert event.channel == "admin" and event.actor == staff
    assert event.changes["is_active"] == [True, False]

    refused = client.post(f"/admin/orgs/user/{personas.admin.pk}/delete/", {"post": "yes"})
    assert refused.status_code == 302
    assert User.objects.filter(pk=personas.admin.pk).exists()
    client.post(f"/admin/orgs/user/{personas.operator.pk}/delete/", {"post": "yes"})
    assert not User.objects.filter(pk=personas.operator.pk).exists()
    assert AuditEvent.objects.filter(action="account.delete", organization=personas.org_a).exists()
    assert audit.verify() == []
