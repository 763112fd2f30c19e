"""Services of the orgs app: organizations, members, invitations, teams, keys, audit."""

import itertools
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from argus.errors import Conflict, LimitExceeded, ServiceError
from orgs import audit, services
from orgs.choices import InvitationStatus, Plan, Role
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team
from orgs.permissions import Principal, can
from orgs.services import (
    DEMO_EMAIL,
    InvitationError,
    OrganizationError,
    create_organization,
    seed_demo_organization,
)
from tests.support.personas import make_user

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_keeps_the_password_private(tmp_path):
    user, password, created = seed_demo_organization(tmp_path)
    assert created and password
    assert user.email == DEMO_EMAIL
    assert user.check_password(password)
    login = tmp_path / "demo-login.txt"
    assert login.read_text().split() == [DEMO_EMAIL, password]
    assert oct(login.stat().st_mode & 0o777) == "0o600"
    demo = Organization.objects.get(slug="demo")
    assert Membership.objects.get(user=user, organization=demo).role == Role.ADMIN

    again, same_password, created_again = seed_demo_organization(tmp_path)
    assert (again, same_password, created_again) == (user, password, False)
    assert Organization.objects.filter(slug="demo").count() == 1


def test_create_organization_refuses_taken_and_empty_slugs(member):
    create_organization("Globex", owner=member)
    with pytest.raises(OrganizationError, match="'globex' is already taken"):
        create_organization("Globex", owner=member)
    with pytest.raises(OrganizationError, match="letters or digits"):
        create_organization("!!!", owner=member)
    assert Organization.objects.filter(slug="globex").count() == 1


# --- organizations, limits, settings ---------------------------------------------------------


def test_create_organization_makes_the_owner_admin_and_audits(member):
    organization = create_organization("Alpha Labs", owner=member)
    assert organization.slug == "alpha-labs"
    assert Membership.objects.get(organization=organization, user=member).role == Role.ADMIN
    actions = list(
        AuditEvent.objects.filter(organization=organization)
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["organization.create", "member.add"]
    assert audit.verify(organization) == []


def test_member_limit_names_the_limit(personas):
    personas.org_a.plan = Plan.FREE
    personas.org_a.save()
    admin = personas.principal("ADMIN")
    services.invite(admin, "fifth@alpha.test", Role.VIEWER)  # 4 members + 1 pending = 5
    with pytest.raises(LimitExceeded, match="Free plan allows at most 5 members"):
        services.invite(admin, "sixth@alpha.test", Role.VIEWER)
    assert not Invitation.objects.filter(email="sixth@alpha.test").exists()
    with pytest.raises(LimitExceeded, match="at most 5 members"):
        services.add_member(Principal.system(personas.org_a), make_user("x@y.test"), Role.VIEWER)
    usage = {row["limit"]: row for row in services.usage(personas.org_a)}
    assert usage["members"]["used"] == 4
    assert usage["members"]["allowed"] == 5
    assert usage["servers"]["allowed"] == 3


def test_update_organization_validates_and_audits(personas):
    admin = personas.principal("ADMIN")
    services.update_organization(
        admin,
        personas.org_a,
        name="Alpha Inc",
        four_eyes_approval=False,
        redaction_keys=["customer_id", " ssn ", "", "SSN"],
        retention_days=30,
    )
    personas.org_a.refresh_from_db()
    assert personas.org_a.name == "Alpha Inc"
    assert personas.org_a.redaction_keys == ["customer_id", "ssn"]
    assert not personas.org_a.four_eyes_approval
    event = AuditEvent.objects.filter(action="organization.update").get()
    assert event.changes["name"] == ["Alpha", "Alpha Inc"]
    assert event.changes["retention_days"] == [None, 30]

    with pytest.raises(LimitExceeded, match="at most 90 days"):
        services.update_organization(admin, personas.org_a, retention_days=400)
    with pytest.raises(ServiceError, match="not a key name") as bad:
        services.update_organization(admin, personas.org_a, redaction_keys=["has space"])
    assert bad.value.field == "redaction_keys"
    with pytest.raises(ServiceError, match="cannot be empty"):
        services.update_organization(admin, personas.org_a, name="  ")
    with pytest.raises(PermissionDenied):
        services.update_organization(personas.principal("MANAGER"), personas.org_a, name="X")
    personas.org_a.refresh_from_db()
    assert personas.org_a.name == "Alpha Inc"
    assert AuditEvent.objects.filter(action="organization.update").count() == 1


def test_switch_organization_only_to_own(personas, outsider):
    session = {}
    with pytest.raises(ServiceError, match="not a member"):
        services.switch_organization(personas.admin, session, personas.org_b.pk)
    with pytest.raises(ServiceError, match="not a member"):
        services.switch_organization(personas.admin, session, 999999)
    Membership.objects.create(user=personas.admin, organization=personas.org_b, role=Role.VIEWER)
    services.switch_organization(personas.admin, session, personas.org_b.pk)
    current = services.current_organization(personas.admin, session)
    assert current == personas.org_b
    assert current.member_role == Role.VIEWER
    # A new session opens where the user last was, while they are still a member there.
    personas.admin.refresh_from_db()
    assert services.current_organization(personas.admin, {}) == personas.org_b
    Membership.objects.filter(user=personas.admin, organization=personas.org_b).delete()
    assert services.current_organization(personas.admin, {}) == personas.org_a


# --- members ---------------------------------------------------------------------------------


def test_only_admins_change_roles(personas):
    target = personas.viewer.memberships.get()
    for role in (Role.MANAGER, Role.OPERATOR, Role.VIEWER):
        with pytest.raises(PermissionDenied):
            services.change_role(personas.principal(role), target, Role.OPERATOR)
    services.change_role(personas.principal("ADMIN"), target, Role.OPERATOR)
    target.refresh_from_db()
    assert target.role == Role.OPERATOR
    event = AuditEvent.objects.get(action="member.role_change")
    assert event.changes == {"role": ["VIEWER", "OPERATOR"]}
    assert event.actor == personas.admin
    assert event.target_label == personas.viewer.email
    with pytest.raises(ServiceError, match="Unknown role"):
        services.change_role(personas.principal("ADMIN"), target, "OWNER")


def test_last_admin_can_neither_be_demoted_nor_leave(personas):
    admin = personas.principal("ADMIN")
    own = personas.admin.memberships.get()
    with pytest.raises(Conflict, match="at least one admin"):
        services.change_role(admin, own, Role.MANAGER)
    with pytest.raises(Conflict, match="last admin"):
        services.remove_member(admin, own)
    assert Membership.objects.get(pk=own.pk).role == Role.ADMIN
    # With a second admin, the first may step down, and then the second is the last.
    manager = personas.manager.memberships.get()
    services.change_role(admin, manager, Role.ADMIN)
    services.change_role(admin, own, Role.VIEWER)
    with pytest.raises(Conflict):
        services.change_role(personas.principal("MANAGER"), manager, Role.VIEWER)


def test_members_leave_and_admins_remove(personas):
    operator = personas.operator.memberships.get()
    with pytest.raises(PermissionDenied):
        services.remove_member(personas.principal("MANAGER"), operator)
    services.remove_member(personas.principal("OPERATOR"), operator)  # leaving
    assert not Membership.objects.filter(pk=operator.pk).exists()
    viewer = personas.viewer.memberships.get()
    services.remove_member(personas.principal("ADMIN"), viewer)
    assert list(
        AuditEvent.objects.filter(action__startswith="member.").values_list("action", flat=True)
    ) == ["member.remove", "member.leave"]


def test_a_role_above_ones_own_cannot_be_given(personas):
    services.grant(personas.principal("ADMIN"), "manage", personas.org_a, user=personas.manager)
    manager = personas.principal("MANAGER")
    with pytest.raises(PermissionDenied, match="higher than your own"):
        services.invite(manager, "boss@alpha.test", Role.ADMIN)
    invitation, _ = services.invite(manager, "peer@alpha.test", Role.MANAGER)
    assert invitation.role == Role.MANAGER


# --- invitations -----------------------------------------------------------------------------


def test_invitation_token_is_stored_only_as_a_hash_and_emailed(
    personas, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation, token = services.invite(
            personas.principal("ADMIN"), "Bob@Example.test", "OPERATOR"
        )
    assert token not in invitation.token_hash
    assert not Invitation.objects.filter(token_hash=token).exists()
    assert services.find_invitation(token) == invitation
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["Bob@Example.test"]
    assert f"/invitations/{token}/" in mailoutbox[0].body
    assert "Alpha" in mailoutbox[0].subject


def test_accepting_an_invitation_as_an_existing_user(personas):
    invitation, token = services.invite(
        personas.principal("ADMIN"), personas.outsider.email, "VIEWER"
    )
    membership = services.accept_invitation(token, personas.outsider)
    assert membership.organization == personas.org_a
    assert membership.role == Role.VIEWER
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.ACCEPTED
    assert invitation.accepted_by == personas.outsider
    with pytest.raises(InvitationError, match="already been used"):
        services.accept_invitation(token, personas.outsider)
    actions = set(
        AuditEvent.objects.filter(organization=personas.org_a).values_list("action", flat=True)
    )
    assert {"invitation.create", "invitation.accept", "member.add"} <= actions


def test_invitation_errors(personas):
    admin = personas.principal("ADMIN")
    invitation, token = services.invite(admin, "carol@example.test", "VIEWER")
    carol = make_user("carol@example.test")
    with pytest.raises(InvitationError, match=r"sent to carol@example\.test"):
        services.accept_invitation(token, personas.outsider)
    with pytest.raises(Conflict, match="already has a pending invitation"):
        services.invite(admin, "CAROL@example.test", "OPERATOR")
    with pytest.raises(Conflict, match="already a member"):
        services.invite(admin, personas.viewer.email, "VIEWER")
    with pytest.raises(ServiceError, match="valid email"):
        services.invite(admin, "not an address", "VIEWER")
    with pytest.raises(InvitationError, match="not valid"):
        services.accept_invitation("no-such-token", carol)

    # Expired: refused, and a new invitation may then be sent.
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(InvitationError, match="expired"):
        services.accept_invitation(token, carol)
    again, new_token = services.invite(admin, "carol@example.test", "VIEWER")
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.EXPIRED

    # Resend gives a new link; the old one stops working.
    resent, newest = services.resend_invitation(admin, again)
    assert resent.send_count == 2
    with pytest.raises(InvitationError, match="not valid"):
        services.accept_invitation(new_token, carol)

    # Revoked.
    services.revoke_invitation(admin, resent)
    with pytest.raises(InvitationError, match="revoked"):
        services.accept_invitation(newest, carol)
    with pytest.raises(Conflict):
        services.revoke_invitation(admin, resent)
    assert not Membership.objects.filter(user=carol).exists()


def test_invitation_management_needs_manage(personas):
    invitation, _ = services.invite(personas.principal("ADMIN"), "dan@example.test", "VIEWER")
    for role in (Role.MANAGER, Role.OPERATOR, Role.VIEWER):
        with pytest.raises(PermissionDenied):
            services.invite(personas.principal(role), "erin@example.test", "VIEWER")
        with pytest.raises(PermissionDenied):
            services.revoke_invitation(personas.principal(role), invitation)
        with pytest.raises(PermissionDenied):
            services.resend_invitation(personas.principal(role), invitation)


# --- teams -----------------------------------------------------------------------------------


def test_teams(personas):
    admin = personas.principal("ADMIN")
    members = [personas.operator.memberships.get().pk, personas.viewer.memberships.get().pk]
    team = services.create_team(admin, "On call", description="Pager", members=members)
    assert set(team.members.values_list("user__email", flat=True)) == {
        personas.operator.email,
        personas.viewer.email,
    }
    with pytest.raises(ServiceError, match="already a team named"):
        services.create_team(admin, "ON CALL")
    outsider_membership = personas.outsider.memberships.get().pk
    with pytest.raises(ServiceError, match="must be a member of the organization"):
        services.create_team(admin, "Mixed", members=[outsider_membership])
    with pytest.raises(PermissionDenied):
        services.create_team(personas.principal("MANAGER"), "Managers")
    services.update_team(admin, team, name="Night shift", members=members[:1])
    event = AuditEvent.objects.get(action="team.update")
    assert event.changes["name"] == ["On call", "Night shift"]
    assert event.changes["members"][1] == [personas.operator.email]
    group_id = team.group_id
    services.delete_team(admin, team)
    assert not Team.objects.filter(pk=team.pk).exists()
    assert not Group.objects.filter(pk=group_id).exists()


def test_a_team_grant_lets_a_member_edit_that_team(personas):
    admin = personas.principal("ADMIN")
    other = services.create_team(admin, "Other")
    services.grant(admin, "change", personas.team_a, user=personas.operator)
    services.update_team(personas.principal("OPERATOR"), personas.team_a, description="Ours")
    with pytest.raises(PermissionDenied):
        services.update_team(personas.principal("OPERATOR"), other, description="Theirs")


# --- API keys --------------------------------------------------------------------------------


def test_api_key_secret_is_shown_once_and_stored_hashed(personas):
    key, secret = services.create_api_key(
        personas.principal("OPERATOR"), "ci", scopes=["read", "execute"]
    )
    assert secret.startswith("argus_sk_")
    assert len(secret) >= len("argus_sk_") + 43  # 32 random bytes, base64
    assert key.prefix == secret[: len(key.prefix)]
    assert secret not in (key.key_hash, key.prefix)
    assert key.role == Role.OPERATOR  # the creator's role by default
    assert services.authenticate_api_key(secret) == key
    assert services.authenticate_api_key(secret + "x") is None
    assert services.authenticate_api_key("argus_sk_" + "A" * 43) is None
    event = AuditEvent.objects.get(action="apikey.create")
    assert secret not in str(event.changes) and key.key_hash not in str(event.changes)


def test_api_key_validation(personas):
    operator = personas.principal("OPERATOR")
    with pytest.raises(ServiceError, match="at least one scope"):
        services.create_api_key(operator, "k", scopes=[])
    with pytest.raises(ServiceError, match="Unknown scope"):
        services.create_api_key(operator, "k", scopes=["read", "root"])
    with pytest.raises(ServiceError, match="name"):
        services.create_api_key(operator, " ", scopes=["read"])
    with pytest.raises(PermissionDenied, match="higher than your own"):
        services.create_api_key(operator, "k", scopes=["read"], role=Role.MANAGER)
    with pytest.raises(ServiceError, match="future"):
        services.create_api_key(operator, "k", scopes=["read"], expires_at=timezone.now())
    key, _ = services.create_api_key(operator, "k", scopes=["read"])
    with pytest.raises(PermissionDenied, match="not possible with an API key"):
        services.create_api_key(Principal.for_api_key(key), "minted", scopes=["read"])
    assert ApiKey.objects.count() == 1


def test_api_key_acts_with_the_intersection_of_scopes_cap_and_creator(personas):
    manager = personas.principal("MANAGER")
    key, _ = services.create_api_key(manager, "k", scopes=["read", "write"], role=Role.OPERATOR)
    principal = Principal.for_api_key(key)
    assert principal.role == Role.OPERATOR  # capped below the creator's MANAGER
    assert can(principal, "view", personas.org_a)
    assert not can(principal, "operate", personas.org_a)  # no execute scope
    assert not can(principal, "change", personas.org_a)
    # The creator is demoted below the cap: the key follows at once.
    services.change_role(
        personas.principal("ADMIN"), personas.manager.memberships.get(), Role.VIEWER
    )
    assert Principal.for_api_key(key).role == Role.VIEWER
    # The creator leaves: no rights at all.
    services.remove_member(personas.principal("ADMIN"), personas.manager.memberships.get())
    gone = Principal.for_api_key(key)
    assert not gone.is_member
    assert not can(gone, "view", personas.org_a)
    # A deactivated creator: nothing either.
    key2, _ = services.create_api_key(personas.principal("OPERATOR"), "k2", scopes=["read"])
    personas.operator.is_active = False
    personas.operator.save()
    assert not Principal.for_api_key(key2).is_member


def test_expired_revoked_and_rotated_keys(personas):
    operator = personas.principal("OPERATOR")
    key, secret = services.create_api_key(
        operator, "k", scopes=["read"], expires_at=timezone.now() + timedelta(hours=1)
    )
    assert services.authenticate_api_key(secret) == key
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.authenticate_api_key(secret) is None
    with pytest.raises(Conflict):
        services.rotate_api_key(operator, ApiKey.objects.get(pk=key.pk))

    key, old = services.create_api_key(operator, "rotating", scopes=["read"])
    key, new = services.rotate_api_key(operator, key, grace=timedelta(minutes=5))
    assert services.authenticate_api_key(old) == key
    assert services.authenticate_api_key(new) == key
    ApiKey.objects.filter(pk=key.pk).update(previous_valid_until=timezone.now())
    assert services.authenticate_api_key(old) is None
    assert services.authenticate_api_key(new) == key
    key, newest = services.rotate_api_key(operator, ApiKey.objects.get(pk=key.pk))
    assert services.authenticate_api_key(new) is None  # no grace: the old one stops now
    with pytest.raises(ServiceError, match="between 0 and 30 days"):
        services.rotate_api_key(operator, key, grace=timedelta(days=31))

    services.revoke_api_key(operator, key)
    assert services.authenticate_api_key(newest) is None
    with pytest.raises(Conflict, match="already revoked"):
        services.revoke_api_key(operator, key)
    assert [
        event.action
        for event in AuditEvent.objects.filter(action__startswith="apikey.").order_by("seq")
    ] == ["apikey.create", "apikey.create", "apikey.rotate", "apikey.rotate", "apikey.revoke"]


def test_keys_are_managed_by_their_owner_or_an_admin(personas):
    key, _ = services.create_api_key(personas.principal("OPERATOR"), "mine", scopes=["read"])
    with pytest.raises(PermissionDenied):
        services.revoke_api_key(personas.principal("MANAGER"), key)
    assert ApiKey.objects.for_user(personas.principal("OPERATOR"), "view").get() == key
    assert not ApiKey.objects.for_user(personas.principal("VIEWER"), "view").exists()
    services.revoke_api_key(personas.principal("ADMIN"), key)


def test_a_secret_made_under_an_old_secret_key_still_works_while_it_is_a_fallback(
    personas, settings
):
    key, secret = services.create_api_key(personas.principal("OPERATOR"), "k", scopes=["read"])
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + "y" * 40
    assert services.authenticate_api_key(secret) is None
    settings.SECRET_KEY_FALLBACKS = [old]
    assert services.authenticate_api_key(secret) == key


# --- audit -----------------------------------------------------------------------------------


def test_audit_chain_links_every_event(personas):
    admin = personas.principal(
        "ADMIN", ip="10.0.0.1", user_agent="pytest", request_id="req-12345678"
    )
    team = services.create_team(admin, "A")
    services.update_team(admin, team, name="B")
    services.delete_team(admin, team)
    events = list(AuditEvent.objects.filter(organization=personas.org_a).order_by("seq"))
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    last = events[-1]
    assert (last.ip, last.user_agent, last.request_id, last.channel) == (
        "10.0.0.1",
        "pytest",
        "req-12345678",
        "console",
    )
    assert audit.verify(personas.org_a) == []


def test_audit_verify_finds_edits_and_deletions(personas):
    admin = personas.principal("ADMIN")
    for name in "ABCD":
        services.create_team(admin, name)
    events = list(AuditEvent.objects.filter(organization=personas.org_a).order_by("seq"))
    AuditEvent.objects.filter(pk=events[1].pk).update(target_label="forged")
    broken = audit.verify(personas.org_a)
    assert [(b.seq, b.reason) for b in broken] == [(2, "its content does not match its hash")]
    AuditEvent.objects.filter(pk=events[1].pk).update(target_label=events[1].target_label)
    assert audit.verify(personas.org_a) == []
    AuditEvent.objects.filter(pk=events[2].pk).delete()
    assert audit.verify(personas.org_a)[0].seq == 3
    # Other organizations' chains are unaffected.
    services.create_team(personas.principal("outsider"), "Bravo")
    assert audit.verify(personas.org_b) == []


def test_failed_login_for_an_unknown_address_goes_to_the_installation_chain(client, personas):
    client.post("/accounts/login/", {"login": "nobody@nowhere.test", "password": "x" * 12})
    event = AuditEvent.objects.get(action="account.login_failed")
    assert event.organization_id is None
    assert event.target_label == "nobody@nowhere.test"
    client.post("/accounts/login/", {"login": personas.viewer.email, "password": "wrong" * 3})
    assert AuditEvent.objects.filter(
        action="account.login_failed", organization=personas.org_a, actor=personas.viewer
    ).exists()
    assert audit.verify() == []


def test_one_bad_row_does_not_hide_another(personas):
    admin = personas.principal("ADMIN")
    for name in "ABCDE":
        services.create_team(admin, name)
    events = list(AuditEvent.objects.filter(organization=personas.org_a).order_by("seq"))
    AuditEvent.objects.filter(pk=events[1].pk).update(target_label="first forgery")
    AuditEvent.objects.filter(pk=events[3].pk).update(target_label="second forgery")
    assert [(b.seq, b.reason) for b in audit.verify(personas.org_a)] == [
        (2, "its content does not match its hash"),
        (4, "its content does not match its hash"),
    ]


def test_ipv4_mapped_addresses_do_not_break_the_chain(client, personas):
    client.post(
        "/accounts/login/",
        {"login": personas.viewer.email, "password": "wrong" * 3},
        REMOTE_ADDR="::ffff:1.2.3.4",
    )
    event = AuditEvent.objects.get(action="account.login_failed")
    assert event.ip == "::ffff:1.2.3.4"
    assert audit.verify() == []


# --- escalation paths closed after review ---------------------------------------------------------


def test_only_the_creator_rotates_a_key(personas):
    key, _ = services.create_api_key(personas.principal("ADMIN"), "admin's", scopes=["admin"])
    services.grant(personas.principal("ADMIN"), "manage", personas.org_a, user=personas.manager)
    manager = personas.principal("MANAGER")
    assert can(manager, "change", key)  # may see and revoke it…
    with pytest.raises(PermissionDenied, match="Only the key's creator can rotate it"):
        services.rotate_api_key(manager, key, grace=timedelta(hours=1))  # …not take it over
    services.revoke_api_key(manager, key)


def test_a_team_lead_renames_but_does_not_staff_the_team(personas):
    admin = personas.principal("ADMIN")
    services.grant(admin, "manage", personas.org_a, team=personas.team_a)
    services.grant(admin, "change", personas.team_a, user=personas.operator)
    lead = personas.principal("OPERATOR")
    services.update_team(lead, personas.team_a, description="We read")
    with pytest.raises(PermissionDenied, match="Only admins can change who is in a team"):
        services.update_team(
            lead, personas.team_a, members=[personas.operator.memberships.get().pk]
        )
    assert not can(personas.principal("OPERATOR"), "manage", personas.org_a)


def test_grants_never_let_a_non_admin_change_roles_or_remove_members(personas):
    services.grant(personas.principal("ADMIN"), "manage", personas.org_a, user=personas.manager)
    manager = personas.principal("MANAGER")
    admin_membership = personas.admin.memberships.get()
    with pytest.raises(PermissionDenied, match="Only an admin"):
        services.change_role(manager, personas.viewer.memberships.get(), Role.OPERATOR)
    with pytest.raises(PermissionDenied, match="Only an admin"):
        services.remove_member(manager, admin_membership)
    assert Membership.objects.get(pk=admin_membership.pk).role == Role.ADMIN


def test_a_key_never_leaves_the_organization_for_its_creator(personas):
    key, _ = services.create_api_key(personas.principal("OPERATOR"), "k", scopes=["admin"])
    with pytest.raises(PermissionDenied, match="not possible with an API key"):
        services.remove_member(Principal.for_api_key(key), personas.operator.memberships.get())
    assert personas.operator.memberships.exists()


def test_grants_do_not_lift_a_keys_role_cap(personas):
    services.grant(personas.principal("ADMIN"), "manage", personas.org_a, user=personas.manager)
    key, _ = services.create_api_key(
        personas.principal("MANAGER"), "capped", scopes=["admin"], role=Role.VIEWER
    )
    capped = Principal.for_api_key(key)
    assert not can(capped, "manage", personas.org_a)
    with pytest.raises(PermissionDenied):
        services.invite(capped, "someone@example.test", Role.VIEWER)
    assert can(personas.principal("MANAGER"), "manage", personas.org_a)  # the person still may


def test_removal_revokes_keys_and_drops_grants_for_good(personas):
    admin = personas.principal("ADMIN")
    _key, secret = services.create_api_key(personas.principal("OPERATOR"), "k", scopes=["read"])
    services.grant(admin, "manage", personas.org_a, user=personas.operator)
    services.grant(admin, "change", personas.team_a, user=personas.operator)
    services.remove_member(admin, personas.operator.memberships.get())
    assert services.authenticate_api_key(secret) is None
    assert services.grants_on(personas.org_a) == []
    assert services.grants_on(personas.team_a) == []
    actions = list(
        AuditEvent.objects.filter(organization=personas.org_a)
        .order_by("-seq")
        .values_list("action", flat=True)[:4]
    )
    assert sorted(actions) == ["apikey.revoke", "grant.delete", "grant.delete", "member.remove"]
    # Rejoining starts from nothing.
    services.add_member(Principal.system(personas.org_a), personas.operator, Role.VIEWER)
    rejoined = Principal.member(personas.operator, personas.org_a)
    assert not can(rejoined, "manage", personas.org_a)
    assert services.authenticate_api_key(secret) is None


def test_resending_an_old_invitation_respects_the_newer_one_and_the_limit(personas):
    admin = personas.principal("ADMIN")
    old, _ = services.invite(admin, "late@example.test", Role.VIEWER)
    Invitation.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    newer, _ = services.invite(admin, "late@example.test", Role.VIEWER)
    with pytest.raises(Conflict, match="newer pending invitation"):
        services.resend_invitation(admin, old)
    services.revoke_invitation(admin, newer)
    personas.org_a.plan = Plan.FREE
    personas.org_a.save()
    services.invite(admin, "fill@example.test", Role.VIEWER)  # 4 members + 1 pending = 5
    with pytest.raises(LimitExceeded, match="at most 5 members"):
        services.resend_invitation(admin, old)
    Invitation.objects.filter(email="fill@example.test").update(status=InvitationStatus.REVOKED)
    resent, _ = services.resend_invitation(admin, old)
    assert resent.effective_status == InvitationStatus.PENDING


def test_a_key_made_under_a_fallback_secret_key_is_rehashed_on_use(personas, settings):
    key, secret = services.create_api_key(personas.principal("OPERATOR"), "k", scopes=["read"])
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-rotated-secret-key-" + "z" * 40
    assert services.authenticate_api_key(secret) == key
    settings.SECRET_KEY_FALLBACKS = []
    assert services.authenticate_api_key(secret) == key  # survives the fallback's removal


def test_organization_names_and_slugs_have_limits(member):
    with pytest.raises(OrganizationError, match="At most 100 characters"):
        create_organization("x" * 101, owner=member)
    with pytest.raises(OrganizationError, match="longer than 50 characters"):
        create_organization("y" * 60, owner=member)
    assert create_organization("z" * 60, owner=member, slug="zed").slug == "zed"


def test_failed_logins_of_unknown_addresses_say_where_they_came_from(client, db):
    client.post(
        "/accounts/login/",
        {"login": "ghost@nowhere.test", "password": "x" * 12},
        REMOTE_ADDR="198.51.100.7",
        HTTP_USER_AGENT="brute/1.0",
    )
    event = AuditEvent.objects.get(action="account.login_failed")
    assert (event.ip, event.user_agent, event.organization_id) == (
        "198.51.100.7",
        "brute/1.0",
        None,
    )
    assert event.request_id
