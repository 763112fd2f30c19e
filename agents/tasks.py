"""Celery tasks of the agents app."""

from celery import shared_task

from agents import services


@shared_task(name="agents.expire_approvals", ignore_result=True)
def expire_approvals() -> int:
    """Close pending approval requests past their expiry (beat, every minute)."""
    return services.expire_requests()
