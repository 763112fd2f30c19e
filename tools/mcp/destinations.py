"""Network connections to MCP servers go only to addresses that were checked.

Checking a URL and then letting a client resolve its host again leaves a gap: a name
that answers a public address to the check and an internal one to the client (DNS
rebinding), or one that encodes differently for each. So the HTTP clients here get a
network backend that resolves, checks (``tools.network``) and connects to the very
address it checked, and WebSocket sessions get a socket opened the same way. TLS still
verifies the certificate against the URL's host name.
"""

import socket
from urllib.parse import urlsplit

import anyio
import httpcore2
import httpx2

from tools.network import DEFAULT_PORTS, checked_addresses


class CheckedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """httpcore's default backend, connecting only to checked addresses."""

    def __init__(self):
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self, host, port, timeout=None, local_address=None, socket_options=None
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await anyio.to_thread.run_sync(
            lambda: checked_addresses(host, port, f"{host}:{port}")
        )
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore2.ConnectError as exc:
                failure = exc
        raise failure or httpcore2.ConnectError(f"cannot connect to {host}:{port}")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore2.ConnectError("MCP servers are not reached over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class CheckedTransport(httpx2.AsyncHTTPTransport):
    """httpx's transport over :class:`CheckedNetworkBackend`. httpx takes no backend
    argument, so the connection pool is built again with ours (its only change)."""

    def __init__(self):
        super().__init__(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpcore2.default_ssl_context(),
            network_backend=CheckedNetworkBackend(),
        )


def http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An HTTP client for MCP transports: checked addresses only, no proxies from the
    environment, no redirects followed by httpx itself (the SDK decides, same origin)."""
    return httpx2.AsyncClient(
        headers=headers,
        timeout=timeout,
        auth=auth,
        transport=CheckedTransport(),
        trust_env=False,
        follow_redirects=False,
    )


async def checked_socket(url: str, timeout: float) -> socket.socket:
    """A TCP socket connected to a checked address of ``url``'s host (for WebSocket)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)

    def connect() -> socket.socket:
        failure: OSError | None = None
        for address in checked_addresses(host, port, url):
            try:
                return socket.create_connection((str(address), port), timeout=timeout)
            except OSError as exc:
                failure = exc
        raise failure or OSError(f"cannot connect to {host}:{port}")

    sock = await anyio.to_thread.run_sync(connect)
    sock.settimeout(None)
    return sock
