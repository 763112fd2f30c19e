"""GET /health/ and `argus health`."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from argus import heartbeat
from argus.broker import redis_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_heartbeats")]

COMPONENTS = {"database", "broker", "channel_layer", "worker", "beat"}


def test_all_components_up(client):
    heartbeat.record_heartbeat("worker", "celery@probe")
    heartbeat.record_heartbeat("beat", "probe:1")
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == COMPONENTS
    for name, state in body["components"].items():
        assert state["status"] == "up", name
    assert body["components"]["worker"]["detail"] == "celery@probe"
    assert response["Cache-Control"].startswith("max-age=0")


def test_worker_down_is_503_with_reason(client):
    heartbeat.record_heartbeat("beat", "probe:1")
    response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["components"]["worker"] == {
        "status": "down",
        "reason": "no worker heartbeat in the last 20 s",
    }
    assert body["components"]["database"]["status"] == "up"
    assert body["components"]["beat"]["status"] == "up"


def test_stale_heartbeat_counts_as_down(client, settings):
    settings.ARGUS_HEARTBEAT_TTL = 2
    redis_client().hset("argus:heartbeat:worker", "celery@old", 1.0)
    heartbeat.record_heartbeat("beat", "probe:1")
    assert client.get("/health/").json()["components"]["worker"]["status"] == "down"
    # The stale stamp is pruned.
    assert redis_client().hget("argus:heartbeat:worker", "celery@old") is None


def test_broker_down_is_reported(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    try:
        body = client.get("/health/").json()
    finally:
        redis_client.cache_clear()
    assert body["status"] == "down"
    assert body["components"]["broker"]["status"] == "down"
    assert "ConnectionError" in body["components"]["broker"]["reason"]


def test_health_needs_no_login(client):
    assert client.get("/health/").status_code in {200, 503}


def test_health_command(capsys):
    heartbeat.record_heartbeat("worker", "celery@probe")
    call_command("health", "database", "worker")
    out = capsys.readouterr().out
    assert "database" in out and "worker" in out and "beat" not in out
    with pytest.raises(CommandError, match="down: beat"):
        call_command("health", "beat")
    with pytest.raises(CommandError, match="unknown component disk"):
        call_command("health", "disk")


def test_forget_removes_stamp():
    heartbeat.record_heartbeat("worker", "celery@bye")
    heartbeat.forget("worker", "celery@bye")
    assert "celery@bye" not in heartbeat.alive("worker")
