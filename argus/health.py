"""Component checks behind ``GET /health/`` (ARCHITECTURE §9)."""

import asyncio
import time
import uuid
from collections.abc import Callable

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
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_broker() -> str:
    redis_client().ping()
    return "embedded" if not settings.REDIS_URL_SET else "redis"


def _check_alive(component: str) -> Callable[[], str]:
    def check() -> str:
        names = heartbeat.alive(component)
        if not names:
            raise ComponentDown(
                f"no {component} heartbeat in the last {settings.ARGUS_HEARTBEAT_TTL} s"
            )
        return ", ".join(names)

    return check


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


SYNC_CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "worker": _check_alive("worker"),
    "beat": _check_alive("beat"),
}


async def _run(name: str) -> dict:
    started = time.perf_counter()
    try:
        if name == "channel_layer":
            detail = await check_channel_layer()
        else:
            detail = await sync_to_async(SYNC_CHECKS[name], thread_sensitive=name == "database")()
    except TimeoutError:
        return {"status": "down", "reason": "timed out"}
    except ComponentDown as exc:
        return {"status": "down", "reason": str(exc)}
    except Exception as exc:  # any failure of a component is a reason to show, not a 500
        return {"status": "down", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "status": "up",
        "detail": detail,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def check_all(names=COMPONENTS) -> dict:
    """The state of each named component; ``status`` is "ok" only when all are up."""
    results = await asyncio.gather(*(_run(name) for name in names))
    components = dict(zip(names, results, strict=True))
    healthy = all(result["status"] == "up" for result in results)
    return {"status": "ok" if healthy else "down", "components": components}
