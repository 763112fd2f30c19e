"""Services of the tools app: configuration rules, write-only secrets, the catalog and
its drift, health status, the check dispatcher. Real demo server where it talks MCP."""

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from argus.errors import Conflict, LimitExceeded, ServiceError
from orgs.models import AuditEvent, Organization
from orgs.permissions import Principal
from tests.support.mcp import demo_command
from tests.support.processes import wait_until
from tests.tools.factories import make_server, make_tool
from tools import services
from tools.choices import Risk, ServerStatus, ToolState
from tools.mcp.operations import TestResult
from tools.mcp.pool import get_pool
from tools.models import MCPServer, ServerCheck, Tool

ROOT = str(Path(__file__).resolve().parents[2])


def demo_config(**overrides):
    argv = demo_command()
    return {
        "name": "demo",
        "transport": "stdio",
        "command": argv[0],
        "args": argv[1:],
        "cwd": ROOT,
        **overrides,
    }


@pytest.fixture
def manager(personas):
    return personas.principal("MANAGER")


# --- configuration --------------------------------------------------------------------------
def test_secrets_are_encrypted_and_write_only(personas, manager):
    server = services.create_server(
        manager,
        **demo_config(secrets={"API_TOKEN": "s3cr3t-value"}, env={"TOKEN": "${API_TOKEN}"}),
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM tools_mcpserver WHERE id = %s", [server.pk])
        stored = cursor.fetchone()[0]
    assert "s3cr3t-value" not in stored
    assert server.secret_names == ["API_TOKEN"]
    assert MCPServer.objects.get(pk=server.pk).decrypted_secrets() == {"API_TOKEN": "s3cr3t-value"}
    services.update_server(manager, server, secrets={"OTHER": "two"})
    services.update_server(manager, server, secrets={"OTHER": None})
    server.refresh_from_db()
    assert server.decrypted_secrets() == {"API_TOKEN": "s3cr3t-value"}
    events = AuditEvent.objects.filter(target_id=str(server.pk)).order_by("seq")
    assert [event.action for event in events] == ["server.create", "server.update", "server.update"]
    assert events[0].changes["secrets"] == {"added": ["API_TOKEN"]}
    assert events[1].changes["secrets"] == {"added": ["OTHER"]}
    assert events[2].changes["secrets"] == {"removed": ["OTHER"]}
    assert not any(
        "s3cr3t" in str(event.changes) or "two" in str(event.changes) for event in events
    )


def test_a_changed_connection_bumps_the_configuration_version(manager):
    server = services.create_server(manager, **demo_config())
    services.update_server(manager, server, description="only words")
    server.refresh_from_db()
    assert server.config_version == 1
    services.update_server(manager, server, env={"X": "1"})
    server.refresh_from_db()
    assert server.config_version == 2
    services.update_server(manager, server, secrets={"S": "v"})
    server.refresh_from_db()
    assert server.config_version == 3


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"transport": "carrier-pigeon"}, "transport", "Unknown transport"),
        ({"command": ""}, "command", "needs a command"),
        ({"env": {"BAD NAME": "x"}}, "env", "not a valid environment variable name"),
        ({"env": {"A": "${MISSING}"}}, "env", "no secret MISSING"),
        ({"args": "not a list"}, "args", "list of strings"),
        ({"cwd": "relative/dir"}, "cwd", "absolute path"),
        ({"timeout_s": 120, "check_interval_s": 60}, "timeout_s", "shorter than"),
        ({"check_interval_s": 1}, "check_interval_s", "between 10 and 86400"),
        ({"name": ""}, "name", "needs a name"),
        ({"secrets": {"lower-case!": "x"}}, "secrets", "not a valid secret name"),
        ({"secrets": {"EMPTY": ""}}, "secrets", "non-empty value"),
        (
            {"transport": "streamable_http", "url": "ftp://example.com/"},
            "url",
            "",
        ),
        (
            {
                "transport": "streamable_http",
                "url": "http://127.0.0.1:1/mcp",
                "headers": {"X-A": "line\r\nbreak"},
            },
            "headers",
            "forbidden character",
        ),
        (
            {"transport": "websocket", "url": "ws://127.0.0.1:1/mcp", "headers": {"Host": "x"}},
            "headers",
            "sets Host itself",
        ),
    ],
)
def test_bad_configurations_are_refused_and_store_nothing(manager, data, field, words):
    with pytest.raises(ServiceError) as refused:
        services.create_server(manager, **demo_config(**data))
    assert refused.value.field == field
    assert words in refused.value.message
    assert not MCPServer.objects.exists()


def test_a_bad_edit_keeps_what_was_stored(manager):
    server = services.create_server(manager, **demo_config(secrets={"KEEP": "me"}))
    with pytest.raises(ServiceError):
        services.update_server(manager, server, command="", secrets={"NEW": "x"})
    server.refresh_from_db()
    assert server.command == demo_config()["command"]
    assert server.decrypted_secrets() == {"KEEP": "me"}


def test_names_are_unique_in_an_organization(personas, manager):
    services.create_server(manager, **demo_config(name="Files"))
    with pytest.raises(ServiceError, match="already exists"):
        services.create_server(manager, **demo_config(name="files"))
    services.create_server(Principal.system(personas.org_b), **demo_config(name="Files"))


@override_settings(ARGUS_ALLOW_STDIO=False)
def test_stdio_servers_can_be_turned_off(manager):
    with pytest.raises(ServiceError) as refused:
        services.create_server(manager, **demo_config())
    assert refused.value.field == "transport"
    assert "ARGUS_ALLOW_STDIO" in refused.value.message


@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:8000/mcp", "ARGUS_ALLOW_PRIVATE_NETWORKS"),
        ("http://localhost:8000/mcp", "ARGUS_ALLOW_PRIVATE_NETWORKS"),
        ("http://10.1.2.3/mcp", "private"),
    ],
)
def test_forbidden_destinations_are_refused(manager, url, words):
    with pytest.raises(ServiceError) as refused:
        services.create_server(manager, **demo_config(transport="streamable_http", url=url))
    assert refused.value.field == "url"
    assert words in refused.value.message


def test_metadata_addresses_are_refused_even_when_private_networks_are_on(manager):
    with pytest.raises(ServiceError, match="link-local"):
        services.create_server(
            manager, **demo_config(transport="sse", url="http://169.254.169.254/sse")
        )


def test_only_change_holders_register_servers(personas):
    with pytest.raises(PermissionDenied):
        services.create_server(personas.principal("OPERATOR"), **demo_config())


def test_the_plan_limits_servers(personas):
    organization = Organization.objects.create(name="Small", slug="small", plan="FREE")
    system = Principal.system(organization)
    for index in range(3):
        services.create_server(system, **demo_config(name=f"s{index}"))
    with pytest.raises(LimitExceeded, match="at most 3 MCP servers"):
        services.create_server(system, **demo_config(name="one too many"))


# --- catalog and drift --------------------------------------------------------------------------
def test_sync_fills_the_catalog(personas, manager):
    server = services.create_server(manager, **demo_config())
    result = services.sync_server(personas.principal("OPERATOR"), server)
    assert "echo" in result.added
    server.refresh_from_db()
    assert server.server_name == "argus-demo"
    assert server.last_synced_at is not None
    echo = Tool.objects.get(server=server, name="echo")
    assert echo.risk == Risk.LOW
    assert echo.state == ToolState.ACTIVE
    assert echo.pinned_hash == echo.definition_hash
    assert server.resources.count() == 1
    assert server.prompts.count() == 1
    again = services.sync_server(manager, server)
    assert again.added == again.changed == again.removed == []


def test_drift_marks_a_tool_changed_until_accepted(personas, manager):
    server = services.create_server(manager, **demo_config())
    services.sync_server(manager, server)
    pinned = Tool.objects.get(server=server, name="echo").pinned_hash
    # The demo server's revision 2 changes echo's description and adds echo_upper.
    services.update_server(manager, server, env={"ARGUS_DEMO_REVISION": "2"})
    result = services.sync_server(manager, server)
    assert result.changed == ["echo"]
    assert "echo_upper" in result.added
    echo = Tool.objects.get(server=server, name="echo")
    assert echo.state == ToolState.CHANGED
    assert echo.pinned_hash == pinned != echo.definition_hash
    assert "revision 2" in echo.description
    assert "revision 2" not in echo.pinned_definition["description"]
    assert AuditEvent.objects.filter(action="tool.changed", target_id=str(echo.pk)).exists()
    # A changed tool cannot be called until a person accepts it.
    with pytest.raises(Conflict, match="accept"):
        services.call_tool(manager, echo, {"text": "x"})
    with pytest.raises(PermissionDenied):
        services.accept_tool_change(personas.principal("OPERATOR"), echo)
    accepted = services.accept_tool_change(manager, echo)
    assert accepted.state == ToolState.ACTIVE
    assert accepted.pinned_hash == accepted.definition_hash
    assert accepted.pinned_by == personas.manager
    with pytest.raises(Conflict):
        services.accept_tool_change(manager, accepted)
    # Back to revision 1: echo_upper is removed (kept), echo drifts from the new pin.
    services.update_server(manager, server, env={})
    result = services.sync_server(manager, server)
    assert result.removed == ["echo_upper"]
    assert result.changed == ["echo"]
    assert Tool.objects.get(server=server, name="echo_upper").state == ToolState.REMOVED


def test_risk_follows_the_annotations(personas):
    server = make_server(personas.org_a)
    assert make_tool(server, annotations={"readOnlyHint": True}).risk == Risk.LOW
    assert make_tool(server, annotations={"destructiveHint": False}).risk == Risk.MEDIUM
    assert make_tool(server).risk == Risk.HIGH


def test_calls_check_arguments_against_the_schema(personas, manager):
    server = services.create_server(manager, **demo_config())
    services.sync_server(manager, server)
    calculate = Tool.objects.get(server=server, name="calculate")
    operator = personas.principal("OPERATOR")
    with pytest.raises(ServiceError) as refused:
        services.call_tool(operator, calculate, {"operation": "modulo", "a": "x"})
    assert refused.value.field == "arguments"
    assert "operation" in refused.value.message
    result = services.call_tool(operator, calculate, {"operation": "divide", "a": 1, "b": 0})
    assert result.is_error
    ok = services.call_tool(operator, calculate, {"operation": "add", "a": 2, "b": 3})
    assert not ok.is_error
    with pytest.raises(PermissionDenied):
        services.call_tool(personas.principal("VIEWER"), calculate, {})


# --- health --------------------------------------------------------------------------------------
def result(ok=True, latency=5.0, error=""):
    return TestResult(ok=ok, timings={"total_ms": latency}, error=error)


def statuses(server_id, *outcomes):
    seen = []
    for outcome in outcomes:
        seen.append(services.record_check(server_id, outcome).status)
    return seen


def test_status_rules(personas):
    server = make_server(personas.org_a)
    assert statuses(server.pk, result(), result(ok=False, error="down"), result(), result()) == [
        ServerStatus.ONLINE,
        ServerStatus.OFFLINE,
        ServerStatus.DEGRADED,  # a recent check failed
        ServerStatus.DEGRADED,
    ]
    assert statuses(server.pk, result(), result(), result())[-1] == ServerStatus.ONLINE
    with override_settings(ARGUS_HEALTH_SLOW_MS=100):
        assert statuses(server.pk, result(latency=150))[-1] == ServerStatus.DEGRADED
    server.refresh_from_db()
    assert server.next_check_at > timezone.now()
    changes = AuditEvent.objects.filter(action="server.status", target_id=str(server.pk))
    assert changes.count() == 5  # UNKNOWN→ONLINE→OFFLINE→DEGRADED→ONLINE→DEGRADED


@override_settings(ARGUS_HEALTH_HISTORY=3)
def test_the_health_history_is_bounded(personas):
    server = make_server(personas.org_a)
    statuses(server.pk, *[result(latency=n) for n in range(6)])
    assert list(ServerCheck.objects.filter(server=server).values_list("latency_ms", flat=True)) == [
        5.0,
        4.0,
        3.0,
    ]


def test_maintenance_is_kept_by_checks(personas, manager):
    server = make_server(personas.org_a)
    services.set_maintenance(manager, server, True, "upgrading")
    with pytest.raises(Conflict):
        services.set_maintenance(manager, server, True)
    assert statuses(server.pk, result(ok=False))[-1] == ServerStatus.MAINTENANCE
    assert server.pk not in set(services.due_servers().values_list("pk", flat=True))
    server = services.set_maintenance(manager, server, False)
    assert server.status == ServerStatus.UNKNOWN
    with pytest.raises(PermissionDenied):
        services.set_maintenance(personas.principal("OPERATOR"), server, True)


def test_the_dispatcher_claims_each_due_server_once(personas):
    due = make_server(personas.org_a, next_check_at=timezone.now() - timedelta(seconds=1))
    make_server(personas.org_a, next_check_at=timezone.now() + timedelta(hours=1))
    make_server(personas.org_a, next_check_at=None)
    make_server(personas.org_a, enabled=False, next_check_at=timezone.now())
    enqueued = []
    assert services.dispatch_checks(enqueued.append) == [due.pk]
    assert services.dispatch_checks(enqueued.append) == []  # leased
    assert enqueued == [due.pk]


@override_settings(ARGUS_HEALTH_SLOW_MS=60_000)  # starting Python on a busy machine is slow
def test_a_check_against_the_real_demo_server(personas, manager):
    server = services.create_server(manager, **demo_config())
    checked = services.run_check(server.pk)
    assert checked.status == ServerStatus.ONLINE, checked.last_error
    assert checked.last_latency_ms > 0
    assert checked.server_name == "argus-demo"
    assert checked.check_lease_until is None
    broken = services.create_server(manager, **demo_config(name="broken", command="no-such-cmd"))
    checked = services.run_check(broken.pk)
    assert checked.status == ServerStatus.OFFLINE
    assert "no-such-cmd" in checked.last_error


def test_test_server_reports_timings(personas):
    server = services.create_server(personas.principal("MANAGER"), **demo_config())
    tested = services.test_server(personas.principal("OPERATOR"), server)
    assert tested.ok
    assert tested.timings["total_ms"] >= tested.timings["initialize_ms"]
    with pytest.raises(PermissionDenied):
        services.test_server(personas.principal("VIEWER"), server)


def test_a_configuration_is_tested_before_it_is_saved(manager):
    tested = services.test_configuration(manager, demo_config())
    assert tested.ok
    failed = services.test_configuration(
        manager, demo_config(command=sys.executable, args=["-c", "pass"])
    )
    assert not failed.ok
    assert not MCPServer.objects.exists()


# --- live sessions -------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_tools_list_changed_resyncs_the_server(personas):
    manager = personas.principal("MANAGER")
    server = services.create_server(manager, **demo_config())
    services.sync_server(manager, server)
    reconfigure = Tool.objects.get(server=server, name="reconfigure")
    # The call runs on the pooled session; the server then announces a new tool list.
    services.call_tool(manager, reconfigure, {"revision": 2})
    wait_until(
        lambda: (
            Tool.objects.filter(server=server, name="echo_upper").exists()
            and Tool.objects.get(server=server, name="echo").state == ToolState.CHANGED
        ),
        15,
        "the server was not re-synced after tools/list_changed",
    )
    get_pool().invalidate(server.pk)


def test_deleting_a_server_closes_its_session(personas):
    manager = personas.principal("MANAGER")
    server = services.create_server(manager, **demo_config())
    services.sync_server(manager, server)
    services.delete_server(manager, server)
    assert not MCPServer.objects.filter(pk=server.pk).exists()
    assert AuditEvent.objects.filter(action="server.delete").exists()


def test_seeding_the_demo_server_is_idempotent(personas):
    organization = personas.org_b
    first = services.seed_demo_server(organization)
    assert first.tools.filter(name="echo").exists()
    assert services.seed_demo_server(organization).pk == first.pk
    assert MCPServer.objects.filter(organization=organization).count() == 1


def test_a_health_check_notices_an_unannounced_change(personas, manager):
    server = services.create_server(manager, **demo_config())
    services.sync_server(manager, server)
    # The next process of this server starts at revision 2; nobody announced it.
    MCPServer.objects.filter(pk=server.pk).update(env={"ARGUS_DEMO_REVISION": "2"})
    services.run_check(server.pk)
    assert Tool.objects.get(server=server, name="echo").state == ToolState.CHANGED
    assert Tool.objects.filter(server=server, name="echo_upper").exists()


@pytest.mark.parametrize(
    ("field", "mapping"),
    [
        ("headers", {"Authorization": "Bearer abc123"}),
        ("headers", {"X-API-Key": "abc123"}),
        ("env", {"GITHUB_TOKEN": "ghp_abc"}),
        ("env", {"AWS_SECRET_ACCESS_KEY": "abc"}),
    ],
)
def test_credentials_typed_into_headers_or_variables_are_refused(manager, field, mapping):
    data = (
        demo_config(env=mapping)
        if field == "env"
        else demo_config(transport="streamable_http", url="http://127.0.0.1:9/mcp", headers=mapping)
    )
    with pytest.raises(ServiceError, match="looks like a credential") as refused:
        services.create_server(manager, **data)
    assert refused.value.field == field
    # The same through a secret is fine, and so are names that only look alike.
    name = next(iter(mapping))
    services.create_server(
        manager, **{**data, field: {name: "${S}", "PRIVATE_KEY_PATH": "/k", "keyword": "x"},
                    "secrets": {"S": "abc"}}
    )  # fmt: skip
