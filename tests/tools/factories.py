"""Factories of the tools app's rows, written straight to the database (no services,
no sessions): for tests about permissions, lists and the catalog."""

import itertools
import sys

from django.utils import timezone

from tools.choices import Transport
from tools.models import MCPServer, Tool
from tools.services import new_tool

_serial = itertools.count(1)


def make_server(organization, **fields) -> MCPServer:
    fields.setdefault("name", f"server {next(_serial)}")
    fields.setdefault("transport", Transport.STDIO)
    fields.setdefault("command", sys.executable)
    return MCPServer.objects.create(organization=organization, **fields)


def make_tool(server: MCPServer, name: str | None = None, **listed) -> Tool:
    """A catalog entry as a sync would create it from ``listed`` (protocol spelling)."""
    item = {"name": name or f"tool_{next(_serial)}", **listed}
    item.setdefault("description", "A tool.")
    item.setdefault("inputSchema", {"type": "object", "properties": {}})
    tool = new_tool(server, item, timezone.now())
    tool.save()
    return tool
