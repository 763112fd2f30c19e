from django.apps import AppConfig


class OrgsConfig(AppConfig):
    """Users, organizations and memberships."""

    name = "orgs"
    verbose_name = "Organizations"

    def ready(self):
        from argus.events import register_topic
        from orgs.topics import org_topic

        register_topic("org", org_topic)
