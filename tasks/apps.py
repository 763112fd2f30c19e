from django.apps import AppConfig


class TasksConfig(AppConfig):
    """Tasks and their executions."""

    name = "tasks"
    verbose_name = "Tasks"
