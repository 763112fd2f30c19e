"""Console pages of the tools app: servers, their form and actions, the tool catalog."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.support.mcp import ROOT, demo_command, running_demo_server
from tests.tools.factories import make_server, make_tool
from tools import services
from tools.choices import ServerStatus, ToolState
from tools.mcp.pool import get_pool
from tools.models import MCPServer, ServerCheck, Tool

SECRET = "s3cret-VALUE-9f2c"
ROLES = ["ADMIN", "MANAGER", "OPERATOR", "VIEWER"]


@pytest.fixture(autouse=True)
def close_sessions():
    """No warm session outlives its test (primary keys are reused between tests)."""
    yield
    get_pool().close_all()


@pytest.fixture
def login(personas):
    """``login("MANAGER")`` → a client signed in as that role of organization A."""

    def sign_in(role: str) -> Client:
        client = Client()
        client.force_login(personas.outsider if role == "outsider" else personas.user(role))
        return client

    return sign_in


def demo_form(**overrides) -> dict:
    """The registration form filled in for the demo server over stdio."""
    command, *args = demo_command()
    data = {
        "name": "demo",
        "description": "The demo server",
        "transport": "stdio",
        "command": command,
        "args": "\n".join(args),
        "env": "GREETING=hello\nTOKEN=${API_TOKEN}",
        "cwd": str(ROOT),
        "url": "",
        "headers": "",
        "secrets": f"API_TOKEN={SECRET}",
        "enabled": "on",
        "check_interval_s": "60",
        "timeout_s": "10",
    }
    data.update(overrides)
    return data


def make_demo_server(personas, name="demo", **fields) -> MCPServer:
    command, *args = demo_command()
    return services.create_server(
        personas.principal("ADMIN"),
        name=name,
        transport="stdio",
        command=command,
        args=args,
        cwd=str(ROOT),
        **fields,
    )


@pytest.fixture
def demo(personas):
    """The demo server over stdio, registered and synced in organization A."""
    server = make_demo_server(personas, secrets={"API_TOKEN": SECRET})
    services.sync_server(personas.principal("ADMIN"), server)
    return server


def html(response) -> str:
    return response.content.decode()


def snapshot(server: MCPServer) -> dict:
    fresh = MCPServer.objects.filter(pk=server.pk).values().get()
    fresh.pop("updated_at")
    fresh["decrypted"] = MCPServer.objects.get(pk=server.pk).decrypted_secrets()
    return fresh


# --- the server list --------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_server_list_for_each_role(login, personas, role):
    empty = html(login(role).get("/servers/"))
    assert "No servers yet" in empty
    may_create = role in ("ADMIN", "MANAGER")
    assert ("Register a server" in empty) is may_create
    server = make_server(personas.org_a, name="Alpha files", last_latency_ms=12.4)
    make_tool(server)
    make_server(personas.org_b, name="Bravo secret server")
    page = html(login(role).get("/servers/"))
    assert "Alpha files" in page and "Bravo secret server" not in page
    assert f'href="/servers/{server.pk}/"' in page and "12 ms" in page
    assert ("Register a server" in page) is may_create


def test_server_list_filters_and_htmx_fragment(login, personas):
    make_server(personas.org_a, name="Files", status=ServerStatus.ONLINE)
    make_server(personas.org_a, name="Weather", status=ServerStatus.OFFLINE)
    client = login("VIEWER")
    page = html(client.get("/servers/?status=OFFLINE"))
    assert "Weather" in page and "Files" not in page
    fragment = html(client.get("/servers/?q=fil", HTTP_HX_REQUEST="true"))
    assert fragment.lstrip().startswith('<div id="server-table">')
    assert "<html" not in fragment and "Files" in fragment and "Weather" not in fragment
    assert "No servers match these filters" in html(client.get("/servers/?q=nothing"))


def test_server_list_query_count_is_constant(login, personas, django_assert_max_num_queries):
    client = login("OPERATOR")
    make_tool(make_server(personas.org_a))
    client.get("/servers/")  # warm the session and the content types
    with CaptureQueriesContext(connection) as few:
        assert client.get("/servers/").status_code == 200
    for _ in range(8):
        server = make_server(personas.org_a)
        make_tool(server)
        make_tool(server)
    with django_assert_max_num_queries(len(few)):
        page = html(client.get("/servers/"))
    assert page.count('<tr id="server-') == 9


# --- create and edit --------------------------------------------------------------------


def test_create_stdio_server_through_the_form(login, personas):
    client = login("MANAGER")
    form = html(client.get("/servers/new/"))
    assert 'name="transport"' in form and 'data-transport-group="network"' in form
    created = client.post("/servers/new/", demo_form())
    server = MCPServer.objects.get(name="demo")
    assert created.status_code == 302 and created["Location"] == f"/servers/{server.pk}/"
    assert server.args == demo_command()[1:]
    assert server.env == {"GREETING": "hello", "TOKEN": "${API_TOKEN}"}
    assert server.cwd == str(ROOT) and server.secret_names == ["API_TOKEN"]
    assert server.decrypted_secrets() == {"API_TOKEN": SECRET}
    detail = client.get(created["Location"])
    assert "registered" in html(detail) and "API_TOKEN" in html(detail)
    edit = html(client.get(f"/servers/{server.pk}/edit/"))
    assert "API_TOKEN" in edit and "Replace API_TOKEN" in edit
    for response in (form, html(detail), edit):
        assert SECRET not in response


def test_create_network_server_through_the_form(login, personas):
    client = login("ADMIN")
    with running_demo_server("http") as url:
        created = client.post(
            "/servers/new/",
            demo_form(
                name="remote",
                transport="streamable_http",
                url=url,
                headers="Authorization: Bearer ${API_TOKEN}\nX-Team: alpha",
            ),
        )
        assert created.status_code == 302
        server = MCPServer.objects.get(name="remote")
        assert (server.url, server.command, server.args, server.env) == (url, "", [], {})
        assert server.headers == {"Authorization": "Bearer ${API_TOKEN}", "X-Team": "alpha"}
        result = services.test_server(personas.principal("ADMIN"), server)
        assert result.ok, result.error
    page = html(client.get(f"/servers/{server.pk}/"))
    assert url in page and "Authorization: Bearer ${API_TOKEN}" in page and SECRET not in page


def test_edit_replaces_removes_and_adds_secrets(login, personas):
    server = make_demo_server(personas, secrets={"API_TOKEN": SECRET, "OLD": "old-value-1"})
    client = login("MANAGER")
    page = html(client.get(f"/servers/{server.pk}/edit/"))
    assert "OLD" in page and "old-value-1" not in page and SECRET not in page
    data = demo_form(
        name="demo renamed",
        secrets="NEW_ONE=brand-new-value",
        secret_replace__API_TOKEN="replaced-value-2",
        secret_remove__OLD="on",
    )
    saved = client.post(f"/servers/{server.pk}/edit/", data, follow=True)
    assert "demo renamed saved" in html(saved)
    server.refresh_from_db()
    assert server.decrypted_secrets() == {
        "API_TOKEN": "replaced-value-2",
        "NEW_ONE": "brand-new-value",
    }
    for value in ("replaced-value-2", "brand-new-value", "old-value-1"):
        assert value not in html(saved)
    # A blank replacement keeps the value.
    client.post(f"/servers/{server.pk}/edit/", demo_form(name="demo renamed", secrets=""))
    server.refresh_from_db()
    assert server.decrypted_secrets()["API_TOKEN"] == "replaced-value-2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": ""}, "A stdio server needs a command to run."),
        ({"env": "GREETING=hello\nnot an assignment"}, "line 2: expected NAME=value"),
        ({"env": "9LIVES=x"}, "line 1: &#x27;9LIVES&#x27; is not a valid variable name"),
        ({"transport": "carrier-pigeon"}, "Unknown transport carrier-pigeon"),
        ({"transport": "sse", "url": "ftp://127.0.0.1/"}, "must start with http:// or https://"),
        ({"transport": "sse", "url": "http://x", "headers": "no colon"}, "line 1: expected"),
        ({"secrets": "API_TOKEN=again"}, "API_TOKEN already exists"),
        ({"env": "TOKEN=${MISSING}"}, "there is no secret MISSING"),
        ({"timeout_s": "90"}, "The timeout must be shorter than the check interval."),
    ],
)
def test_bad_input_shows_the_rule_and_loses_nothing(login, personas, changes, message):
    server = make_demo_server(personas, secrets={"API_TOKEN": SECRET})
    before = snapshot(server)
    data = demo_form(secrets="TYPED=typed-secret-value")
    data.update(changes)
    response = login("MANAGER").post(f"/servers/{server.pk}/edit/", data)
    assert response.status_code == 200
    assert message in html(response)
    assert snapshot(server) == before
    assert SECRET not in html(response) and "typed-secret-value" not in html(response)


def test_typed_secrets_are_never_sent_back_after_an_error(login, personas):
    response = login("MANAGER").post(
        "/servers/new/", demo_form(command="", secrets="FRESH=typed-secret-value")
    )
    page = html(response)
    assert "needs a command" in page and "typed-secret-value" not in page
    assert "data-secrets-not-kept" in page
    assert not MCPServer.objects.exists()


@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
def test_a_refused_url_names_the_rule(login, personas):
    server = make_demo_server(personas)
    before = snapshot(server)
    response = login("MANAGER").post(
        f"/servers/{server.pk}/edit/",
        demo_form(transport="streamable_http", url="http://127.0.0.1:8080/mcp", secrets=""),
    )
    page = html(response)
    assert "a loopback address" in page and "ARGUS_ALLOW_PRIVATE_NETWORKS" in page
    assert snapshot(server) == before
    created = login("MANAGER").post(
        "/servers/new/",
        demo_form(name="metadata", transport="sse", url="http://169.254.169.254/latest"),
    )
    assert "Argus never connects there" in html(created)
    assert not MCPServer.objects.filter(name="metadata").exists()


# --- test connection --------------------------------------------------------------------


def test_test_connection_tries_the_unsaved_form(login, personas):
    client = login("MANAGER")
    fragment = html(client.post("/servers/test/", demo_form(), HTTP_HX_REQUEST="true"))
    assert "<html" not in fragment and 'data-test-result="ok"' in fragment
    assert "argus-demo" in fragment and "Connected" in fragment
    assert re.search(r"<dt>Tools</dt><dd>\d+</dd>", fragment)
    assert "total" in fragment and SECRET not in fragment
    assert not MCPServer.objects.exists()  # nothing saved

    failing = html(
        client.post(
            "/servers/test/", demo_form(command="/nonexistent/mcp-server"), HTTP_HX_REQUEST="true"
        )
    )
    assert 'data-test-result="failed"' in failing and "Connection failed" in failing
    invalid = html(client.post("/servers/test/", demo_form(env="oops"), HTTP_HX_REQUEST="true"))
    assert 'data-test-result="invalid"' in invalid and "line 1: expected NAME=value" in invalid
    without_htmx = html(client.post("/servers/test/", demo_form()))
    assert "<html" in without_htmx and 'data-test-result="ok"' in without_htmx


def test_test_connection_on_the_edit_form_uses_the_stored_secrets(login, personas):
    server = make_demo_server(
        personas,
        secrets={"API_TOKEN": SECRET},
        env={"GREETING": "hello", "TOKEN": "${API_TOKEN}"},
    )
    before = snapshot(server)
    client = login("MANAGER")
    fragment = html(
        client.post(
            f"/servers/{server.pk}/test-config/",
            demo_form(secrets="", timeout_s="5"),
            HTTP_HX_REQUEST="true",
        )
    )
    assert 'data-test-result="ok"' in fragment
    assert snapshot(server) == before
    assert (
        login("OPERATOR").post(f"/servers/{server.pk}/test-config/", demo_form()).status_code == 403
    )
    assert login("VIEWER").post("/servers/test/", demo_form()).status_code == 403


def test_test_connection_against_a_network_demo_server(login, personas):
    with running_demo_server("websocket") as url:
        fragment = html(
            login("ADMIN").post(
                "/servers/test/",
                demo_form(transport="websocket", url=url, secrets=""),
                HTTP_HX_REQUEST="true",
            )
        )
    assert 'data-test-result="ok"' in fragment and "argus-demo" in fragment


# --- detail and actions -----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_server_detail_buttons_follow_the_role(login, personas, role):
    server = make_server(personas.org_a, name="Files", secret_names=["API_TOKEN"])
    make_tool(server, "read_file")
    page = html(login(role).get(f"/servers/{server.pk}/"))
    assert "Files" in page and "read_file" in page and "API_TOKEN" in page
    operate, change = role != "VIEWER", role in ("ADMIN", "MANAGER")
    assert (f'action="/servers/{server.pk}/test/"' in page) is operate
    assert (f'action="/servers/{server.pk}/sync/"' in page) is operate
    assert (f'href="/servers/{server.pk}/edit/"' in page) is change
    assert (f'href="/servers/{server.pk}/delete/"' in page) is change
    assert (f'action="/servers/{server.pk}/maintenance/"' in page) is change
    assert (f'href="/servers/{server.pk}/access/"' in page) is (role == "ADMIN")
    assert f'data-topic="server:{server.pk}"' in page


def test_server_detail_health_sparkline_and_recent_errors(login, personas):
    server = make_server(personas.org_a, status=ServerStatus.DEGRADED)
    now = timezone.now()
    for minutes, ok, latency, error in [
        (5, True, 30.0, ""),
        (4, False, None, "connection refused by the demo"),
        (3, True, 55.0, ""),
        (2, True, 41.0, ""),
    ]:
        ServerCheck.objects.create(
            server=server,
            checked_at=now - timedelta(minutes=minutes),
            ok=ok,
            status=ServerStatus.DEGRADED,
            latency_ms=latency,
            error=error,
        )
    page = html(login("VIEWER").get(f"/servers/{server.pk}/"))
    assert "data-sparkline" in page and page.count("data-failure") == 1
    assert "Last 4 checks: 30\N{EN DASH}55 ms" in page
    assert "connection refused by the demo" in page
    assert re.search(r'<polyline class="sparkline-line" points="[\d., ]+"', page)


def test_sync_then_the_catalog_lists_the_demo_tools(login, personas):
    server = make_demo_server(personas)
    client = login("OPERATOR")
    synced = client.post(f"/servers/{server.pk}/sync/", follow=True)
    page = html(synced)
    assert f"Synced {server.name}:" in page
    assert "echo" in page and "calculate" in page and "readme" in page and "summarize" in page
    catalog = html(client.get("/tools/"))
    for name in ("echo", "calculate", "get_weather"):
        assert f'<strong class="mono">{name}</strong>' in catalog
    tested = html(client.post(f"/servers/{server.pk}/test/", follow=True))
    assert "answered in" in tested
    server.refresh_from_db()
    assert server.status == ServerStatus.ONLINE and server.server_name == "argus-demo"
    assert ServerCheck.objects.filter(server=server).count() == 1


def test_a_failing_sync_is_reported_and_remembered(login, personas):
    server = make_server(personas.org_a, command="/nonexistent/mcp-server")
    page = html(login("OPERATOR").post(f"/servers/{server.pk}/sync/", follow=True))
    assert "Could not sync" in page
    server.refresh_from_db()
    assert server.sync_error  # kept: the view does not roll the service's record back


def test_maintenance_on_and_off(login, personas):
    server = make_server(personas.org_a)
    client = login("MANAGER")
    client.post(f"/servers/{server.pk}/maintenance/", {"on": "on", "reason": "disk swap"})
    server.refresh_from_db()
    assert server.status == ServerStatus.MAINTENANCE
    page = html(client.get(f"/servers/{server.pk}/"))
    assert "disk swap" in page and "End maintenance" in page
    again = html(client.post(f"/servers/{server.pk}/maintenance/", {"on": "on"}, follow=True))
    assert "already in maintenance" in again
    client.post(f"/servers/{server.pk}/maintenance/", {"on": ""})
    server.refresh_from_db()
    assert server.status == ServerStatus.UNKNOWN
    assert (
        login("OPERATOR").post(f"/servers/{server.pk}/maintenance/", {"on": "on"}).status_code
        == 403
    )


def test_delete_after_confirmation(login, personas):
    server = make_server(personas.org_a, name="Doomed")
    make_tool(server)
    client = login("MANAGER")
    confirm = html(client.get(f"/servers/{server.pk}/delete/"))
    assert "Delete Doomed?" in confirm and "its 1 tool," in confirm
    deleted = client.post(f"/servers/{server.pk}/delete/", follow=True)
    assert "Server Doomed deleted" in html(deleted)
    assert not MCPServer.objects.filter(pk=server.pk).exists()


def test_access_page_is_for_admins(login, personas):
    server = make_server(personas.org_a, name="Shared")
    client = login("ADMIN")
    page = html(client.get(f"/servers/{server.pk}/access/"))
    assert "Access to Shared" in page and f'href="/servers/{server.pk}/"' in page
    client.post(
        f"/servers/{server.pk}/access/",
        {"action": "change", "holder": f"user:{personas.operator.pk}"},
    )
    operator = login("OPERATOR")
    assert f'href="/servers/{server.pk}/edit/"' in html(operator.get(f"/servers/{server.pk}/"))
    assert operator.get(f"/servers/{server.pk}/edit/").status_code == 200
    assert login("MANAGER").get(f"/servers/{server.pk}/access/").status_code == 403


def test_viewer_sees_no_write_buttons_and_is_refused(login, personas):
    server = make_server(personas.org_a)
    tool = make_tool(server, "echo", inputSchema={"type": "object", "properties": {}})
    before = snapshot(server)
    viewer = login("VIEWER")
    listing = html(viewer.get("/servers/"))
    assert "Register a server" not in listing
    tool_page = html(viewer.get(f"/tools/{tool.pk}/"))
    assert "Call echo" not in tool_page and "operator role" in tool_page
    for method, url in [
        ("get", "/servers/new/"),
        ("post", "/servers/new/"),
        ("post", "/servers/test/"),
        ("get", f"/servers/{server.pk}/edit/"),
        ("post", f"/servers/{server.pk}/edit/"),
        ("post", f"/servers/{server.pk}/test-config/"),
        ("get", f"/servers/{server.pk}/delete/"),
        ("post", f"/servers/{server.pk}/delete/"),
        ("post", f"/servers/{server.pk}/test/"),
        ("post", f"/servers/{server.pk}/sync/"),
        ("post", f"/servers/{server.pk}/maintenance/"),
        ("get", f"/servers/{server.pk}/access/"),
        ("post", f"/tools/{tool.pk}/try/"),
        ("post", f"/tools/{tool.pk}/accept/"),
    ]:
        response = getattr(viewer, method)(url, demo_form(name="hijacked"))
        assert response.status_code == 403, (method, url)
    assert snapshot(server) == before
    assert not MCPServer.objects.filter(name="hijacked").exists()


def test_another_organizations_objects_are_not_found(login, personas):
    server = make_server(personas.org_b)
    tool = make_tool(server)
    client = login("ADMIN")
    assert client.get(f"/servers/{server.pk}/").status_code == 404
    assert client.get(f"/tools/{tool.pk}/").status_code == 404
    assert client.post(f"/tools/{tool.pk}/try/").status_code == 404
    assert "No tools match" in html(client.get(f"/tools/?server={server.pk}"))


# --- the tool catalog -------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_tool_catalog_for_each_role(login, personas, role):
    files = make_server(personas.org_a, name="Files")
    weather = make_server(personas.org_a, name="Weather")
    make_tool(files, "read_file", annotations={"readOnlyHint": True})
    make_tool(weather, "forecast")
    make_tool(make_server(personas.org_b, name="Bravo"), "bravo_tool")
    client = login(role)
    page = html(client.get("/tools/"))
    assert "read_file" in page and "forecast" in page and "bravo_tool" not in page
    assert '<option value="' in page and "Bravo" not in page  # the server filter is narrowed
    filtered = html(client.get(f"/tools/?server={files.pk}&risk=low"))
    assert "read_file" in filtered and "forecast" not in filtered
    fragment = html(client.get("/tools/?q=fore", HTTP_HX_REQUEST="true"))
    assert fragment.lstrip().startswith('<div id="tool-table">') and "read_file" not in fragment


def test_tool_catalog_highlights_changed_tools(login, personas):
    server = make_server(personas.org_a)
    tool = make_tool(server, "drifter")
    Tool.objects.filter(pk=tool.pk).update(state=ToolState.CHANGED)
    page = html(login("VIEWER").get("/tools/?state=changed"))
    assert f'<tr id="tool-{tool.pk}" class="is-changed">' in page
    listing = html(login("VIEWER").get("/servers/"))
    assert "1 changed" in listing


def test_tool_catalog_query_count_is_constant(login, personas, django_assert_max_num_queries):
    client = login("VIEWER")
    make_tool(make_server(personas.org_a))
    client.get("/tools/")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/tools/").status_code == 200
    for _ in range(6):
        server = make_server(personas.org_a)
        for _ in range(3):
            make_tool(server)
    with django_assert_max_num_queries(len(few)):
        page = html(client.get("/tools/"))
    assert page.count('<tr id="tool-') == 19


# --- the tool page, Try it and drift ------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_tool_page_for_each_role(login, personas, role):
    server = make_server(personas.org_a)
    tool = make_tool(
        server,
        "calculate",
        description="Apply an operation.",
        inputSchema={
            "type": "object",
            "properties": {
                "operation": {"type": "string", "enum": ["add", "divide"], "description": "Op."},
                "a": {"type": "number", "description": "Left."},
                "verbose": {"type": "boolean", "default": False},
                "options": {"type": "object"},
            },
            "required": ["operation", "a"],
        },
        annotations={"readOnlyHint": True},
    )
    page = html(login(role).get(f"/tools/{tool.pk}/"))
    assert "Apply an operation." in page and "readOnlyHint: true" in page
    assert "<code>add</code>, <code>divide</code>" in page and "default <code>false</code>" in page
    assert 'data-schema="input"' in page and "&quot;required&quot;" in page
    callable_ = role != "VIEWER"
    assert ("Call calculate" in page) is callable_
    if callable_:
        assert '<select name="arguments-operation"' in page
        assert 'type="number" name="arguments-a"' in page
        assert 'type="checkbox" name="arguments-verbose"' in page
        assert '<textarea name="arguments-options"' in page


def test_try_it_echo_and_calculate(login, personas, demo):
    client = login("OPERATOR")
    echo = Tool.objects.get(server=demo, name="echo")
    fragment = html(
        client.post(
            f"/tools/{echo.pk}/try/", {"arguments-text": "hello, Argus"}, HTTP_HX_REQUEST="true"
        )
    )
    assert fragment.lstrip().startswith('<div id="try-panel">') and "<html" not in fragment
    assert 'data-call-result="ok"' in fragment
    assert '<pre data-content="text">hello, Argus</pre>' in fragment

    calculate = Tool.objects.get(server=demo, name="calculate")
    result = html(
        client.post(
            f"/tools/{calculate.pk}/try/",
            {"arguments-operation": "multiply", "arguments-a": "6", "arguments-b": "7"},
            HTTP_HX_REQUEST="true",
        )
    )
    assert 'data-call-result="ok"' in result and "42" in result
    divided = html(
        client.post(
            f"/tools/{calculate.pk}/try/",
            {"arguments-operation": "divide", "arguments-a": "1", "arguments-b": "0"},
            HTTP_HX_REQUEST="true",
        )
    )
    assert 'data-call-result="error"' in divided and "cannot divide by zero" in divided
    full_page = html(client.post(f"/tools/{echo.pk}/try/", {"arguments-text": "no htmx here"}))
    assert "<html" in full_page and '<pre data-content="text">no htmx here</pre>' in full_page


def test_try_it_shows_argument_errors_on_the_form(login, personas, demo):
    client = login("OPERATOR")
    calculate = Tool.objects.get(server=demo, name="calculate")
    missing = html(
        client.post(
            f"/tools/{calculate.pk}/try/", {"arguments-operation": "add"}, HTTP_HX_REQUEST="true"
        )
    )
    assert "This field is required." in missing and "data-call-result" not in missing
    large = Tool.objects.get(server=demo, name="large_payload")
    refused = html(
        client.post(f"/tools/{large.pk}/try/", {"arguments-kb": "999999"}, HTTP_HX_REQUEST="true")
    )
    assert "data-arguments-error" in refused
    assert "do not match the input schema" in refused and "999999" in refused
    assert "data-call-result" not in refused


def test_drift_shows_a_diff_and_is_accepted_by_a_manager(login, personas, demo):
    echo = Tool.objects.get(server=demo, name="echo")
    Tool.objects.filter(pk=echo.pk).update(
        description="Echo, now with telemetry.",
        definition_hash="0" * 64,
        state=ToolState.CHANGED,
        changed_at=timezone.now(),
    )
    operator = login("OPERATOR")
    page = html(operator.get(f"/tools/{echo.pk}/"))
    assert "Definition changed" in page and "data-drift" in page
    assert re.search(r'class="diff-add">.*Echo, now with telemetry\.', page)
    assert 'class="diff-del">' in page
    assert "Accept change" not in page and "data-not-callable" in page
    refused = operator.post(f"/tools/{echo.pk}/try/", {"arguments-text": "x"})
    assert "review and accept" in html(refused)
    assert operator.post(f"/tools/{echo.pk}/accept/").status_code == 403
    assert Tool.objects.get(pk=echo.pk).state == ToolState.CHANGED

    manager = login("MANAGER")
    assert "Accept change" in html(manager.get(f"/tools/{echo.pk}/"))
    accepted = manager.post(f"/tools/{echo.pk}/accept/", follow=True)
    assert "is accepted" in html(accepted) and "data-drift" not in html(accepted)
    echo.refresh_from_db()
    assert echo.state == ToolState.ACTIVE
    assert echo.pinned_definition["description"] == "Echo, now with telemetry."
    assert echo.pinned_by == personas.manager
    again = html(manager.post(f"/tools/{echo.pk}/accept/", follow=True))
    assert "no pending definition change" in again


def test_what_a_server_writes_is_escaped(login, personas):
    script = "<script>alert(1)</script>"
    tool = make_tool(
        make_server(personas.org_a),
        "sneaky",
        description=script,
        inputSchema={
            "type": "object",
            "properties": {script: {"type": "string", "description": script, "enum": [script]}},
        },
    )
    page = html(login("OPERATOR").get(f"/tools/{tool.pk}/"))
    assert script not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
