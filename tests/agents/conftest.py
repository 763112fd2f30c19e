"""Fixtures of the agents tests."""

import pytest

from agents.guards import PREFIX
from argus.broker import redis_client


@pytest.fixture(autouse=True)
def clean_guard_counters():
    """Database ids are reused after a test's rollback: no call counted for agent 1 in
    one test may count for agent 1 of the next."""
    client = redis_client()
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    yield
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
