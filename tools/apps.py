from django.apps import AppConfig


class ToolsConfig(AppConfig):
    """MCP servers, the MCP client layer and the tool catalog."""

    name = "tools"
    verbose_name = "Tools"
