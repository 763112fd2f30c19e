"""GET /health/ and `argus health`."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from argus import heartbeat
from argus.broker import redis_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_heartbeats")]

COMPONENTS = {"database", "broker", "channel_layer", "worker", "beat"}


def stamp_all():
    heartbeat.record_heartbeat("worker", "celery@probe")
    heartbeat.record_heartbeat("consumer", "celery@probe")
    heartbeat.record_heartbeat("beat", "probe:1")


def test_all_components_up(admin_client):
    stamp_all()
    response = admin_client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == COMPONENTS
    for name, state in body["components"].items():
        assert state["status"] == "up", name
    assert body["components"]["worker"]["detail"] == "celery@probe"
    assert response["Cache-Control"].startswith("max-age=0")


def test_anonymous_callers_see_states_but_no_internals(client, settings):
    stamp_all()
    body = client.get("/health/").json()
    assert body["status"] == "ok"
    for state in body["components"].values():
        assert set(state) == {"status", "latency_ms"}
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    try:
        broker = client.get("/health/").json()["components"]["broker"]
    finally:
        redis_client.cache_clear()
    assert broker == {"status": "down", "reason": "ConnectionError"}


def test_worker_that_runs_no_heartbeat_task_is_down(client):
    heartbeat.record_heartbeat("worker", "celery@stuck")
    heartbeat.record_heartbeat("beat", "probe:1")
    body = client.get("/health/").json()
    assert body["components"]["worker"] == {
        "status": "down",
        "reason": "workers are running but none ran the heartbeat task in the last 20 s",
    }


def test_heartbeat_task_stamps_the_consumer():
    from argus.tasks import heartbeat as heartbeat_task

    heartbeat_task.apply()  # runs the task function in this process, as a worker would
    assert heartbeat.alive("consumer")


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


def test_broker_down_is_reported_with_its_error_to_staff(admin_client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    try:
        response = admin_client.get("/health/")
    finally:
        redis_client.cache_clear()
    assert response.status_code == 503
    broker = response.json()["components"]["broker"]
    assert broker["status"] == "down"
    assert broker["reason"] == "ConnectionError"
    assert "127.0.0.1:1" in broker["error"]


def test_health_needs_no_login(client):
    assert client.get("/health/").status_code in {200, 503}


def test_health_command(capsys):
    heartbeat.record_heartbeat("worker", "celery@probe")
    heartbeat.record_heartbeat("consumer", "celery@probe")
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
