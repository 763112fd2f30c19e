from django.apps import AppConfig


class OrgsConfig(AppConfig):
    """Users, organizations, memberships, teams, invitations, API keys and audit."""

    name = "orgs"
    verbose_name = "Organizations"

    def ready(self):
        from argus.events import register_topic
        from orgs.topics import org_topic

        register_topic("org", org_topic)
        from orgs import signals  # noqa: F401  (connects the audit receivers)
