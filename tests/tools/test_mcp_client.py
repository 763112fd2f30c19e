"""The MCP client layer against real servers: the demo server over every transport, a
published server from PyPI, and the session pool's guarantees. No protocol mocks."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.mcp import demo_command, running_demo_server
from tests.support.processes import free_port, wait_until
from tools.mcp import operations
from tools.mcp.connection import ConnectionSpec
from tools.mcp.errors import RequestCancelled, RequestTimeout
from tools.mcp.pool import SessionPool

_ids = iter(range(10_000, 1_000_000))


def stdio_spec(*extra, env=None, timeout=15.0, version=1, server_id=None, command=None):
    argv = demo_command(*extra)
    return ConnectionSpec(
        server_id=server_id or next(_ids),
        config_version=version,
        name="demo",
        transport="stdio",
        timeout_s=timeout,
        command=command or argv[0],
        args=tuple(argv[1:]) if command is None else tuple(extra),
        env=env or {},
        cwd=str(Path(__file__).resolve().parents[2]),
    )


def network_spec(transport, url, timeout=15.0):
    kind = {"http": "streamable_http", "sse": "sse", "websocket": "websocket"}[transport]
    return ConnectionSpec(
        server_id=next(_ids), config_version=1, name=f"demo-{transport}", transport=kind,
        timeout_s=timeout, url=url,
    )  # fmt: skip


def text_of(result) -> str:
    return "".join(block.get("text", "") for block in result.result.get("content", []))


def stats(pool, spec) -> dict:
    async def run():
        return await operations.acall_tool(spec, "server_stats", {})

    result = pool.run(_with_pool(pool, run()))
    return result.result["structuredContent"]


async def _with_pool(pool, coroutine):
    """Run an operation against ``pool`` instead of the process's pool."""
    token = operations.POOL_OVERRIDE.set(pool)
    try:
        return await coroutine
    finally:
        operations.POOL_OVERRIDE.reset(token)


def call(pool, spec, name, arguments=None, **options):
    return pool.run(_with_pool(pool, operations.acall_tool(spec, name, arguments, **options)))


@pytest.fixture
def pool():
    pool = SessionPool(max_sessions=4, idle_seconds=60)
    yield pool
    pool.close_all()


def exercise(spec):
    """What every transport must do: initialize, list everything, call tools."""
    tested = operations.test_connection(spec)
    assert tested.ok, tested.error
    assert tested.server.name == "argus-demo"
    assert tested.tool_count >= 10
    assert {"connect_ms", "initialize_ms", "list_tools_ms", "total_ms"} <= set(tested.timings)
    catalog = operations.list_catalog(spec)
    names = {tool["name"] for tool in catalog.tools}
    assert {"echo", "calculate", "get_weather", "slow_operation", "progress"} <= names
    echo = next(tool for tool in catalog.tools if tool["name"] == "echo")
    assert echo["annotations"]["readOnlyHint"] is True
    assert catalog.resources and catalog.prompts
    assert text_of(operations.call_tool(spec, "echo", {"text": "héllo"})) == "héllo"
    divided = operations.call_tool(spec, "calculate", {"operation": "divide", "a": 1, "b": 0})
    assert divided.is_error
    seen = []
    progressed = operations.call_tool(
        spec, "progress", {"steps": 3}, progress=lambda value, total, message: seen.append(value)
    )
    assert not progressed.is_error
    assert len(seen) == 3


def test_stdio_session_to_the_demo_server():
    exercise(stdio_spec())


@pytest.mark.parametrize("transport", ["http", "sse", "websocket"])
def test_network_sessions_to_the_demo_server(transport):
    with running_demo_server(transport) as url:
        exercise(network_spec(transport, url))


def test_a_published_server_from_pypi_over_stdio():
    command = shutil.which("mcp-server-time") or str(
        Path(sys.executable).parent / "mcp-server-time"
    )
    spec = ConnectionSpec(
        server_id=next(_ids), config_version=1, name="time", transport="stdio", timeout_s=30,
        command=command, args=("--local-timezone", "UTC"),
    )  # fmt: skip
    tested = operations.test_connection(spec)
    assert tested.ok, tested.error
    catalog = operations.list_catalog(spec)
    assert "get_current_time" in {tool["name"] for tool in catalog.tools}
    result = operations.call_tool(spec, "get_current_time", {"timezone": "UTC"})
    assert not result.is_error
    assert "UTC" in text_of(result)


# --- the pool ---------------------------------------------------------------------------------
def test_the_pool_reuses_a_warm_session(pool):
    spec = stdio_spec()
    first = stats(pool, spec)["pid"]
    call(pool, spec, "echo", {"text": "x"})
    assert stats(pool, spec)["pid"] == first
    assert pool.stats["opened"] == 1
    assert pool.stats["reused"] >= 2
    assert len(pool.snapshot()) == 1


def test_idle_sessions_are_closed():
    pool = SessionPool(max_sessions=4, idle_seconds=0.3)
    try:
        spec = stdio_spec()
        first = stats(pool, spec)["pid"]
        wait_until(lambda: not pool.snapshot(), 10, "the idle session was not closed")
        assert pool.stats["closed_idle"] == 1
        assert stats(pool, spec)["pid"] != first
    finally:
        pool.close_all()


def test_a_dead_session_is_restarted_once_transparently(pool):
    spec = stdio_spec()
    pid = stats(pool, spec)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pool.snapshot()[0]["alive"], 10, "the pool did not see the death")
    assert text_of(call(pool, spec, "echo", {"text": "back"})) == "back"
    assert stats(pool, spec)["pid"] != pid
    assert pool.stats["restarted"] == 1


def test_a_configuration_change_starts_a_new_session(pool):
    spec = stdio_spec(version=1)
    first = stats(pool, spec)
    assert first["revision"] == 1
    changed = stdio_spec(env={"ARGUS_DEMO_REVISION": "2"}, version=2, server_id=spec.server_id)
    second = stats(pool, changed)
    assert second["pid"] != first["pid"]
    assert second["revision"] == 2
    # A caller still holding the older configuration gets the newer session.
    assert stats(pool, spec)["pid"] == second["pid"]
    pool.invalidate(spec.server_id)
    assert stats(pool, changed)["pid"] != second["pid"]


def test_the_pool_caps_its_sessions():
    pool = SessionPool(max_sessions=2, idle_seconds=60)
    try:
        specs = [stdio_spec() for _ in range(3)]
        for spec in specs:
            call(pool, spec, "echo", {"text": "x"})
        assert len(pool.snapshot()) == 2
        assert pool.stats["evicted"] == 1
        assert specs[0].server_id not in {row["server_id"] for row in pool.snapshot()}
    finally:
        pool.close_all()


def test_concurrent_callers_from_threads_and_an_event_loop(pool):
    spec = stdio_spec()
    results, errors = {}, []

    def worker(index):
        try:
            results[index] = text_of(call(pool, spec, "echo", {"text": f"t{index}"}))
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == {i: f"t{i}" for i in range(8)}

    async def from_a_loop():
        calls = [
            pool.arun(_with_pool(pool, operations.acall_tool(spec, "echo", {"text": f"a{i}"})))
            for i in range(5)
        ]
        return [text_of(result) for result in await asyncio.gather(*calls)]

    assert asyncio.run(from_a_loop()) == [f"a{i}" for i in range(5)]
    assert pool.stats["opened"] == 1


# --- timeouts and cancellation ------------------------------------------------------------------
def test_a_timeout_cancels_the_call_on_the_server(pool):
    spec = stdio_spec()
    stats(pool, spec)  # warm: the bound below is for the call, not for starting Python
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        call(pool, spec, "slow_operation", {"delay_ms": 10_000}, timeout=0.5)
    assert time.monotonic() - started < 3
    wait_until(
        lambda: stats(pool, spec)["cancelled_slow_operations"] == 1,
        5,
        "the server never saw the cancellation",
    )


def test_the_caller_can_cancel_a_call(pool):
    spec = stdio_spec()
    stats(pool, spec)  # warm
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(RequestCancelled):
        pool.run(
            _with_pool(
                pool,
                operations.acall_tool(spec, "slow_operation", {"delay_ms": 10_000}, timeout=30),
            ),
            cancel=cancel,
        )
    assert time.monotonic() - started < 3
    wait_until(
        lambda: stats(pool, spec)["cancelled_slow_operations"] == 1,
        5,
        "the server never saw the cancellation",
    )
    # The session is still usable afterwards.
    assert text_of(call(pool, spec, "echo", {"text": "ok"})) == "ok"


# --- isolation and bad servers ------------------------------------------------------------------
def test_a_stdio_server_gets_only_its_declared_environment(monkeypatch):
    monkeypatch.setenv("ARGUS_WORKER_ONLY_SECRET", "must-not-leak")
    spec = stdio_spec(env={"DECLARED_TOKEN": "arrives"})
    leaked = operations.call_tool(spec, "needs_env", {"name": "ARGUS_WORKER_ONLY_SECRET"})
    declared = operations.call_tool(spec, "needs_env", {"name": "DECLARED_TOKEN"})
    assert leaked.result["structuredContent"]["is_set"] is False
    assert declared.result["structuredContent"] == {
        "name": "DECLARED_TOKEN",
        "is_set": True,
        "length": len("arrives"),
    }


def script_spec(code: str, timeout=10.0):
    return ConnectionSpec(
        server_id=next(_ids), config_version=1, name="bad", transport="stdio",
        timeout_s=timeout, command=sys.executable, args=("-c", code),
    )  # fmt: skip


def test_a_missing_command_is_a_readable_failure():
    spec = ConnectionSpec(
        server_id=next(_ids), config_version=1, name="nope", transport="stdio", timeout_s=5,
        command="argus-no-such-command",
    )  # fmt: skip
    result = operations.test_connection(spec)
    assert not result.ok
    assert result.reason == "command_not_found"
    assert "argus-no-such-command" in result.error


def test_a_server_that_crashes_during_initialize():
    result = operations.test_connection(
        script_spec("import sys; sys.stderr.write('boom: bad config\\n'); sys.exit(3)")
    )
    assert not result.ok
    assert "boom: bad config" in result.error


def test_a_server_that_never_answers_initialize():
    started = time.monotonic()
    result = operations.test_connection(script_spec("import time; time.sleep(60)", timeout=1))
    assert not result.ok
    assert result.reason == "timeout"
    assert "within 1 s" in result.error
    assert time.monotonic() - started < 8


def test_an_unreachable_url():
    spec = network_spec("http", f"http://127.0.0.1:{free_port()}/mcp", timeout=3)
    started = time.monotonic()
    result = operations.test_connection(spec)
    assert not result.ok
    assert result.error
    assert time.monotonic() - started < 8


def test_a_server_that_is_not_mcp():
    """A process that prints garbage instead of JSON-RPC fails cleanly, in time."""
    result = operations.test_connection(
        script_spec("import sys, time; print('hello'); sys.stdout.flush(); time.sleep(30)", 2)
    )
    assert not result.ok


def test_no_child_processes_are_left_behind(pool):
    spec = stdio_spec()
    pid = stats(pool, spec)["pid"]
    pool.close_all()
    wait_until(lambda: not _alive(pid), 10, "the server process outlived its session")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(  # zombie: already dead, waiting to be reaped
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(state) and not state.startswith("Z")
