"""Settings pages of the console: organization, members, invitations, teams, keys, audit."""

import csv
import io
import json
import re

import pytest
from django.test import Client

from orgs import services
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Team
from tests.support.personas import make_user


@pytest.fixture
def as_admin(client, personas):
    client.force_login(personas.admin)
    return client


def test_organization_settings(as_admin, client, personas):
    page = as_admin.get("/settings/")
    html = page.content.decode()
    assert 'data-limit="members"' in html and "Save settings" in html
    saved = as_admin.post(
        "/settings/",
        {
            "name": "Alpha Two",
            "four_eyes_approval": "",
            "retention_days": "30",
            "record_raw_arguments": "on",
            "redaction_keys": "customer_id\nssn",
        },
    )
    assert saved.status_code == 302
    personas.org_a.refresh_from_db()
    assert personas.org_a.name == "Alpha Two"
    assert personas.org_a.redaction_keys == ["customer_id", "ssn"]
    assert not personas.org_a.four_eyes_approval
    assert AuditEvent.objects.filter(action="organization.update").count() == 1
    refused = as_admin.post(
        "/settings/", {"name": "Alpha Two", "retention_days": "400", "redaction_keys": "a b"}
    )
    assert refused.status_code == 200
    assert "not a key name" in refused.content.decode() or "at most 90 days" in (
        refused.content.decode()
    )
    personas.org_a.refresh_from_db()
    assert personas.org_a.retention_days == 30

    client.force_login(personas.viewer)
    read_only = client.get("/settings/").content.decode()
    assert "Save settings" not in read_only and "Only admins can change" in read_only
    client.post("/settings/", {"name": "Hijacked"})
    personas.org_a.refresh_from_db()
    assert personas.org_a.name == "Alpha Two"


def test_members_page_and_role_changes(as_admin, client, personas):
    html = as_admin.get("/settings/members/").content.decode()
    for email in (personas.admin.email, personas.viewer.email):
        assert email in html
    assert personas.outsider.email not in html
    viewer = personas.viewer.memberships.get()
    response = as_admin.post(f"/settings/members/{viewer.pk}/role/", {"role": "OPERATOR"})
    assert response.status_code == 302
    assert Membership.objects.get(pk=viewer.pk).role == "OPERATOR"
    own = personas.admin.memberships.get()
    followed = as_admin.post(f"/settings/members/{own.pk}/role/", {"role": "VIEWER"}, follow=True)
    assert "at least one admin" in followed.content.decode()
    assert Membership.objects.get(pk=own.pk).role == "ADMIN"
    foreign = personas.outsider.memberships.get()
    assert (
        as_admin.post(f"/settings/members/{foreign.pk}/role/", {"role": "VIEWER"}).status_code
        == 404
    )

    client.force_login(personas.manager)
    html = client.get("/settings/members/").content.decode()
    assert "Change role" not in html
    assert client.post(f"/settings/members/{viewer.pk}/role/", {"role": "ADMIN"}).status_code == 403
    assert client.post(f"/settings/members/{viewer.pk}/remove/").status_code == 403


def test_members_filter_and_htmx_fragment(as_admin, personas):
    html = as_admin.get("/settings/members/?role=VIEWER").content.decode()
    assert personas.viewer.email in html and personas.manager.email not in html
    fragment = as_admin.get("/settings/members/?q=manager", HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="member-table">')
    assert "<html" not in body and personas.manager.email in body


def test_leaving_an_organization(client, personas):
    client.force_login(personas.operator)
    own = personas.operator.memberships.get()
    response = client.post(f"/settings/members/{own.pk}/remove/")
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=own.pk).exists()
    assert client.get("/settings/members/").status_code == 403  # no organization left


def test_invitation_link_is_shown_once_and_accepted(as_admin, client, personas, settings):
    page = as_admin.post(
        "/settings/invitations/new/", {"email": "zoe@example.test", "role": "OPERATOR"}
    )
    assert page.status_code == 200
    url = re.search(r'value="(https?://[^"]+/invitations/[^"]+/)"', page.content.decode()).group(1)
    assert url.startswith(settings.ARGUS_PUBLIC_URL)
    path = re.search(r"/invitations/[^/]+/$", url).group(0)
    assert path.split("/")[2] not in as_admin.get("/settings/invitations/").content.decode()
    duplicate = as_admin.post(
        "/settings/invitations/new/", {"email": "ZOE@example.test", "role": "VIEWER"}
    )
    assert "already has a pending invitation" in duplicate.content.decode()
    assert Invitation.objects.count() == 1

    zoe = make_user("zoe@example.test")
    client.force_login(personas.outsider)
    wrong = client.post(path)
    assert wrong.status_code == 400
    assert "sent to zoe@example.test" in wrong.content.decode()
    client.force_login(zoe)
    assert "Accept and join" in client.get(path).content.decode()
    joined = client.post(path)
    assert joined.status_code == 302
    assert Membership.objects.get(user=zoe).role == "OPERATOR"
    assert client.get("/").context["current_organization"] == personas.org_a
    reused = client.get(path)
    assert reused.status_code == 400
    assert "already been used" in reused.content.decode()


def test_invitation_resend_and_revoke(as_admin, personas):
    invitation, _token = services.invite(personas.principal("ADMIN"), "yan@example.test", "VIEWER")
    resent = as_admin.post(f"/settings/invitations/{invitation.pk}/resend/")
    assert "The previous link no longer works" in resent.content.decode()
    as_admin.post(f"/settings/invitations/{invitation.pk}/revoke/")
    assert Invitation.objects.get(pk=invitation.pk).status == "REVOKED"
    revoked_again = as_admin.post(f"/settings/invitations/{invitation.pk}/revoke/", follow=True)
    assert "Only a pending invitation can be revoked" in revoked_again.content.decode()


def test_invitations_are_for_admins(client, personas):
    client.force_login(personas.manager)
    assert client.get("/settings/invitations/").status_code == 403
    assert (
        client.post(
            "/settings/invitations/new/", {"email": "a@b.test", "role": "VIEWER"}
        ).status_code
        == 403
    )
    assert not Invitation.objects.exists()


def test_teams_pages(as_admin, personas):
    viewer = personas.viewer.memberships.get()
    foreign = personas.outsider.memberships.get()
    form = as_admin.get("/settings/teams/new/").content.decode()
    assert personas.viewer.email in form and personas.outsider.email not in form  # narrowed
    refused = as_admin.post("/settings/teams/new/", {"name": "Ops", "members": [foreign.pk]})
    assert refused.status_code == 200 and not Team.objects.filter(name="Ops").exists()
    created = as_admin.post("/settings/teams/new/", {"name": "Ops", "members": [viewer.pk]})
    assert created.status_code == 302
    team = Team.objects.get(name="Ops")
    clash = as_admin.post(f"/settings/teams/{team.pk}/", {"name": "readers"})
    assert "already a team named" in clash.content.decode()
    as_admin.post(f"/settings/teams/{team.pk}/", {"name": "Ops 2", "description": "x"})
    assert Team.objects.get(pk=team.pk).name == "Ops 2"
    as_admin.post(f"/settings/teams/{team.pk}/delete/")
    assert not Team.objects.filter(pk=team.pk).exists()
    assert as_admin.get(f"/settings/teams/{personas.team_b.pk}/").status_code == 404


def test_api_key_pages(client, personas):
    client.force_login(personas.operator)
    form = client.get("/settings/api-keys/new/").content.decode()
    assert 'value="ADMIN"' not in form  # the role cap offers only roles up to yours
    shown = client.post(
        "/settings/api-keys/new/", {"name": "ci", "scopes": ["read", "execute"], "role": "OPERATOR"}
    )
    secret = re.search(r'value="(argus_sk_[^"]+)"', shown.content.decode()).group(1)
    key = ApiKey.objects.get()
    listing = client.get("/settings/api-keys/").content.decode()
    assert key.prefix in listing and secret not in listing
    bad = client.post("/settings/api-keys/new/", {"name": "", "role": "ADMIN"})
    assert bad.status_code == 200 and ApiKey.objects.count() == 1
    rotated = client.post(f"/settings/api-keys/{key.pk}/rotate/", {"grace_minutes": "10"})
    new_secret = re.search(r'value="(argus_sk_[^"]+)"', rotated.content.decode()).group(1)
    assert new_secret != secret
    assert services.authenticate_api_key(secret) == key
    client.post(f"/settings/api-keys/{key.pk}/revoke/")
    assert services.authenticate_api_key(new_secret) is None
    client.force_login(personas.viewer)
    assert client.post(f"/settings/api-keys/{key.pk}/revoke/").status_code == 404


def test_audit_page_and_exports(as_admin, client, personas):
    admin = personas.principal("ADMIN")
    services.create_team(admin, "Exported")
    services.change_role(admin, personas.viewer.memberships.get(), "OPERATOR")
    page = as_admin.get("/settings/audit/?action=team.").content.decode()
    assert "team.create" in page and "member.role_change" not in page

    exported = as_admin.get("/settings/audit/export/?format=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert exported["Content-Disposition"].startswith('attachment; filename="argus-audit-alpha-')
    assert {"team.create", "member.role_change"} <= {row["action"] for row in rows}
    lines = b"".join(
        as_admin.get("/settings/audit/export/?format=jsonl&action=member.").streaming_content
    )
    records = [json.loads(line) for line in lines.decode().splitlines()]
    assert [record["action"] for record in records] == ["member.role_change"]
    exports = AuditEvent.objects.filter(action="audit.export")
    assert exports.count() == 2
    assert exports.order_by("seq").last().changes["filters"][1] == {"action": "member."}
    assert as_admin.get("/settings/audit/export/?format=xml").status_code == 400

    client.force_login(personas.manager)
    assert client.get("/settings/audit/").status_code == 403
    assert client.get("/settings/audit/export/?format=csv").status_code == 403


def test_organization_switcher(client, personas):
    Membership.objects.create(user=personas.viewer, organization=personas.org_b, role="OPERATOR")
    client.force_login(personas.viewer)
    html = client.get("/").content.decode()
    assert 'class="org-switcher"' in html and "Bravo" in html
    client.post("/organizations/switch/", {"organization": personas.org_b.pk})
    assert client.get("/settings/members/").context["current_organization"] == personas.org_b
    other = make_user("lonely@nowhere.test")
    client.force_login(other)
    followed = client.post(
        "/organizations/switch/", {"organization": personas.org_a.pk}, follow=True
    )
    assert "not a member" in followed.content.decode()
    assert client.get("/settings/").status_code == 403


def test_profile(client, personas):
    client.force_login(personas.viewer)
    page = client.get("/profile/").content.decode()
    assert "Set up two-factor authentication" in page
    client.post("/profile/", {"name": "Vic"})
    personas.viewer.refresh_from_db()
    assert personas.viewer.name == "Vic"
    assert AuditEvent.objects.filter(
        action="account.profile_update", organization=personas.org_a
    ).exists()


def test_access_pages_grant_and_revoke(personas):
    as_admin, client = Client(), Client()
    as_admin.force_login(personas.admin)
    page = as_admin.get("/settings/access/").content.decode()
    assert "No grants" in page and personas.outsider.email not in page
    added = as_admin.post(
        "/settings/access/", {"action": "manage", "holder": f"user:{personas.manager.pk}"}
    )
    assert added.status_code == 302
    client.force_login(personas.manager)
    assert client.get("/settings/audit/").status_code == 200  # manage granted
    again = as_admin.post(
        "/settings/access/", {"action": "manage", "holder": f"user:{personas.manager.pk}"}
    )
    assert again.status_code == 409
    assert "may already manage" in again.content.decode()
    foreign = as_admin.post(
        "/settings/access/", {"action": "view", "holder": f"user:{personas.outsider.pk}"}
    )
    assert foreign.status_code == 400  # not a choice: choices are narrowed to members
    as_admin.post(
        "/settings/access/",
        {"action": "manage", "holder": f"user:{personas.manager.pk}", "revoke": "1"},
    )
    assert client.get("/settings/audit/").status_code == 403
    assert [event.action for event in AuditEvent.objects.filter(action__startswith="grant.")] == [
        "grant.delete",
        "grant.create",
    ]

    team = personas.team_a
    as_admin.post(
        f"/settings/teams/{team.pk}/access/",
        {"action": "change", "holder": f"user:{personas.operator.pk}"},
    )
    client.force_login(personas.operator)
    assert client.get(f"/settings/teams/{team.pk}/access/").status_code == 403
    assert client.post(f"/settings/teams/{team.pk}/", {"name": "Readers+"}).status_code == 302
    assert Team.objects.get(pk=team.pk).name == "Readers+"
    refused = client.post(
        "/settings/access/", {"action": "manage", "holder": f"user:{personas.operator.pk}"}
    )
    assert refused.status_code == 403
    assert as_admin.get(f"/settings/teams/{personas.team_b.pk}/access/").status_code == 404


def test_bad_audit_filters_show_errors_not_everything(as_admin, personas):
    services.create_team(personas.principal("ADMIN"), "Anything")
    page = as_admin.get("/settings/audit/?since=yesterday").content.decode()
    assert "Enter a valid date/time." in page
    assert "team.create" not in page


def test_csv_export_neutralizes_formulas(as_admin, personas):
    services.create_team(personas.principal("ADMIN"), "=HYPERLINK(evil)")
    exported = as_admin.get("/settings/audit/export/?format=csv&action=team.create")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0]["target_label"] == "'=HYPERLINK(evil)"
    lines = b"".join(as_admin.get("/settings/audit/export/?format=jsonl").streaming_content)
    assert '"target_label": "=HYPERLINK(evil)"' in lines.decode()
