"""The process's connection to Redis (or the embedded broker), shared by Argus code."""

from functools import cache

import redis
from django.conf import settings


@cache
def redis_client() -> redis.Redis:
    """A client on ``settings.REDIS_URL``; its pool reconnects after a fork."""
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
