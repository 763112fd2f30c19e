"""Vocabularies of the tools app, with the badge colours the console renders them in."""

from django.db import models

from argus.choices import register_colors


class Transport(models.TextChoices):
    """How Argus reaches an MCP server."""

    STDIO = "stdio", "stdio (local process)"
    STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
    SSE = "sse", "SSE (legacy HTTP)"
    WEBSOCKET = "websocket", "WebSocket"


NETWORK_TRANSPORTS = frozenset({Transport.STREAMABLE_HTTP, Transport.SSE, Transport.WEBSOCKET})
# The URL schemes each network transport accepts.
TRANSPORT_SCHEMES = {
    Transport.STREAMABLE_HTTP: {"http", "https"},
    Transport.SSE: {"http", "https"},
    Transport.WEBSOCKET: {"ws", "wss"},
}


class ServerStatus(models.TextChoices):
    """A server's health, as the last checks saw it (MAINTENANCE is set by a person)."""

    ONLINE = "ONLINE", "Online"
    DEGRADED = "DEGRADED", "Degraded"
    OFFLINE = "OFFLINE", "Offline"
    MAINTENANCE = "MAINTENANCE", "Maintenance"
    UNKNOWN = "UNKNOWN", "Unknown"


SERVER_STATUS_COLORS = register_colors(
    ServerStatus,
    {
        ServerStatus.ONLINE: "green",
        ServerStatus.DEGRADED: "orange",
        ServerStatus.OFFLINE: "red",
        ServerStatus.MAINTENANCE: "purple",
        ServerStatus.UNKNOWN: "gray",
    },
)


class ToolState(models.TextChoices):
    """Where a catalog entry stands against the definition that was accepted."""

    ACTIVE = "active", "Active"
    CHANGED = "changed", "Changed"
    REMOVED = "removed", "Removed"


TOOL_STATE_COLORS = register_colors(
    ToolState, {ToolState.ACTIVE: "green", ToolState.CHANGED: "orange", ToolState.REMOVED: "gray"}
)


class Risk(models.TextChoices):
    """A tool's risk for display, derived from its annotations (MCP's hints).

    MCP says a tool without hints may be destructive and open-world, so an
    unannotated tool is ``high``.
    """

    LOW = "low", "Low (read-only)"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High (may destroy)"


RISK_COLORS = register_colors(Risk, {Risk.LOW: "green", Risk.MEDIUM: "blue", Risk.HIGH: "red"})
