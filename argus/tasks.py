"""Celery tasks of the project glue."""

from celery import shared_task

from argus.heartbeat import record_heartbeat


@shared_task(name="argus.heartbeat", bind=True, ignore_result=True)
def heartbeat(self) -> None:
    """Sent by beat every ARGUS_HEARTBEAT_INTERVAL: proves beat → broker → worker works."""
    record_heartbeat("consumer", self.request.hostname or "unknown")
