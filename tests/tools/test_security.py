"""Regression tests of the tools app's security review: SSRF past the URL check, secret
values reaching viewers, hostile catalogs, orphaned sessions, drift acceptance races."""

import http.server
import os
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.db import connection
from django.test import override_settings

from argus.errors import Conflict, ServiceError
from orgs.models import AuditEvent
from tests.support.mcp import demo_command
from tests.support.personas import make_personas
from tests.tools.factories import make_server, make_tool
from tools import network, services
from tools.choices import ServerStatus, ToolState
from tools.mcp import operations
from tools.mcp.connection import ConnectionSpec, spec_for
from tools.mcp.errors import RequestCancelled
from tools.mcp.operations import Catalog, ServerInfo, TestResult
from tools.mcp.pool import SessionPool
from tools.models import MCPServer, ServerCheck, Tool

TOKEN = "tok-Very-Secret-4242"
PUBLIC = "93.184.216.34"
REAL_GETADDRINFO = socket.getaddrinfo
ROOT = str(Path(__file__).resolve().parents[2])


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 404 to everything and records what reached it."""

    def _record(self):
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    """An HTTP listener on loopback standing for an internal or metadata service."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def answer(address, port):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]


def viewer_sees(client, personas, server) -> str:
    client.force_login(personas.viewer)
    return (
        client.get(f"/api/v1/servers/{server.pk}/").content.decode()
        + client.get(f"/servers/{server.pk}/").content.decode()
    )


def listed(name, description):
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


def catalog(*tools):
    return Catalog(server=ServerInfo(name="s"), tools=list(tools), resources=[], prompts=[])


# --- where Argus connects -----------------------------------------------------------------------
@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
def test_dns_rebinding_after_the_check_does_not_reach_an_internal_address(
    personas, monkeypatch, listener
):
    """A name answering a public address to the check and loopback to the client: the
    connection goes only to an address that was checked."""
    port = listener.server_address[1]
    answers = iter([PUBLIC, "127.0.0.1"] * 50)

    def dns(host, port_, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name == "rebind.attacker.test":
            return answer(next(answers), port_)
        return REAL_GETADDRINFO(host, port_, *args, **kwargs)

    monkeypatch.setitem(network.check_url.__kwdefaults__, "resolve", dns)
    monkeypatch.setitem(network.checked_addresses.__kwdefaults__, "resolve", dns)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    server = make_server(
        personas.org_a,
        transport="streamable_http",
        command="",
        url=f"http://rebind.attacker.test:{port}/mcp",
    )
    result = operations.test_connection(spec_for(server))
    assert not result.ok
    assert listener.seen == []


@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
def test_host_names_are_checked_as_http_clients_encode_them(personas, monkeypatch):
    """IDNA 2003 ("faß" → "fass") and IDNA 2008 ("faß" → "xn--fa-hia") name different
    hosts: the check resolves the one the HTTP client will connect to."""
    zone = {"fass.attacker.test": PUBLIC, "xn--fa-hia.attacker.test": "127.0.0.1"}

    def dns(host, port_, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if not name.isascii():
            name = name.encode("idna").decode()  # what CPython's resolver would do
        if name in zone:
            return answer(zone[name], port_)
        return REAL_GETADDRINFO(host, port_, *args, **kwargs)

    monkeypatch.setitem(network.check_url.__kwdefaults__, "resolve", dns)
    with pytest.raises(ServiceError, match="loopback"):
        services.create_server(
            personas.principal("MANAGER"),
            name="idna",
            transport="streamable_http",
            url="http://faß.attacker.test:8080/mcp",
        )


@override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False)
def test_a_remote_ref_in_an_input_schema_is_never_fetched(personas, listener):
    port = listener.server_address[1]
    tool = make_tool(
        make_server(personas.org_a),
        "lookup",
        inputSchema={
            "type": "object",
            "properties": {"x": {"$ref": f"http://127.0.0.1:{port}/latest/meta-data/"}},
        },
    )
    with pytest.raises(ServiceError, match="outside itself") as refused:
        services.validate_arguments(tool, {"x": "a"})
    assert refused.value.field == "arguments"
    assert listener.seen == []


def nested(depth):
    schema = {"type": "string"}
    for _ in range(depth):
        schema = {"not": schema}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": nested(150)}},
        {"$ref": "#"},
        {"type": "object", "properties": {"x": {"$ref": "https://example.invalid/s.json"}}},
        ["not", "an", "object"],
    ],
    ids=["deeply-nested", "self-ref", "remote-ref", "not-an-object"],
)
def test_hostile_input_schemas_are_a_clean_refusal(client, personas, schema):
    tool = make_tool(make_server(personas.org_a), "hostile", inputSchema=schema)
    with pytest.raises(ServiceError) as refused:
        services.validate_arguments(tool, {"x": "a"})
    assert refused.value.field == "arguments"
    client.force_login(personas.operator)
    response = client.post(
        f"/api/v1/tools/{tool.pk}/call/", {"arguments": {"x": "a"}}, "application/json"
    )
    assert response.status_code in (400, 409)


# --- secret values ---------------------------------------------------------
def test_a_secret_with_a_control_character_is_refused(personas):
    with pytest.raises(ServiceError, match="line break") as refused:
        services.create_server(
            personas.principal("MANAGER"),
            name="hdr",
            transport="streamable_http",
            url="http://127.0.0.1:9/mcp",
            headers={"Authorization": "Bearer ${TOKEN}"},
            secrets={"TOKEN": TOKEN + "\n"},
        )
    assert refused.value.field == "secrets"
    assert not MCPServer.objects.exists()


def test_secret_values_never_reach_errors_viewers_can_read(client, personas):
    """A stdio server that prints the token it was given (inside a longer env value)."""
    script = (
        "import os,sys; sys.stderr.write('auth rejected for token '"
        " + os.environ['AUTH'].split()[1] + '\\n'); sys.stderr.flush(); sys.exit(3)"
    )
    server = services.create_server(
        personas.principal("MANAGER"),
        name="stdio",
        transport="stdio",
        command=sys.executable,
        args=["-c", script],
        env={"AUTH": "Bearer ${TOKEN}"},
        secrets={"TOKEN": TOKEN},
    )
    services.test_server(personas.principal("OPERATOR"), server)
    server.refresh_from_db()
    assert "auth rejected for token [secret]" in server.last_error
    history = " ".join(ServerCheck.objects.filter(server=server).values_list("error", flat=True))
    audit = " ".join(str(event.changes) for event in AuditEvent.objects.all())
    for text in (server.last_error, history, audit, viewer_sees(client, personas, server)):
        assert TOKEN not in text


def test_stored_secrets_do_not_follow_a_new_destination(client, personas, listener):
    """Testing or saving a configuration that sends the stored secrets somewhere else
    needs their values again; the test of a configuration is audited."""
    manager = personas.principal("MANAGER")
    server = services.create_server(
        manager,
        name="saas",
        transport="streamable_http",
        url="http://127.0.0.1:9/mcp",
        headers={"Authorization": "Bearer ${TOKEN}"},
        secrets={"TOKEN": TOKEN},
    )
    moved = {"url": f"http://127.0.0.1:{listener.server_address[1]}/collect"}
    with pytest.raises(ServiceError, match="enter the value of TOKEN again"):
        services.test_configuration(manager, moved, instance=server)
    with pytest.raises(ServiceError, match="enter the value of TOKEN again"):
        services.update_server(manager, server, **moved)
    assert listener.seen == []
    # With the value entered again, it goes there, and the test is in the audit log.
    services.test_configuration(manager, {**moved, "secrets": {"TOKEN": "typed"}}, instance=server)
    assert AuditEvent.objects.filter(action="server.test_config", target_id=str(server.pk))
    # The same destination (a new path on it) keeps the stored secrets.
    services.update_server(manager, server, url="http://127.0.0.1:9/other")


# --- hostile or broken servers ---------------------------------------------------------
def test_nul_characters_from_a_server_are_dropped(personas):
    server = make_server(personas.org_a)
    result = TestResult(
        ok=True, timings={"total_ms": 5.0}, server=ServerInfo(name="evil\x00", instructions="x\x00")
    )
    services.record_check(server.pk, result)
    server.refresh_from_db()
    assert (server.server_name, server.instructions) == ("evil", "x")
    assert operations.without_nul({"a\x00": ["b\x00"]}) == {"a": ["b"]}


def test_duplicate_or_overlong_tool_names_are_not_drift(personas):
    system = personas.principal("ADMIN")
    server = make_server(personas.org_a)
    tools = [listed("dup", "first"), listed("dup", "second"), listed("n" * 201, "x")]
    services.apply_catalog(system, server, catalog(*tools))
    server.refresh_from_db()
    assert list(server.tools.values_list("name", "description")) == [("dup", "first")]
    assert not services.catalog_drifted(server, TestResult(ok=True, tools=tools))


@pytest.fixture
def undecryptable(personas):
    field = MCPServer._meta.get_field("secrets")
    with override_settings(ARGUS_ENCRYPTION_KEYS=[os.urandom(32)]):
        token = field.encrypt({"TOKEN": "old"})
    return make_server(
        personas.org_a,
        transport="streamable_http",
        command="",
        url="http://127.0.0.1:9/mcp",
        headers={"Authorization": "Bearer ${TOKEN}"},
        secrets=token,
        secret_names=["TOKEN"],
        status=ServerStatus.ONLINE,
    )


def test_secrets_that_cannot_be_decrypted_can_be_entered_again(personas, undecryptable):
    manager = personas.principal("MANAGER")
    with pytest.raises(ServiceError, match="cannot be decrypted") as refused:
        services.update_server(manager, undecryptable, description="x")
    assert refused.value.field == "secrets"
    server = services.update_server(manager, undecryptable, secrets={"TOKEN": "new"})
    assert server.decrypted_secrets() == {"TOKEN": "new"}


def test_a_check_of_a_server_whose_secrets_cannot_be_decrypted_fails(personas, undecryptable):
    checked = services.run_check(undecryptable.pk)
    assert checked.status == ServerStatus.OFFLINE
    assert "cannot be decrypted" in checked.last_error


# --- sessions ---------------------------------------------------------
def demo_children() -> set[int]:
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if "tools.demo_server" in " ".join(child.cmdline())
    }


def test_a_caller_who_gives_up_while_a_session_opens_leaves_nothing_behind():
    pool = SessionPool(max_sessions=4, idle_seconds=60)
    argv = demo_command()
    before = demo_children()
    try:
        for server_id in range(3):
            spec = ConnectionSpec(
                server_id=900 + server_id, config_version=1, name="demo", transport="stdio",
                timeout_s=15.0, command=argv[0], args=tuple(argv[1:]), cwd=ROOT,
            )  # fmt: skip
            cancel = threading.Event()
            threading.Timer(0.1, cancel.set).start()
            with pytest.raises(RequestCancelled):
                pool.run(operations.acall_tool(spec, "echo", {"text": "x"}), cancel=cancel)
        deadline = time.monotonic() + 10
        while demo_children() - before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert demo_children() - before == set()
        assert pool.snapshot() == []
    finally:
        pool.close_all()


def test_processes_cannot_be_inspected_by_their_stdio_servers():
    """Argus makes itself non-dumpable, so a stdio server running as the same (non-root)
    user cannot read the secrets in Argus's environment through /proc."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE


# --- drift acceptance ---------------------------------------------------------
def test_only_the_reviewed_definition_is_accepted(client, personas):
    system = personas.principal("ADMIN")
    server = make_server(personas.org_a)
    services.apply_catalog(system, server, catalog(listed("t", "v1")))
    services.apply_catalog(system, server, catalog(listed("t", "v2 harmless")))
    tool = server.tools.get(name="t")
    client.force_login(personas.manager)
    reviewed = client.get(f"/api/v1/tools/{tool.pk}/").json()["definition_hash"]
    services.apply_catalog(system, server, catalog(listed("t", "v3 exfiltrate secrets")))
    url = f"/api/v1/tools/{tool.pk}/accept-change/"
    response = client.post(url, {"definition_hash": reviewed}, "application/json")
    assert response.status_code == 409
    assert "changed again" in response.json()["detail"]
    tool.refresh_from_db()
    assert tool.state == ToolState.CHANGED
    with pytest.raises(Conflict):
        services.accept_tool_change(personas.principal("MANAGER"), tool, reviewed_hash=reviewed)
    current = tool.definition_hash
    assert client.post(url, {"definition_hash": current}, "application/json").status_code == 200


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serializes writers")
@pytest.mark.django_db(transaction=True)
def test_an_acceptance_during_a_sync_is_kept(monkeypatch):
    personas = make_personas()
    admin = personas.principal("ADMIN")
    server = make_server(personas.org_a)
    services.apply_catalog(admin, server, catalog(listed("t", "v1")))
    services.apply_catalog(admin, server, catalog(listed("t", "v2")))
    tool = Tool.objects.get(server=server, name="t")
    real = services.listed_tool_fields
    threads = []

    def accept_meanwhile(item, now):
        if not threads:

            def accept():
                try:
                    services.accept_tool_change(personas.principal("MANAGER"), tool)
                finally:
                    connection.close()

            threads.append(threading.Thread(target=accept))
            threads[0].start()
            time.sleep(0.3)  # the accept now waits for the sync's lock on the tool
        return real(item, now)

    monkeypatch.setattr(services, "listed_tool_fields", accept_meanwhile)
    services.apply_catalog(admin, server, catalog(listed("t", "v2")))
    threads[0].join(20)
    tool.refresh_from_db()
    assert (tool.state, tool.pinned_by_id) == (ToolState.ACTIVE, personas.manager.pk)
