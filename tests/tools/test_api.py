"""The tools REST API: servers (CRUD, test, sync, maintenance), the tool catalog,
write-only secrets, errors with field messages, constant query counts."""

import json

import pytest
from django.core.management import call_command
from django.test import override_settings

from orgs import services as org_services
from orgs.models import AuditEvent
from tests.support.mcp import demo_command, running_demo_server
from tests.tools.factories import make_server, make_tool
from tools import services
from tools.choices import ServerStatus, ToolState
from tools.models import MCPServer, Tool

SECRET = "api-secret-value-0123"


def bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def post(client, url, data=None, **extra):
    return client.post(url, data or {}, content_type="application/json", **extra)


def demo_payload(**overrides):
    argv = demo_command()
    return {"name": "demo", "transport": "stdio", "command": argv[0], "args": argv[1:], **overrides}


def test_a_server_lifecycle_with_write_only_secrets(client, personas):
    client.force_login(personas.manager)
    created = post(
        client,
        "/api/v1/servers/",
        demo_payload(secrets={"TOKEN": SECRET}, env={"DEMO_TOKEN": "${TOKEN}"}),
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret_names"] == ["TOKEN"]
    assert "secrets" not in body
    assert SECRET not in created.content.decode()
    server_id = body["id"]
    url = f"/api/v1/servers/{server_id}/"
    for response in (client.get(url), client.get("/api/v1/servers/")):
        assert SECRET not in response.content.decode()
        assert response.status_code == 200

    tested = post(client, f"{url}test/")
    assert tested.status_code == 200, tested.content
    assert tested.json()["ok"] is True
    assert tested.json()["status"] == ServerStatus.ONLINE or tested.json()["status"]
    assert tested.json()["timings"]["total_ms"] > 0

    synced = post(client, f"{url}sync/")
    assert synced.status_code == 200, synced.content
    assert "echo" in synced.json()["added"]
    tools = client.get(f"{url}tools/?risk=low&q=weather")
    assert [tool["name"] for tool in tools.json()["results"]] == ["get_weather"]

    resources = client.get(f"{url}resources/").json()["results"]
    assert [resource["uri"] for resource in resources] == ["demo://readme"]
    prompts = client.get(f"{url}prompts/").json()["results"]
    assert [prompt["name"] for prompt in prompts] == ["summarize"]

    # The declared secret reaches the server; the caller never sees its value.
    needs_env = Tool.objects.get(server_id=server_id, name="needs_env")
    called = post(
        client, f"/api/v1/tools/{needs_env.pk}/call/", {"arguments": {"name": "DEMO_TOKEN"}}
    )
    assert called.status_code == 200, called.content
    assert called.json()["result"]["structuredContent"]["is_set"] is True
    assert SECRET not in called.content.decode()

    changed = client.patch(
        url, {"secrets": {"TOKEN": None}, "env": {}}, content_type="application/json"
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["secret_names"] == []
    events = AuditEvent.objects.filter(target_id=str(server_id))
    assert SECRET not in json.dumps([event.changes for event in events])
    assert client.delete(url).status_code == 204
    assert not MCPServer.objects.filter(pk=server_id).exists()


@pytest.mark.parametrize("transport", ["http", "sse", "websocket"])
def test_network_servers_through_the_api(client, personas, transport):
    kind = {"http": "streamable_http", "sse": "sse", "websocket": "websocket"}[transport]
    client.force_login(personas.manager)
    with running_demo_server(transport) as url:
        created = post(
            client,
            "/api/v1/servers/",
            {"name": f"demo {transport}", "transport": kind, "url": url,
             "headers": {"X-Demo": "${KEY}"}, "secrets": {"KEY": "k"}},
        )  # fmt: skip
        assert created.status_code == 201, created.content
        server_url = f"/api/v1/servers/{created.json()['id']}/"
        assert post(client, f"{server_url}test/").json()["ok"] is True
        assert "echo" in post(client, f"{server_url}sync/").json()["added"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"transport": "pigeon"}, "transport"),
        ({"command": ""}, "command"),
        ({"env": ["not", "a", "mapping"]}, "env"),
        ({"secrets": {"A": ""}}, "secrets"),
        ({"timeout_s": "soon"}, "timeout_s"),
        ({"transport": "streamable_http", "url": "http://169.254.169.254/"}, "url"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, personas, payload, field):
    client.force_login(personas.manager)
    response = post(client, "/api/v1/servers/", demo_payload(**payload))
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert response.json()["detail"]
    assert not MCPServer.objects.exists()


@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
def test_private_networks_refused_with_the_rule_named(client, personas):
    client.force_login(personas.manager)
    response = post(
        client,
        "/api/v1/servers/",
        {"name": "x", "transport": "websocket", "url": "ws://127.0.0.1:9/mcp"},
    )
    assert response.status_code == 400
    assert "ARGUS_ALLOW_PRIVATE_NETWORKS" in response.json()["errors"]["url"][0]


def test_a_failing_server_is_a_readable_result_not_an_error(client, personas):
    client.force_login(personas.manager)
    server = make_server(personas.org_a, command="argus-no-such-command")
    tested = post(client, f"/api/v1/servers/{server.pk}/test/")
    assert tested.status_code == 200
    assert tested.json()["ok"] is False
    assert "argus-no-such-command" in tested.json()["error"]
    assert tested.json()["status"] == ServerStatus.OFFLINE
    synced = post(client, f"/api/v1/servers/{server.pk}/sync/")
    assert synced.status_code == 400
    assert "argus-no-such-command" in synced.json()["detail"]


def test_maintenance_action(client, personas):
    server = make_server(personas.org_a)
    client.force_login(personas.manager)
    url = f"/api/v1/servers/{server.pk}/maintenance/"
    on = post(client, url, {"on": True, "reason": "upgrade"})
    assert on.status_code == 200, on.content
    assert on.json()["status"] == ServerStatus.MAINTENANCE
    assert post(client, url, {"on": True}).status_code == 409
    assert post(client, url, {}).json()["errors"]["on"]
    assert post(client, url, {"on": False}).json()["status"] == ServerStatus.UNKNOWN
    client.force_login(personas.operator)
    assert post(client, url, {"on": True}).status_code == 403


def test_the_catalog_filters_and_accepts_changes(client, personas):
    first, second = make_server(personas.org_a), make_server(personas.org_a)
    read = make_tool(first, "read_file", annotations={"readOnlyHint": True})
    write = make_tool(second, "write_file")
    changed = make_tool(second, "shifty")
    Tool.objects.filter(pk=changed.pk).update(state=ToolState.CHANGED, definition_hash="0" * 64)
    client.force_login(personas.operator)

    def names(query):
        response = client.get(f"/api/v1/tools/?{query}")
        assert response.status_code == 200, response.content
        return sorted(row["name"] for row in response.json()["results"])

    assert names("") == ["read_file", "shifty", "write_file"]
    assert names(f"server={second.pk}") == ["shifty", "write_file"]
    assert names("risk=low") == ["read_file"]
    assert names("state=changed") == ["shifty"]
    assert names("q=write") == ["write_file"]
    assert client.get("/api/v1/tools/?risk=extreme").status_code == 400
    detail = client.get(f"/api/v1/tools/{read.pk}/").json()
    assert detail["pinned_definition"]["name"] == "read_file"
    assert write.pk

    accept = f"/api/v1/tools/{changed.pk}/accept-change/"
    assert post(client, accept).status_code == 403  # operators do not accept
    client.force_login(personas.manager)
    accepted = post(client, accept)
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["state"] == ToolState.ACTIVE
    assert accepted.json()["pinned_hash"] == "0" * 64
    assert post(client, accept).status_code == 409


def test_calls_validate_arguments(client, personas):
    server = make_server(personas.org_a)
    tool = make_tool(
        server,
        "typed",
        inputSchema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    )
    client.force_login(personas.operator)
    response = post(client, f"/api/v1/tools/{tool.pk}/call/", {"arguments": {"n": "x"}})
    assert response.status_code == 400
    assert "n: 'x' is not of type 'integer'" in response.json()["errors"]["arguments"][0]
    client.force_login(personas.viewer)
    assert post(client, f"/api/v1/tools/{tool.pk}/call/", {"arguments": {}}).status_code == 403


def test_keys_need_the_right_scope(client, personas):
    server = make_server(personas.org_a)
    tool = make_tool(server, "echo")
    _key, read_only = org_services.create_api_key(personas.principal("ADMIN"), "r", scopes=["read"])
    assert client.get("/api/v1/servers/", **bearer(read_only)).status_code == 200
    tested = post(client, f"/api/v1/servers/{server.pk}/test/", **bearer(read_only))
    assert tested.status_code == 403
    denied = post(client, "/api/v1/servers/", demo_payload(), **bearer(read_only))
    assert denied.status_code == 403
    assert post(client, f"/api/v1/tools/{tool.pk}/call/", **bearer(read_only)).status_code == 403
    _key, writer = org_services.create_api_key(
        personas.principal("ADMIN"), "w", scopes=["read", "write"]
    )
    assert post(client, "/api/v1/servers/", demo_payload(), **bearer(writer)).status_code == 201


@pytest.mark.parametrize("url", ["/api/v1/servers/", "/api/v1/tools/"])
def test_list_queries_stay_constant(client, personas, django_assert_max_num_queries, url):
    client.force_login(personas.admin)
    client.get(url)

    def add(count):
        for _ in range(count):
            server = make_server(personas.org_a)
            for _ in range(3):
                make_tool(server)

    add(2)
    with django_assert_max_num_queries(14) as few:
        assert client.get(url).status_code == 200
    add(15)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_openapi_schema_is_still_valid():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_the_server_topic_is_permission_checked(personas):
    from argus.events import authorize

    server = make_server(personas.org_a)
    other = make_server(personas.org_b)
    scope = {"user": personas.viewer, "session": {}}
    assert authorize(scope, f"server:{server.pk}") == personas.org_a.pk
    assert authorize(scope, f"server:{other.pk}") is None
    assert authorize(scope, "server:nope") is None
    assert services.MCPServer is MCPServer
