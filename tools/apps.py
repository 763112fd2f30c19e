from django.apps import AppConfig


class ToolsConfig(AppConfig):
    """MCP servers, the MCP client layer and the tool catalog."""

    name = "tools"
    verbose_name = "Tools"

    def ready(self):
        from argus.events import register_topic
        from orgs.choices import Limit
        from orgs.permissions import object_topic
        from orgs.services import register_usage
        from tools.mcp.pool import get_pool
        from tools.models import MCPServer
        from tools.services import on_server_notification

        register_topic("server", object_topic(MCPServer))
        register_usage(Limit.SERVERS, lambda organization: organization.servers.count())
        get_pool().on_notification = on_server_notification
