"""``manage.py demo-mcp-server``: run the deterministic demo MCP server.

A thin front for ``tools.demo_server.run``, which needs no Django at all
(``python -m tools.demo_server`` is the same server).
"""

from django.core.management.base import BaseCommand, CommandError

from tools import demo_server


class Command(BaseCommand):
    help = (
        "Run Argus's deterministic demo MCP server over stdio, streamable HTTP "
        "(http://HOST:PORT/mcp), SSE (http://HOST:PORT/sse) or WebSocket (ws://HOST:PORT/mcp)."
    )
    # Starts at once and reads no database; in stdio mode stdout is the protocol's.
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--transport", choices=demo_server.TRANSPORTS, default="stdio")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="TCP port, 1 to 65535")

    def handle(self, *args, transport, host, port, **options):
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535, not {port}")
        try:
            demo_server.run(transport, host, port)
        except (demo_server.DemoConfigurationError, demo_server.CannotListenError) as exc:
            raise CommandError(str(exc)) from exc
