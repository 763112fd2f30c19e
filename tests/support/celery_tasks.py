"""Celery tasks loaded only by the workers tests start (``--include``)."""

import time

from celery import shared_task
from django.contrib.auth.models import Group
from django.db import transaction

from argus import events


@shared_task(name="tests.publish_event")
def publish_event(organization_id: int, event_type: str, data: dict) -> None:
    """Publish on the organization's ``org`` topic from inside a transaction."""
    with transaction.atomic():
        events.publish("org", event_type, data, organization=organization_id)


@shared_task(name="tests.write_rows")
def write_rows(tag: str, seconds: float) -> None:
    """Read-then-write transactions for ``seconds``; a final row marks success."""
    deadline = time.monotonic() + seconds
    written = 0
    while time.monotonic() < deadline:
        with transaction.atomic():
            Group.objects.filter(name__startswith=tag).count()
            Group.objects.create(name=f"{tag}-{written}")
        written += 1
    Group.objects.create(name=f"{tag}-done-{written}")
