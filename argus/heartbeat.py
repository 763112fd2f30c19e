"""Liveness of Celery workers and beat, as seen by ``/health/``.

Three stamps, each a hash entry in Redis refreshed every ``ARGUS_HEARTBEAT_INTERVAL``
seconds: ``worker`` from a timer in each worker process, ``beat`` from beat's scheduler
loop (argus/beat.py), and ``consumer`` from the ``argus.heartbeat`` task that beat
sends and a worker runs (argus/tasks.py), which proves the whole path from beat
through the broker to a worker. A stamp counts while it is younger than
``ARGUS_HEARTBEAT_TTL``.
"""

import logging
import os
import socket
import time

from celery import bootsteps
from django.conf import settings

from argus.broker import redis_client

logger = logging.getLogger(__name__)

KEY = "argus:heartbeat:{component}"


def record_heartbeat(component: str, name: str) -> None:
    """Stamp ``name`` (a worker's hostname, a beat's host and pid) as alive now."""
    client = redis_client()
    key = KEY.format(component=component)
    now = time.time()
    pipe = client.pipeline()
    pipe.hset(key, name, now)
    pipe.expire(key, settings.ARGUS_HEARTBEAT_TTL * 10)
    pipe.execute()


def alive(component: str) -> list[str]:
    """Names of the ``component`` processes whose last stamp is recent, newest first."""
    client = redis_client()
    key = KEY.format(component=component)
    stamps = client.hgetall(key)
    now = time.time()
    fresh, stale = [], []
    for name, stamp in stamps.items():
        age = now - float(stamp)
        (fresh if age <= settings.ARGUS_HEARTBEAT_TTL else stale).append((age, name.decode()))
    if stale:
        client.hdel(key, *[name for _age, name in stale])
    return [name for _age, name in sorted(fresh)]


def forget(component: str, name: str) -> None:
    """Remove a stamp when its process stops cleanly, so health turns red at once."""
    redis_client().hdel(KEY.format(component=component), name)


def process_name() -> str:
    """``host:pid``, naming a beat process in its stamp."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Worker bootstep: stamp the worker's liveness on a repeating timer."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_ref = None

    def start(self, worker):
        self.beat(worker)
        self.timer_ref = worker.timer.call_repeatedly(
            settings.ARGUS_HEARTBEAT_INTERVAL, self.beat, (worker,), priority=10
        )

    def beat(self, worker):
        try:
            record_heartbeat("worker", worker.hostname)
        except Exception:  # the broker may be briefly away; health will show it
            logger.warning("could not record worker heartbeat", exc_info=True)

    def stop(self, worker):
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        try:
            forget("worker", worker.hostname)
        except Exception:
            logger.debug("could not clear worker heartbeat", exc_info=True)
