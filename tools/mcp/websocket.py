"""MCP over WebSocket: one JSON-RPC message per text frame, under the ``mcp`` subprotocol.

The MCP SDK (2.x) ships no WebSocket transport, so this is ours, on the ``websockets``
library's asyncio API. Both halves hand the SDK the same pair of streams its own
transports do (``SessionMessage`` items, parse failures delivered as ``Exception``
items), so a ``ClientSession`` or a server's run loop works over it unchanged. It needs
the asyncio backend of anyio.
"""

import logging
import re
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import mcp_types as types
from mcp.client._transport import TransportStreams
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.models import InitializationOptions

# The SDK's own transports build their streams with this; the dispatcher reads the
# sender's contextvars from it, which plain memory streams do not carry.
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server as WebSocketListener
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

logger = logging.getLogger(__name__)

MCP_SUBPROTOCOL = Subprotocol("mcp")
# One JSON-RPC message per frame; bigger frames close the connection (code 1009).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# Bound on the closing handshake, so leaving a session never waits long on a dead peer.
CLOSE_TIMEOUT = 5.0

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Browsers always send Origin; other clients usually do not. A page on another site
# must not reach a server that only listens on this machine.
LOOPBACK_ORIGINS: tuple[Origin | re.Pattern[str] | None, ...] = (
    None,
    re.compile(r"https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?"),
)


class SubprotocolRefusedError(ConnectionError):
    """The WebSocket server accepted the connection but not the ``mcp`` subprotocol."""


def _origin(uri: str) -> tuple[bool, str, int]:
    parsed = parse_uri(uri)
    return (parsed.secure, parsed.host.lower(), parsed.port)


class same_origin_connect(connect):
    """``connect`` that follows a redirect only within the URL's origin, like the SDK's
    HTTP transports: the URL was checked against forbidden networks, its redirect was
    not."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        target = super().process_redirect(exc)
        if isinstance(target, Exception) or _origin(target) == _origin(str(self.uri)):
            return target
        return InvalidHandshake(f"refused a redirect to another origin: {target}")


@asynccontextmanager
async def websocket_client(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    open_timeout: float = 10,
    sock: socket.socket | None = None,
) -> AsyncIterator[TransportStreams]:
    """Connect to an MCP server at ``url`` (``ws://`` or ``wss://``).

    Yields ``(read_stream, write_stream)`` for ``ClientSession``. When the server closes
    the connection the read stream ends, so requests still waiting fail with
    ``CONNECTION_CLOSED`` instead of hanging.

    Raises:
        SubprotocolRefusedError: The server did not select the ``mcp`` subprotocol.
        websockets.exceptions.InvalidHandshake: The server refused the handshake
            (``InvalidStatus`` for an HTTP answer such as 404), or the URL is invalid
            (``InvalidURI``).
        OSError: The connection could not be opened.
        TimeoutError: The handshake took longer than ``open_timeout`` seconds.

    ``sock``, when given, is an already connected socket to speak over (Argus passes
    one connected to a checked address); the URL still names the host for TLS.
    """
    async with same_origin_connect(
        url,
        **({"sock": sock} if sock is not None else {}),
        subprotocols=[MCP_SUBPROTOCOL],
        additional_headers=headers,
        open_timeout=open_timeout,
        close_timeout=CLOSE_TIMEOUT,
        max_size=MAX_MESSAGE_SIZE,
    ) as websocket:
        try:
            if websocket.subprotocol != MCP_SUBPROTOCOL:
                # A server offering another one fails the handshake in websockets itself.
                raise SubprotocolRefusedError(
                    f"{url} did not accept the {MCP_SUBPROTOCOL!r} WebSocket subprotocol; "
                    "it is not an MCP WebSocket endpoint"
                )
            async with _message_streams(websocket, peer=url) as streams:
                yield streams
        finally:
            await _close(websocket)


async def serve_websocket_connection(
    server: MCPServer | Server,
    websocket: ServerConnection,
    initialization_options: InitializationOptions | None = None,
) -> None:
    """Run one MCP session over an accepted WebSocket until either side ends it."""
    lowlevel = _lowlevel(server)
    options = initialization_options or lowlevel.create_initialization_options()
    peer = "client {}:{}".format(*websocket.remote_address[:2])
    async with _message_streams(websocket, peer=peer) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, options)


@asynccontextmanager
async def websocket_server(
    server: MCPServer | Server,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
    path: str | None = "/mcp",
    origins: Sequence[Origin | re.Pattern[str] | None] | None = None,
    initialization_options: InitializationOptions | None = None,
) -> AsyncIterator[WebSocketListener]:
    """Serve ``server`` over WebSocket on ``host``:``port``, or on the already bound
    ``sock`` (``host`` then only decides the default ``origins``), while the block runs.

    Each connection is its own MCP session. Clients must offer the ``mcp`` subprotocol
    (others get HTTP 400) and connect to ``path`` (others get 404; ``None`` accepts any
    path). ``origins`` lists the acceptable ``Origin`` headers (``None`` in the list
    admits clients that send none); by default a loopback ``host`` admits only loopback
    origins and other hosts admit any. Port 0 picks a free port: read it with
    ``listening_port``.

    Raises:
        OSError: The address cannot be bound.
    """
    if origins is None and host in LOOPBACK_HOSTS:
        origins = LOOPBACK_ORIGINS

    async def handle(websocket: ServerConnection) -> None:
        await serve_websocket_connection(server, websocket, initialization_options)

    def check_path(connection: ServerConnection, request: Request) -> Response | None:
        if path is not None and request.path.split("?", 1)[0] != path:
            return connection.respond(404, f"No MCP endpoint here; connect to {path}\n")
        return None

    address = {"sock": sock} if sock is not None else {"host": host, "port": port}
    async with serve(
        handle,
        **address,
        origins=origins,
        subprotocols=[MCP_SUBPROTOCOL],
        process_request=check_path,
        close_timeout=CLOSE_TIMEOUT,
        max_size=MAX_MESSAGE_SIZE,
    ) as listener:
        yield listener


def listening_port(listener: WebSocketListener) -> int:
    """The TCP port ``listener`` accepts connections on (useful after binding port 0)."""
    return listener.sockets[0].getsockname()[1]


def _lowlevel(server: MCPServer | Server) -> Server:
    if isinstance(server, MCPServer):
        # MCPServer has no public stream-level entry point; the SDK's own stdio, SSE
        # and in-memory transports reach its low-level server the same way.
        return server._lowlevel_server
    return server


@asynccontextmanager
async def _message_streams(websocket: Connection, *, peer: str) -> AsyncIterator[TransportStreams]:
    """Bridge a WebSocket to the SDK's stream pair: frames in, frames out."""
    read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_reader = create_context_streams[SessionMessage](0)

    async def receive_frames() -> None:
        async with read_writer:
            try:
                async for frame in websocket:
                    await read_writer.send(_parse_frame(frame))
            except ConnectionClosedError as exc:
                logger.warning("MCP WebSocket connection with %s closed abnormally: %s", peer, exc)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the session left; nobody reads any more

    async def send_frames() -> None:
        async with write_reader:
            try:
                async for session_message in write_reader:
                    await websocket.send(_serialize(session_message))
            except ConnectionClosed:
                # The receiving side sees the same close and ends the read stream.
                logger.debug("MCP WebSocket connection with %s closed while sending", peer)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(receive_frames)
        task_group.start_soon(send_frames)
        try:
            yield read_stream, write_stream
        finally:
            task_group.cancel_scope.cancel()
            for stream in (read_stream, write_stream, read_writer, write_reader):
                stream.close()


def _parse_frame(frame: str | bytes) -> SessionMessage | Exception:
    """One frame as a message, or the parse error as a value for the session to surface."""
    try:
        message = types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
    except ValueError as exc:
        logger.warning("Unparseable MCP WebSocket frame: %s", exc)
        return exc
    return SessionMessage(message)


def _serialize(session_message: SessionMessage) -> str:
    return session_message.message.model_dump_json(by_alias=True, exclude_unset=True)


async def _close(websocket: ClientConnection) -> None:
    """Close even when the caller is being cancelled: an abandoned socket would linger."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
        await websocket.close()
