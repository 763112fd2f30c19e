"""Component checks behind ``GET /health/`` (ARCHITECTURE §9)."""

import asyncio
import time
import uuid

from asgiref.sync import sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.conf import settings
from django.db import connection

from argus import heartbeat
from argus.broker import redis_client

COMPONENTS = ("database", "broker", "channel_layer", "worker", "beat")
CHANNEL_LAYER_TIMEOUT = 3.0


class ComponentDown(Exception):
    """A component answered wrongly or not at all; the message is the reason shown."""


def check_database() -> str:
    """A round trip to the database; returns its vendor."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_broker() -> str:
    """PING the broker; returns whether it is embedded or an external Redis."""
    redis_client().ping()
    return "embedded" if not settings.REDIS_URL_SET else "redis"


def check_worker() -> str:
    """Up when a worker process is alive and, while beat runs, workers run its pings."""
    names = heartbeat.alive("worker")
    ttl = settings.ARGUS_HEARTBEAT_TTL
    if not names:
        raise ComponentDown(f"no worker heartbeat in the last {ttl} s")
    if heartbeat.alive("beat") and not heartbeat.alive("consumer"):
        raise ComponentDown(
            f"workers are running but none ran the heartbeat task in the last {ttl} s"
        )
    return ", ".join(names)


def check_beat() -> str:
    """Up when a beat process stamped its heartbeat recently."""
    names = heartbeat.alive("beat")
    if not names:
        raise ComponentDown(f"no beat heartbeat in the last {settings.ARGUS_HEARTBEAT_TTL} s")
    return ", ".join(names)


async def check_channel_layer() -> str:
    """Send a message to a fresh channel and read it back.

    The probe uses its own layer instance: receiving on the process's shared layer
    would contend with the websocket consumers' receive loop in this process.
    """
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        channel = await layer.new_channel("health.")
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.ping", "token": token})
        message = await asyncio.wait_for(layer.receive(channel), CHANNEL_LAYER_TIMEOUT)
        if message.get("token") != token:
            raise ComponentDown("the channel layer returned a different message")
        return type(layer).__name__
    finally:
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()


# One coroutine per component. The ORM stays on its thread; the rest run in parallel.
CHECKS = {
    "database": sync_to_async(check_database, thread_sensitive=True),
    "broker": sync_to_async(check_broker, thread_sensitive=False),
    "channel_layer": check_channel_layer,
    "worker": sync_to_async(check_worker, thread_sensitive=False),
    "beat": sync_to_async(check_beat, thread_sensitive=False),
}


async def _run(name: str) -> dict:
    started = time.perf_counter()
    try:
        detail = await CHECKS[name]()
    except TimeoutError:
        return {"status": "down", "reason": "timed out"}
    except ComponentDown as exc:
        return {"status": "down", "reason": str(exc)}
    except Exception as exc:  # any failure of a component is a reason to show, not a 500
        return {"status": "down", "reason": type(exc).__name__, "error": str(exc)[:300]}
    return {
        "status": "up",
        "detail": detail,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def check_all(names=COMPONENTS) -> dict:
    """The state of each named component; ``status`` is "ok" only when all are up.

    Components carry ``detail`` (hosts, process names) and, when an unexpected error
    took them down, ``error`` (its message): see :func:`public` for anonymous callers.
    """
    results = await asyncio.gather(*(_run(name) for name in names))
    components = dict(zip(names, results, strict=True))
    healthy = all(result["status"] == "up" for result in results)
    return {"status": "ok" if healthy else "down", "components": components}


def public(report: dict) -> dict:
    """The report without host names, process names and error messages."""
    hidden = {"detail", "error"}
    return {
        "status": report["status"],
        "components": {
            name: {key: value for key, value in state.items() if key not in hidden}
            for name, state in report["components"].items()
        },
    }
