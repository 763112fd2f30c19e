"""Realtime events (ARCHITECTURE §7): publish on commit, keep a short log per topic.

An event is ``{id, topic, type, at, data}``. ``topic`` is what clients subscribe to
(``org``, ``agent:12`` …); every topic lives inside one organization, so the stored
stream key is ``<organization id>:<topic>`` and nothing crosses tenants. Ids come from
a per-stream counter in Redis and only increase; a stream idle for ``ARGUS_EVENT_TTL``
is forgotten and starts again, which clients learn as ``truncated``. The last
``ARGUS_EVENT_RETENTION`` events of each stream are kept so a client that reconnects
with its last id gets what it missed.

Apps add topic kinds with :func:`register_topic`: the hook decides whether a
connection may subscribe and in which organization the topic lives.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from argus.broker import redis_client

logger = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"^(?P<kind>[a-z][a-z_]*)(?::(?P<arg>[A-Za-z0-9_-]{1,64}))?$")
COUNTER_KEY = "argus:events:{stream}:seq"
LOG_KEY = "argus:events:{stream}:log"
GROUP_PREFIX = "argus.ev."
SESSION_GROUP_PREFIX = "argus.session."
USER_GROUP_PREFIX = "argus.user."

# KEYS: counter, log. ARGV: body (JSON without id), retention, log ttl.
# Incrementing and appending in one script keeps ids and log order identical.
_APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], id, id .. '|' .. ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return id
"""


class TopicError(ValueError):
    """A topic name is malformed or of a kind nobody registered."""


# A hook receives the connection's scope and the topic's argument (``None`` for
# ``org``) and returns the organization id the topic lives in, or ``None`` when the
# connection may not subscribe (unknown and forbidden look the same, like a 404).
TopicHook = Callable[[dict, str | None], int | None]
_hooks: dict[str, TopicHook] = {}


def register_topic(kind: str, hook: TopicHook) -> None:
    """Declare a topic kind (``org``, ``agent`` …) and its subscription check."""
    if not re.fullmatch(r"[a-z][a-z_]*", kind):
        raise ValueError(f"bad topic kind {kind!r}")
    _hooks[kind] = hook


def parse_topic(topic: str) -> tuple[str, str | None]:
    """Split ``kind:arg``; raise :class:`TopicError` when malformed or unknown."""
    match = TOPIC_RE.match(topic) if isinstance(topic, str) else None
    if not match:
        raise TopicError(f"malformed topic {topic!r}")
    kind = match["kind"]
    if kind not in _hooks:
        raise TopicError(f"unknown topic kind {kind!r}")
    return kind, match["arg"]


def authorize(scope: dict, topic: str) -> int | None:
    """The organization id the topic lives in if this connection may subscribe, else None."""
    kind, arg = parse_topic(topic)
    return _hooks[kind](scope, arg)


@dataclass(frozen=True)
class Stream:
    """One topic inside one organization: where its counter, log and group live."""

    organization_id: int
    topic: str

    @property
    def key(self) -> str:
        return f"{self.organization_id}:{self.topic}"

    @property
    def group(self) -> str:
        return GROUP_PREFIX + self.key.replace(":", ".")


def publish(topic: str, type: str, data: dict[str, Any], *, organization) -> None:
    """Publish an event once the current transaction commits (at once outside one).

    ``organization`` is the Organization (or its id) the topic belongs to. A failure
    to deliver is logged, never raised into the committed work.
    """
    parse_topic(topic)
    organization_id = getattr(organization, "pk", organization)
    stream = Stream(int(organization_id), topic)
    transaction.on_commit(lambda: _send_quietly(stream, type, data))


def _send_quietly(stream: Stream, type: str, data: dict[str, Any]) -> None:
    """Deliver after commit; a broker that is down (a command run before `argus up`,
    say) costs one warning line, and other failures are logged in full."""
    try:
        send_event(stream, type, data)
    except RedisConnectionError as exc:
        logger.warning(
            "event %s on %s not delivered: broker unreachable (%s)", type, stream.key, exc
        )
    except Exception:
        logger.exception("event %s on %s not delivered", type, stream.key)


def send_event(stream: Stream, type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Append the event to the stream's log and fan it out to subscribers now."""
    body = {"topic": stream.topic, "type": type, "at": timezone.now().isoformat(), "data": data}
    encoded = json.dumps(body, separators=(",", ":"), default=str)
    client = redis_client()
    event_id = client.eval(
        _APPEND,
        2,
        COUNTER_KEY.format(stream=stream.key),
        LOG_KEY.format(stream=stream.key),
        encoded,
        settings.ARGUS_EVENT_RETENTION,
        settings.ARGUS_EVENT_TTL,
    )
    event = {"id": int(event_id), **json.loads(encoded)}
    async_to_sync(get_channel_layer().group_send)(
        stream.group, {"type": "argus.event", "stream": stream.key, "event": event}
    )
    return event


def session_group(session_key: str) -> str:
    """The group every socket of one login session joins, to be closed at logout."""
    return SESSION_GROUP_PREFIX + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def end_session(session_key: str) -> None:
    """Close the sockets of a login session once the current transaction commits."""
    group = session_group(session_key)
    transaction.on_commit(
        lambda: async_to_sync(get_channel_layer().group_send)(group, {"type": "session.ended"}),
        robust=True,
    )


def user_group(user_id: int) -> str:
    """The group every socket of one user joins, to be re-authorized when access changes."""
    return f"{USER_GROUP_PREFIX}{user_id}"


def access_changed(user_id: int) -> None:
    """Once the transaction commits, close the user's sockets so that they reconnect and
    every subscription is checked again (a role change, a removal from an organization)."""
    group = user_group(user_id)
    transaction.on_commit(
        lambda: async_to_sync(get_channel_layer().group_send)(group, {"type": "access.changed"}),
        robust=True,
    )


def last_id(stream: Stream) -> int:
    """The id of the newest event ever published on the stream (0 when none)."""
    value = redis_client().get(COUNTER_KEY.format(stream=stream.key))
    return int(value) if value else 0


def events_between(stream: Stream, after: int, upto: int | None = None) -> list[dict[str, Any]]:
    """Retained events with ``after < id <= upto`` (``upto=None``: to the newest), in order."""
    high = "+inf" if upto is None else upto
    members = redis_client().zrangebyscore(LOG_KEY.format(stream=stream.key), f"({after}", high)
    events = []
    for member in members:
        event_id, _, encoded = member.decode().partition("|")
        events.append({"id": int(event_id), **json.loads(encoded)})
    return events
