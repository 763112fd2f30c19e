"""MCP over WebSocket (tools.mcp.websocket): handshake rules, failures, limits."""

import json
import time
from collections.abc import Awaitable, Callable

import anyio
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus

from tests.support.mcp import running_demo_server
from tools.demo_server import DemoServer
from tools.mcp.websocket import (
    MAX_MESSAGE_SIZE,
    MCP_SUBPROTOCOL,
    SubprotocolRefusedError,
    listening_port,
    websocket_client,
    websocket_server,
)

pytestmark = pytest.mark.anyio

Reply = Callable[[ServerConnection, dict], Awaitable[None]]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def scripted(on_request: Reply) -> Callable[[ServerConnection], Awaitable[None]]:
    """A hand-written MCP peer: answers initialize, hands other requests to ``on_request``."""

    async def handle(websocket: ServerConnection) -> None:
        async for frame in websocket:
            message = json.loads(frame)
            if "id" not in message:
                continue
            if message["method"] == "initialize":
                await websocket.send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "result": {
                                "protocolVersion": message["params"]["protocolVersion"],
                                "capabilities": {},
                                "serverInfo": {"name": "scripted", "version": "0"},
                            },
                        }
                    )
                )
            else:
                await on_request(websocket, message)

    return handle


async def answer(websocket: ServerConnection, message: dict) -> None:
    await websocket.send(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}))


def url_of(listener) -> str:
    return f"ws://127.0.0.1:{listening_port(listener)}/mcp"


async def test_a_session_runs_over_the_in_process_server():
    demo = DemoServer()
    with anyio.fail_after(20):
        async with (
            websocket_server(demo.mcp, "127.0.0.1", 0) as listener,
            websocket_client(url_of(listener)) as (read_stream, write_stream),
            ClientSession(read_stream, write_stream) as session,
        ):
            initialized = await session.initialize()
            result = await session.call_tool("echo", {"text": "over a socket"})
    assert initialized.server_info.name == "argus-demo"
    assert result.content[0].text == "over a socket"


async def test_large_messages_fit_under_the_cap():
    with running_demo_server("websocket") as url, anyio.fail_after(60):
        async with (
            websocket_client(url) as (read_stream, write_stream),
            ClientSession(read_stream, write_stream) as session,
        ):
            await session.initialize()
            result = await session.call_tool("large_payload", {"kb": 4096})
    assert len(result.content[0].text) == 4096 * 1024


async def test_a_server_without_the_mcp_subprotocol_is_refused():
    async def plain(websocket: ServerConnection) -> None:
        await websocket.wait_closed()

    with anyio.fail_after(20):
        async with serve(plain, "127.0.0.1", 0) as listener:
            url = url_of(listener)
            with pytest.raises(SubprotocolRefusedError) as refused:
                async with websocket_client(url):
                    pytest.fail("connected without the mcp subprotocol")
    assert str(refused.value) == (
        f"{url} did not accept the 'mcp' WebSocket subprotocol; it is not an MCP WebSocket endpoint"
    )


async def test_the_server_refuses_clients_without_mcp_wrong_paths_and_foreign_origins():
    demo = DemoServer()
    with anyio.fail_after(20):
        async with websocket_server(demo.mcp, "127.0.0.1", 0) as listener:
            port = listening_port(listener)
            with pytest.raises(InvalidStatus) as no_subprotocol:
                async with connect(f"ws://127.0.0.1:{port}/mcp"):
                    pass
            with pytest.raises(InvalidStatus) as wrong_path:
                async with connect(f"ws://127.0.0.1:{port}/", subprotocols=[MCP_SUBPROTOCOL]):
                    pass
            with pytest.raises(InvalidStatus) as foreign_origin:
                async with connect(
                    f"ws://127.0.0.1:{port}/mcp",
                    subprotocols=[MCP_SUBPROTOCOL],
                    origin="https://evil.example",
                ):
                    pass
            async with connect(
                f"ws://127.0.0.1:{port}/mcp",
                subprotocols=[MCP_SUBPROTOCOL],
                origin=f"http://localhost:{port}",
            ) as local_page:
                assert local_page.subprotocol == "mcp"
    assert no_subprotocol.value.response.status_code == 400
    assert wrong_path.value.response.status_code == 404
    assert foreign_origin.value.response.status_code == 403


@pytest.mark.parametrize("abrupt", [False, True], ids=["close", "drop"])
async def test_a_server_that_goes_away_fails_the_pending_request(abrupt):
    async def go_away(websocket: ServerConnection, message: dict) -> None:
        if abrupt:
            websocket.transport.abort()
        else:
            await websocket.close()

    async with serve(scripted(go_away), "127.0.0.1", 0, subprotocols=[MCP_SUBPROTOCOL]) as server:
        with anyio.fail_after(20):
            async with (
                websocket_client(url_of(server)) as (read_stream, write_stream),
                ClientSession(read_stream, write_stream) as session,
            ):
                await session.initialize()
                started = time.monotonic()
                with pytest.raises(MCPError) as failed:
                    await session.call_tool("echo", {"text": "anyone?"})
                elapsed = time.monotonic() - started
    assert failed.value.error.code == types.CONNECTION_CLOSED
    assert elapsed < 5


async def test_an_oversized_frame_closes_the_connection_and_fails_the_request():
    async def flood(websocket: ServerConnection, message: dict) -> None:
        await websocket.send("x" * (MAX_MESSAGE_SIZE + 1))

    async with serve(
        scripted(flood), "127.0.0.1", 0, subprotocols=[MCP_SUBPROTOCOL], max_size=None
    ) as server:
        with anyio.fail_after(20):
            async with (
                websocket_client(url_of(server)) as (read_stream, write_stream),
                ClientSession(read_stream, write_stream) as session,
            ):
                await session.initialize()
                with pytest.raises(MCPError) as failed:
                    await session.send_ping()
    assert failed.value.error.code == types.CONNECTION_CLOSED


async def test_an_unparseable_frame_reaches_the_message_handler_and_the_session_survives():
    faults = []

    async def garble_then_answer(websocket: ServerConnection, message: dict) -> None:
        await websocket.send("this is not JSON-RPC")
        await answer(websocket, message)

    async def on_message(message) -> None:
        if isinstance(message, Exception):
            faults.append(message)

    async with serve(
        scripted(garble_then_answer), "127.0.0.1", 0, subprotocols=[MCP_SUBPROTOCOL]
    ) as server:
        with anyio.fail_after(20):
            async with (
                websocket_client(url_of(server)) as (read_stream, write_stream),
                ClientSession(read_stream, write_stream, message_handler=on_message) as session,
            ):
                await session.initialize()
                await session.send_ping()
                await session.send_ping()
                while len(faults) < 2:
                    await anyio.sleep(0.01)
    assert all(isinstance(fault, ValueError) for fault in faults)


async def test_leaving_the_client_closes_the_connection():
    closed = anyio.Event()

    async def watch(websocket: ServerConnection) -> None:
        await scripted(answer)(websocket)
        closed.set()

    async with serve(watch, "127.0.0.1", 0, subprotocols=[MCP_SUBPROTOCOL]) as server:
        with anyio.fail_after(20):
            async with (
                websocket_client(url_of(server)) as (read_stream, write_stream),
                ClientSession(read_stream, write_stream) as session,
            ):
                await session.initialize()
            await closed.wait()


async def test_redirects_to_another_origin_are_refused():
    """The URL was checked against forbidden networks; where it redirects was not."""
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidHandshake
    from websockets.http11 import Response

    def redirect(connection, request):
        return Response(302, "Found", Headers({"Location": "ws://169.254.169.254/mcp"}))

    async with serve(lambda ws: None, "127.0.0.1", 0, process_request=redirect) as listener:
        url = f"ws://127.0.0.1:{listening_port(listener)}/mcp"
        with pytest.raises(InvalidHandshake, match="another origin"):
            async with websocket_client(url, open_timeout=5):
                pass
