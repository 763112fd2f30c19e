"""Errors of the MCP client layer, each with a message a person can act on."""


class MCPClientError(Exception):
    """Talking to an MCP server failed; ``reason`` is a short machine-readable code."""

    reason = "mcp_error"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ConnectFailed(MCPClientError):
    """No session could be opened: the process would not start, the URL did not answer,
    the server crashed or refused during ``initialize``."""

    reason = "connect_failed"


class ConnectionLost(MCPClientError):
    """The session died while a request was in flight (the answer never came)."""

    reason = "connection_lost"


class RequestTimeout(MCPClientError):
    """No answer within the bound; the request was cancelled on the server."""

    reason = "timeout"


class RequestCancelled(MCPClientError):
    """The caller cancelled the request; the server was told."""

    reason = "cancelled"


class ServerError(MCPClientError):
    """The server answered with a JSON-RPC error (``code`` is its error code)."""

    reason = "server_error"

    def __init__(self, message: str, *, code: int | None = None, data=None):
        super().__init__(message)
        self.code = code
        self.data = data


class PoolExhausted(MCPClientError):
    """Every pooled session is busy and the pool is full."""

    reason = "pool_exhausted"
