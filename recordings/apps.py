from django.apps import AppConfig


class RecordingsConfig(AppConfig):
    """The flight recorder: runs and recorded tool calls."""

    name = "recordings"
    verbose_name = "Recordings"
