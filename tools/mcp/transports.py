"""Open the transport of a connection spec: the SDK's stdio, streamable HTTP and SSE
clients, and our WebSocket client (the SDK has none)."""

import collections
import contextlib
import os
import threading
from collections.abc import AsyncIterator

import anyio
import httpx2
from django.conf import settings
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from argus.errors import ServiceError
from tools.choices import TRANSPORT_SCHEMES, Transport
from tools.mcp.connection import ConnectionSpec, child_environment
from tools.mcp.destinations import checked_socket, http_client
from tools.mcp.errors import ConnectFailed
from tools.mcp.websocket import MAX_MESSAGE_SIZE, websocket_client
from tools.network import check_url

# How long a network transport may stay silent on a held-open stream before it is
# considered dead; pooled sessions are checked long before that.
STREAM_READ_TIMEOUT = 300.0


class StderrTail:
    """The last lines a stdio server wrote to stderr, kept in memory (bounded), for
    error messages: a pipe drained by a daemon thread."""

    def __init__(self, max_lines: int = 40):
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w", encoding="utf-8")
        self._reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._drain, daemon=True, name="mcp-stderr")
        self._thread.start()

    def _drain(self):
        with contextlib.suppress(OSError, ValueError):
            for line in self._reader:
                self.lines.append(line.rstrip()[:500])
        with contextlib.suppress(OSError):
            self._reader.close()

    def close(self):
        """Close our end of the pipe; the thread ends once the child's end closes too."""
        with contextlib.suppress(OSError):
            self.writer.close()

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line)


async def check_destination(spec: ConnectionSpec) -> None:
    """Refuse forbidden destinations again at connect time (DNS may have changed)."""
    try:
        await anyio.to_thread.run_sync(
            lambda: check_url(spec.url, schemes=TRANSPORT_SCHEMES[spec.transport])
        )
    except ServiceError as exc:
        raise ConnectFailed(exc.message, reason="forbidden_destination") from None


@contextlib.asynccontextmanager
async def open_transport(spec: ConnectionSpec, stderr: StderrTail | None = None) -> AsyncIterator:
    """Yield ``(read_stream, write_stream)`` for the spec's transport.

    Raises :class:`ConnectFailed` when the process cannot start or the destination is
    refused; connection errors of network transports surface from the session.
    """
    if spec.transport == Transport.STDIO:
        if not settings.ARGUS_ALLOW_STDIO:
            raise ConnectFailed(
                "stdio servers are turned off on this installation (ARGUS_ALLOW_STDIO)",
                reason="stdio_disabled",
            )
        if spec.cwd and not os.path.isdir(spec.cwd):
            raise ConnectFailed(
                f"working directory {spec.cwd!r} does not exist", reason="command_not_found"
            )
        parameters = StdioServerParameters(
            command=spec.command,
            args=list(spec.args),
            env=child_environment(spec.env),
            cwd=spec.cwd or None,
        )
        errlog = stderr.writer if stderr is not None else open(os.devnull, "w")  # noqa: SIM115
        try:
            async with stdio_client(parameters, errlog=errlog) as streams:
                yield streams
        except FileNotFoundError:
            raise ConnectFailed(
                f"command not found: {spec.command!r} (is it installed and on PATH?)",
                reason="command_not_found",
            ) from None
        except PermissionError:
            raise ConnectFailed(
                f"command {spec.command!r} is not executable (permission denied)",
                reason="command_not_found",
            ) from None
        finally:
            if stderr is None:
                errlog.close()
        return
    await check_destination(spec)
    if spec.transport == Transport.STREAMABLE_HTTP:
        client = http_client(
            headers=spec.headers,
            timeout=httpx2.Timeout(spec.timeout_s, read=STREAM_READ_TIMEOUT),
        )
        async with (
            client,
            streamable_http_client(
                spec.url, http_client=client, max_sse_event_size=MAX_MESSAGE_SIZE
            ) as streams,
        ):
            yield streams
    elif spec.transport == Transport.SSE:
        async with sse_client(
            spec.url,
            headers=spec.headers,
            timeout=spec.timeout_s,
            sse_read_timeout=STREAM_READ_TIMEOUT,
            httpx_client_factory=http_client,
        ) as streams:
            yield streams
    elif spec.transport == Transport.WEBSOCKET:
        sock = await checked_socket(spec.url, spec.timeout_s)
        async with websocket_client(
            spec.url, headers=spec.headers, open_timeout=spec.timeout_s, sock=sock
        ) as streams:
            yield streams
    else:
        raise ConnectFailed(f"unknown transport {spec.transport!r}", reason="bad_transport")
