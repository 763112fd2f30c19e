from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Agents, their hierarchy, approvals and tool grants."""

    name = "agents"
    verbose_name = "Agents"
