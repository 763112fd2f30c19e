"""The orgs REST API: API key authentication, scopes, throttling, errors, audit, lists."""

import threading
import urllib.request
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from orgs import services
from orgs.models import ApiKey, AuditEvent, Membership
from tests.support.personas import make_user


def bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def admin_key(personas):
    return services.create_api_key(
        personas.principal("ADMIN"), "admin", scopes=["read", "write", "execute", "admin"]
    )


def test_me_with_a_key_and_with_a_session(client, personas):
    key, secret = services.create_api_key(
        personas.principal("MANAGER"), "k", scopes=["read", "execute"], role="OPERATOR"
    )
    body = client.get("/api/v1/me/", HTTP_X_API_KEY=secret).json()
    assert body["email"] == personas.manager.email
    assert body["organization"]["slug"] == "alpha"
    assert body["role"] == "OPERATOR"
    assert body["actions"] == ["view", "operate"]
    assert body["authentication"] == "api_key"
    assert body["api_key"]["prefix"] == key.prefix
    assert "key_hash" not in body["api_key"]

    client.force_login(personas.manager)
    body = client.get("/api/v1/me/").json()
    assert body["authentication"] == "session"
    assert body["role"] == "MANAGER"
    assert body["actions"] == ["view", "operate", "change", "approve"]


def test_bad_keys_get_the_same_401(client, personas):
    key, secret = services.create_api_key(personas.principal("OPERATOR"), "k", scopes=["read"])
    expired, expired_secret = services.create_api_key(
        personas.principal("OPERATOR"),
        "old",
        scopes=["read"],
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    revoked, revoked_secret = services.create_api_key(
        personas.principal("OPERATOR"), "gone", scopes=["read"]
    )
    services.revoke_api_key(personas.principal("OPERATOR"), revoked)
    answers = [
        client.get("/api/v1/me/", **bearer(secret[:-1] + "x")),
        client.get("/api/v1/me/", **bearer(expired_secret)),
        client.get("/api/v1/me/", **bearer(revoked_secret)),
        client.get("/api/v1/me/", **bearer("not-a-key")),
        client.get("/api/v1/me/", HTTP_X_API_KEY="argus_sk_nope"),
    ]
    for response in answers:
        assert response.status_code == 401
        assert response.json() == {
            "detail": "Invalid, expired or revoked API key.",
            "code": "authentication_failed",
            "errors": {},
        }
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/me/", **bearer(secret)).status_code == 200
    assert ApiKey.objects.get(pk=key.pk).use_count == 1


def test_scopes_limit_what_a_key_does(client, personas):
    _key, read_only = services.create_api_key(personas.principal("ADMIN"), "r", scopes=["read"])
    refused = client.post(
        "/api/v1/teams/", {"name": "Ops"}, content_type="application/json", **bearer(read_only)
    )
    assert refused.status_code == 403
    assert refused.json()["detail"] == "This API key's scopes do not allow 'manage'."
    assert client.get("/api/v1/audit/", **bearer(read_only)).json()["results"] == []
    # Teams are organization management: ``write`` is not enough, ``admin`` is.
    _key, writer = services.create_api_key(personas.principal("ADMIN"), "w", scopes=["write"])
    assert (
        client.post(
            "/api/v1/teams/", {"name": "Ops"}, content_type="application/json", **bearer(writer)
        ).status_code
        == 403
    )
    _key, manager = services.create_api_key(personas.principal("ADMIN"), "a", scopes=["admin"])
    created = client.post(
        "/api/v1/teams/", {"name": "Ops"}, content_type="application/json", **bearer(manager)
    )
    assert created.status_code == 201, created.content
    event = AuditEvent.objects.get(action="team.create")
    assert event.channel == "api"
    assert event.api_key_id == _key.pk
    assert event.actor == personas.admin


def test_a_demoted_creators_key_loses_rights_at_once(client, personas):
    _key, secret = services.create_api_key(
        personas.principal("MANAGER"), "k", scopes=["read", "write"]
    )
    membership = personas.manager.memberships.get()
    services.change_role(personas.principal("ADMIN"), membership, "VIEWER")
    assert client.get("/api/v1/members/", **bearer(secret)).status_code == 200
    # A key whose creator lost their membership some other way acts for nobody.
    membership.delete()
    response = client.get("/api/v1/members/", **bearer(secret))
    assert response.status_code == 403
    assert "no longer a member" in response.json()["detail"]
    # Removal through the service revokes the creator's keys outright.
    Membership.objects.create(user=personas.manager, organization=personas.org_a, role="VIEWER")
    services.remove_member(personas.principal("ADMIN"), personas.manager.memberships.get())
    assert client.get("/api/v1/members/", **bearer(secret)).status_code == 401


def test_key_management_is_session_only(client, personas, admin_key):
    _key, secret = admin_key
    for method, url in [
        ("get", "/api/v1/api-keys/"),
        ("post", "/api/v1/api-keys/"),
        ("post", f"/api/v1/api-keys/{_key.pk}/revoke/"),
        ("post", f"/api/v1/api-keys/{_key.pk}/rotate/"),
    ]:
        response = getattr(client, method)(url, **bearer(secret))
        assert response.status_code == 403, url
    assert ApiKey.objects.get(pk=_key.pk).is_active


def test_key_lifecycle_through_the_api_with_a_session(client, personas):
    client.force_login(personas.viewer)
    created = client.post(
        "/api/v1/api-keys/",
        {"name": "laptop", "scopes": ["read"]},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    secret = body["secret"]
    assert secret.startswith(body["prefix"])
    assert body["role"] == "VIEWER"
    listed = client.get("/api/v1/api-keys/").content.decode()
    assert secret not in listed and ApiKey.objects.get().key_hash not in listed
    too_high = client.post(
        "/api/v1/api-keys/",
        {"name": "x", "scopes": ["read"], "role": "ADMIN"},
        content_type="application/json",
    )
    assert too_high.status_code == 403
    bad = client.post(
        "/api/v1/api-keys/", {"name": "", "scopes": ["root"]}, content_type="application/json"
    )
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"name", "scopes"}

    rotated = client.post(
        f"/api/v1/api-keys/{body['id']}/rotate/",
        {"grace_seconds": 60},
        content_type="application/json",
    ).json()
    assert rotated["secret"] != secret
    client.logout()
    assert client.get("/api/v1/me/", **bearer(secret)).status_code == 200  # grace
    assert client.get("/api/v1/me/", **bearer(rotated["secret"])).status_code == 200
    client.force_login(personas.viewer)
    assert client.post(f"/api/v1/api-keys/{body['id']}/revoke/").json()["status"] == "revoked"
    client.logout()
    assert client.get("/api/v1/me/", **bearer(rotated["secret"])).status_code == 401


def test_throttling_per_key(client, personas, settings):
    settings.ARGUS_API_KEY_RATE = "3/min"
    _key, secret = services.create_api_key(personas.principal("VIEWER"), "k", scopes=["read"])
    _other, other_secret = services.create_api_key(
        personas.principal("VIEWER"), "k2", scopes=["read"]
    )
    codes = [client.get("/api/v1/me/", **bearer(secret)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/me/", **bearer(secret))
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) > 0
    assert "throttled" in limited.json()["detail"].lower()
    assert client.get("/api/v1/me/", **bearer(other_secret)).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_use_is_counted_exactly(live_server, settings):
    from tests.support.personas import make_personas

    settings.ARGUS_API_KEY_RATE = "10000/min"
    personas = make_personas()
    key, secret = services.create_api_key(personas.principal("VIEWER"), "k", scopes=["read"])
    per_thread, threads = 5, 8
    failures = []

    def hammer():
        for _ in range(per_thread):
            request = urllib.request.Request(  # noqa: S310 - the live test server
                f"{live_server.url}/api/v1/me/", headers={"X-API-Key": secret}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    if response.status != 200:
                        failures.append(response.status)
            except Exception as exc:  # collected and asserted below
                failures.append(repr(exc))

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert failures == []
    key.refresh_from_db()
    assert key.use_count == per_thread * threads
    assert key.last_used_at is not None


def test_errors_have_one_shape(client, personas):
    client.force_login(personas.admin)
    own = personas.admin.memberships.get()
    last_admin = client.patch(
        f"/api/v1/members/{own.pk}/", {"role": "VIEWER"}, content_type="application/json"
    )
    assert last_admin.status_code == 409
    assert "at least one admin" in last_admin.json()["detail"]
    assert last_admin.json()["errors"] == {"role": [last_admin.json()["detail"]]}
    bad_role = client.patch(
        f"/api/v1/members/{own.pk}/", {"role": "OWNER"}, content_type="application/json"
    )
    assert bad_role.status_code == 400
    assert "role" in bad_role.json()["errors"]
    duplicate = client.post(
        "/api/v1/invitations/",
        {"email": personas.viewer.email, "role": "VIEWER"},
        content_type="application/json",
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["errors"] == {"email": [duplicate.json()["detail"]]}
    not_json = client.post("/api/v1/teams/", "name=x", content_type="text/plain")
    assert not_json.status_code == 415
    assert not_json.json()["detail"]
    assert client.get("/api/v1/teams/999999/").json() == {
        "detail": "Not found.",
        "code": "not_found",
        "errors": {},
    }


def test_invitation_endpoints(client, personas):
    client.force_login(personas.admin)
    created = client.post(
        "/api/v1/invitations/",
        {"email": "new@example.test", "role": "OPERATOR"},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "PENDING"
    token = body["accept_url"].rstrip("/").rsplit("/", 1)[1]
    assert services.find_invitation(token).pk == body["id"]
    assert "accept_url" not in client.get(f"/api/v1/invitations/{body['id']}/").json()
    resent = client.post(f"/api/v1/invitations/{body['id']}/resend/").json()
    assert resent["send_count"] == 2 and resent["accept_url"] != body["accept_url"]
    revoked = client.post(f"/api/v1/invitations/{body['id']}/revoke/")
    assert revoked.json()["status"] == "REVOKED"
    again = client.post(f"/api/v1/invitations/{body['id']}/revoke/")
    assert again.status_code == 409
    pending = client.get("/api/v1/invitations/?status=PENDING").json()
    assert pending["count"] == 0


def test_audit_endpoint_filters_and_cursor_pages(client, personas):
    admin = personas.principal("ADMIN")
    for index in range(7):
        services.create_team(admin, f"T{index}")
    services.change_role(admin, personas.viewer.memberships.get(), "OPERATOR")
    client.force_login(personas.admin)
    page = client.get("/api/v1/audit/?page_size=3").json()
    assert "count" not in page
    assert len(page["results"]) == 3
    seqs = [row["seq"] for row in page["results"]]
    assert seqs == sorted(seqs, reverse=True)
    second = client.get(page["next"]).json()
    assert second["results"][0]["seq"] == seqs[-1] - 1
    assert {
        row["action"] for row in client.get("/api/v1/audit/?action=team.").json()["results"]
    } == {"team.create"}
    roles = client.get("/api/v1/audit/?action=member.role_change").json()["results"]
    assert [row["target_label"] for row in roles] == [personas.viewer.email]
    by_actor = client.get(f"/api/v1/audit/?actor={personas.admin.email}").json()["results"]
    assert by_actor and all(row["actor_label"] == personas.admin.email for row in by_actor)
    future = (timezone.now() + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert client.get("/api/v1/audit/", {"since": future}).json()["results"] == []
    bad = client.get("/api/v1/audit/?since=yesterday")
    assert bad.status_code == 400
    assert "since" in bad.json()["errors"]


def _add_members(organization, count, start):
    for index in range(start, start + count):
        user = make_user(f"bulk{index}@{organization.slug}.test")
        Membership.objects.create(user=user, organization=organization, role="VIEWER")


@pytest.mark.parametrize(
    "url", ["/api/v1/members/", "/api/v1/audit/", "/settings/members/", "/settings/audit/"]
)
def test_list_queries_stay_constant(client, personas, django_assert_max_num_queries, url):
    client.force_login(personas.admin)
    client.get(url)  # warm the session and caches
    _add_members(personas.org_a, 3, 0)
    for index in range(3):
        services.create_team(personas.principal("ADMIN"), f"Q{index}")
    with django_assert_max_num_queries(14) as few:
        assert client.get(url).status_code == 200
    _add_members(personas.org_a, 30, 100)
    for index in range(30):
        services.create_team(personas.principal("ADMIN"), f"R{index}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_openapi_schema_is_valid():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_organization_endpoint(client, personas):
    client.force_login(personas.viewer)
    body = client.get("/api/v1/organization/").json()
    assert (body["slug"], body["role"], body["four_eyes_approval"]) == ("alpha", "VIEWER", True)
    refused = client.patch(
        "/api/v1/organization/", {"name": "Mine"}, content_type="application/json"
    )
    assert refused.status_code == 403
    client.force_login(personas.admin)
    changed = client.patch(
        "/api/v1/organization/",
        {"name": "Alpha 2", "redaction_keys": ["account_no"], "plan": "ENTERPRISE"},
        content_type="application/json",
    )
    assert changed.status_code == 200
    assert changed.json()["name"] == "Alpha 2"
    assert changed.json()["plan"] == "PRO"  # read-only: plans change elsewhere
    bad = client.patch(
        "/api/v1/organization/", {"retention_days": 3650}, content_type="application/json"
    )
    assert bad.status_code == 409
    assert bad.json()["errors"] == {"retention_days": [bad.json()["detail"]]}
    assert AuditEvent.objects.filter(action="organization.update").count() == 1


def test_me_reports_organization_grants_for_people_but_not_for_keys(client, personas):
    services.grant(personas.principal("ADMIN"), "manage", personas.org_a, user=personas.manager)
    client.force_login(personas.manager)
    assert "manage" in client.get("/api/v1/me/").json()["actions"]
    client.logout()
    _key, secret = services.create_api_key(
        personas.principal("MANAGER"), "k", scopes=["admin"], role="MANAGER"
    )
    assert client.get("/api/v1/me/", **bearer(secret)).json()["actions"] == ["view"]
