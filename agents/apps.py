from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Agents, their hierarchy, approvals and tool grants."""

    name = "agents"
    verbose_name = "Agents"

    def ready(self):
        from agents import services
        from agents.models import Agent
        from argus.events import register_topic
        from orgs.choices import Limit
        from orgs.permissions import object_topic
        from orgs.services import register_usage
        from tools import signals

        register_topic("agent", object_topic(Agent))
        register_usage(Limit.AGENTS, lambda organization: organization.agents.count())
        signals.catalog_applied.connect(
            lambda sender, server, principal, **kwargs: services.sync_tool_change_requests(
                server, principal
            ),
            weak=False,
            dispatch_uid="agents.tool_change_requests",
        )
        signals.tool_change_accepted.connect(
            lambda sender, tool, principal, **kwargs: services.on_tool_change_accepted(
                tool, principal
            ),
            weak=False,
            dispatch_uid="agents.tool_change_accepted",
        )
