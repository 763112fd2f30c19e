"""The demo MCP server, over each of its four transports, in real client sessions."""

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio
import httpx2
import mcp_types as types
import pytest
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from tests.support.mcp import NETWORK_TRANSPORTS, demo_command, running_demo_server
from tests.support.processes import ROOT, child_env
from tools import demo_server
from tools.mcp.websocket import websocket_client

TRANSPORTS = ("stdio", *NETWORK_TRANSPORTS)
REVISION_1_TOOLS = {
    "echo", "calculate", "get_weather", "slow_operation", "random_failure", "always_fail",
    "tool_error", "needs_env", "large_payload", "progress", "server_stats", "reconfigure",
}  # fmt: skip


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def urls():
    """One demo server per network transport, shared by the tests that change nothing."""
    with ExitStack() as stack:
        yield {
            transport: stack.enter_context(running_demo_server(transport))
            for transport in NETWORK_TRANSPORTS
        }


def open_streams(transport: str, url: str | None = None, *, command=None, env=None):
    match transport:
        case "stdio":
            command = command or demo_command()
            parameters = StdioServerParameters(command=command[0], args=command[1:], env=env)
            return stdio_client(parameters)
        case "http":
            return streamable_http_client(url)
        case "sse":
            return sse_client(url)
        case "websocket":
            return websocket_client(url)
    raise ValueError(transport)


@asynccontextmanager
async def demo_session(
    transport: str, url: str | None = None, *, command=None, env=None, **options
) -> AsyncIterator[ClientSession]:
    """An initialized session with the demo server over ``transport``."""
    async with (
        open_streams(transport, url, command=command, env=env) as streams,
        ClientSession(streams[0], streams[1], **options) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def stats(session: ClientSession) -> dict:
    result = await session.call_tool("server_stats", {})
    assert not result.is_error, text_of(result)
    return result.structured_content


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_handshake_and_catalog(transport, urls):
    with anyio.fail_after(30):
        async with (
            open_streams(transport, urls.get(transport)) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            initialized = await session.initialize()
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}

    assert initialized.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    assert initialized.server_info.name == "argus-demo"
    assert initialized.server_info.version == demo_server.VERSION
    assert initialized.instructions == demo_server.INSTRUCTIONS
    assert initialized.capabilities.tools.list_changed is True
    assert set(tools) == REVISION_1_TOOLS
    for tool in tools.values():
        assert tool.description, tool.name
        hints = tool.annotations
        assert None not in (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ), tool.name
    assert tools["echo"].annotations.read_only_hint is True
    assert tools["reconfigure"].annotations.read_only_hint is False
    assert tools["reconfigure"].annotations.destructive_hint is False
    operation = tools["calculate"].input_schema["properties"]["operation"]
    assert operation["enum"] == ["add", "subtract", "multiply", "divide"]
    assert tools["calculate"].input_schema["required"] == ["operation", "a", "b"]
    assert tools["large_payload"].input_schema["properties"]["kb"]["maximum"] == 4096


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_loopback_names_are_served_and_foreign_hosts_refused(transport, urls):
    """The SDK's DNS-rebinding guard admits 127.0.0.1 and localhost, nothing else."""
    local_url = urls[transport].replace("127.0.0.1", "localhost")
    with anyio.fail_after(30):
        async with demo_session(transport, local_url) as session:
            echoed = await session.call_tool("echo", {"text": "local"})
    assert text_of(echoed) == "local"

    async with httpx2.AsyncClient(timeout=10) as client:
        refused = await client.get(
            urls[transport], headers={"Host": "rebound.example", "Accept": "text/event-stream"}
        )
    assert refused.status_code == 421


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echo_and_calculate(transport, urls):
    with anyio.fail_after(30):
        async with demo_session(transport, urls.get(transport)) as session:
            echoed = await session.call_tool("echo", {"text": "héllo, world"})
            added = await session.call_tool("calculate", {"operation": "add", "a": 2, "b": 3})
            divided = await session.call_tool("calculate", {"operation": "divide", "a": 7, "b": 2})
            by_zero = await session.call_tool("calculate", {"operation": "divide", "a": 1, "b": 0})
            unknown = await session.call_tool("calculate", {"operation": "modulo", "a": 1, "b": 2})

    assert not echoed.is_error
    assert text_of(echoed) == "héllo, world"
    assert added.structured_content == {"result": 5.0}
    assert divided.structured_content == {"result": 3.5}
    assert by_zero.is_error
    assert "cannot divide by zero" in text_of(by_zero)
    assert unknown.is_error


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_progress_notifications_reach_the_callback(transport, urls):
    reports = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    with anyio.fail_after(30):
        async with demo_session(transport, urls.get(transport)) as session:
            result = await session.call_tool(
                "progress", {"steps": 3}, progress_callback=on_progress
            )

    assert text_of(result) == "completed 3 steps"
    assert reports == [(step, 3, f"step {step} of 3") for step in (1, 2, 3)]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelling_slow_operation_stops_it_on_the_server(transport, urls):
    with anyio.fail_after(30):
        async with demo_session(transport, urls.get(transport)) as session:
            before = (await stats(session))["cancelled_slow_operations"]
            started = time.monotonic()
            with anyio.move_on_after(0.3) as scope:
                await session.call_tool("slow_operation", {"delay_ms": 20_000})
            elapsed = time.monotonic() - started

            # The cancel notification and the next request may travel separately (two
            # HTTP requests), so the count can lag the cancellation a little.
            deadline = time.monotonic() + 10
            while (counted := (await stats(session))["cancelled_slow_operations"]) == before:
                assert time.monotonic() < deadline, "the server never counted the cancellation"
                await anyio.sleep(0.05)

    assert scope.cancelled_caught
    assert elapsed < 2
    assert counted == before + 1


async def until_all_heard(events: list[anyio.Event], nudge) -> None:
    """Wait until every event is set, calling ``nudge`` again while some are not.

    Streamable HTTP delivers server notifications on a GET stream the client opens in
    the background after the handshake; one sent before it is up is lost.
    """
    for _ in range(40):
        with anyio.move_on_after(0.5):
            for event in events:
                await event.wait()
            return
        await nudge()
    raise AssertionError("not every client heard of the change")


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reconfigure_announces_the_new_catalog(transport):
    """Every connected client hears of the change, not only the one that made it."""
    sessions_count = 1 if transport == "stdio" else 2
    heard = [anyio.Event() for _ in range(sessions_count)]

    def listener(event):
        async def handle(message) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                event.set()

        return handle

    with ExitStack() as stack, anyio.fail_after(30):
        url = None if transport == "stdio" else stack.enter_context(running_demo_server(transport))
        async with demo_session(transport, url, message_handler=listener(heard[0])) as session:
            others = []
            for event in heard[1:]:
                other = demo_session(transport, url, message_handler=listener(event))
                others.append((other, await other.__aenter__()))
            try:
                result = await session.call_tool("reconfigure", {"revision": 2})
                await until_all_heard(
                    heard, lambda: session.call_tool("reconfigure", {"revision": 2})
                )
                revised = {tool.name: tool for tool in (await session.list_tools()).tools}
                for _, other in others:
                    other_names = {tool.name for tool in (await other.list_tools()).tools}
                    assert "echo_upper" in other_names
                upper = await session.call_tool("echo_upper", {"text": "quiet"})
                await session.call_tool("reconfigure", {"revision": 1})
                restored = {tool.name for tool in (await session.list_tools()).tools}
            finally:
                for other, _ in reversed(others):
                    await other.__aexit__(None, None, None)

    assert not result.is_error, text_of(result)
    assert set(revised) == REVISION_1_TOOLS | {"echo_upper"}
    assert revised["echo"].description.endswith(" (revision 2)")
    assert text_of(upper) == "QUIET"
    assert restored == REVISION_1_TOOLS


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resources_and_prompts(transport, urls):
    with anyio.fail_after(30):
        async with demo_session(transport, urls.get(transport)) as session:
            resources = (await session.list_resources()).resources
            readme = await session.read_resource("demo://readme")
            prompts = (await session.list_prompts()).prompts
            prompt = await session.get_prompt("summarize", {"text": "Argus records calls."})

    assert [(str(r.uri), r.mime_type) for r in resources] == [("demo://readme", "text/markdown")]
    assert readme.contents[0].text.startswith("# Argus demo MCP server")
    assert [(p.name, [(a.name, a.required) for a in p.arguments]) for p in prompts] == [
        ("summarize", [("text", True)])
    ]
    assert "Argus records calls." in prompt.messages[0].content.text


@pytest.mark.anyio
async def test_tool_answers_are_deterministic():
    env = {"ARGUS_DEMO_SECRET": "hunter22"}
    with anyio.fail_after(30):
        async with demo_session("stdio", env=env) as session:
            weather = await session.call_tool("get_weather", {"city": "Paris"})
            weather_again = await session.call_tool("get_weather", {"city": "  pARIS "})
            elsewhere = await session.call_tool("get_weather", {"city": "Lagos"})
            failing = await session.call_tool("random_failure", {"rate": 1, "seed": 7})
            passing = await session.call_tool("random_failure", {"rate": 0, "seed": 7})
            draws = [
                (await session.call_tool("random_failure", {"rate": 0.5, "seed": seed})).is_error
                for seed in (*range(20), *range(20))
            ]
            always = await session.call_tool("always_fail", {})
            reported = await session.call_tool("tool_error", {})
            secret = await session.call_tool("needs_env", {"name": "ARGUS_DEMO_SECRET"})
            missing = await session.call_tool("needs_env", {"name": "ARGUS_DEMO_UNSET"})
            payload = await session.call_tool("large_payload", {"kb": 64})
            too_large = await session.call_tool("large_payload", {"kb": 4097})
            served = await stats(session)

    assert weather.structured_content == weather_again.structured_content | {"city": "Paris"}
    assert weather.structured_content["conditions"] in demo_server.CONDITIONS
    assert -10 <= weather.structured_content["temperature_c"] <= 35
    assert weather.structured_content != elsewhere.structured_content | {"city": "Paris"}
    assert failing.is_error and "random failure" in text_of(failing)
    assert not passing.is_error
    assert draws[:20] == draws[20:]
    assert True in draws and False in draws
    assert always.is_error and "always_fail failed" in text_of(always)
    assert reported.is_error and "tool_error reports an error" in text_of(reported)
    assert secret.structured_content == {"name": "ARGUS_DEMO_SECRET", "is_set": True, "length": 8}
    assert "hunter22" not in text_of(secret)
    assert missing.structured_content == {"name": "ARGUS_DEMO_UNSET", "is_set": False, "length": 0}
    assert len(text_of(payload)) == 64 * 1024
    assert too_large.is_error and "4096" in text_of(too_large)
    assert served["pid"] != os.getpid()
    assert served["calls"] == 52  # every call above, this one included
    assert served["revision"] == 1


@pytest.mark.anyio
async def test_the_revision_can_come_from_the_environment():
    with anyio.fail_after(30):
        async with demo_session("stdio", env={"ARGUS_DEMO_REVISION": "2"}) as session:
            names = {tool.name for tool in (await session.list_tools()).tools}
    assert names == REVISION_1_TOOLS | {"echo_upper"}


def test_an_unknown_revision_stops_the_server_with_a_clear_error():
    finished = subprocess.run(
        demo_command(),
        env={"PATH": os.environ["PATH"], "ARGUS_DEMO_REVISION": "7"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert "ARGUS_DEMO_REVISION must be one of 1, 2, not '7'" in finished.stderr
    assert finished.stdout == ""


def test_stdio_needs_nothing_but_path_and_speaks_only_protocol_on_stdout():
    request = (
        '{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {'
        '"protocolVersion": "2025-11-25", "capabilities": {},'
        ' "clientInfo": {"name": "test", "version": "0"}}}\n'
    )
    finished = subprocess.run(
        demo_command(),
        env={"PATH": os.environ["PATH"]},
        cwd="/",
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = finished.stdout.splitlines()
    assert len(lines) == 1, finished.stdout + finished.stderr
    answer = types.jsonrpc_message_adapter.validate_json(lines[0])
    assert answer.id == 1
    assert answer.result["serverInfo"]["name"] == "argus-demo"


def test_django_finds_the_command():
    assert get_commands()["demo-mcp-server"] == "tools"


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_command_rejects_a_port_out_of_range(port):
    with pytest.raises(CommandError, match="--port must be between 1 and 65535"):
        call_command("demo-mcp-server", "--port", port)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "70000"], "--port must be between 1 and 65535, not 70000"),
        (["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
        (["--transport", "carrier-pigeon"], "argument --transport: invalid choice"),
    ],
)
def test_command_line_errors_are_clear_and_fail(arguments, message):
    finished = subprocess.run(
        [sys.executable, "-m", "argus", "demo-mcp-server", *arguments],
        env=child_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert message in finished.stderr
    assert finished.stdout == ""


@pytest.mark.anyio
async def test_the_command_serves_stdio_without_noise_on_stdout():
    faults = []

    async def on_message(message) -> None:
        if isinstance(message, Exception):
            faults.append(message)

    command = [sys.executable, "-m", "argus", "demo-mcp-server"]
    with anyio.fail_after(60):
        async with demo_session(
            "stdio", command=command, env=child_env(), message_handler=on_message
        ) as session:
            echoed = await session.call_tool("echo", {"text": "via manage.py"})
    assert text_of(echoed) == "via manage.py"
    assert faults == []


def test_a_taken_port_is_a_clear_error():
    with running_demo_server("websocket") as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        finished = subprocess.run(
            [*demo_command(), "--transport", "http", "--port", port],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert finished.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in finished.stderr
    assert finished.stdout == ""
