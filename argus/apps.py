from django.apps import AppConfig


class ArgusConfig(AppConfig):
    """Project glue: shared framework, realtime, health, the `up` command."""

    name = "argus"
    verbose_name = "Argus"
