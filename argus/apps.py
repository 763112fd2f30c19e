from django.apps import AppConfig


class ArgusConfig(AppConfig):
    """Project glue: shared framework, realtime, health, the `up` command."""

    name = "argus"
    verbose_name = "Argus"

    def ready(self):
        from argus import signals  # noqa: F401 - connects the receivers
        from argus.hardening import forbid_inspection

        forbid_inspection()
