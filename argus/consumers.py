"""The one websocket endpoint, ``/ws/``: topic subscriptions with catch-up (ARCHITECTURE §7).

Client → server::

    {"subscribe": "<topic>", "after": <last id seen or null>}
    {"unsubscribe": "<topic>"}

Server → client::

    {"subscribed": "<topic>", "last_id": <newest id>, "truncated": <bool>}
    {"id": …, "topic": …, "type": …, "at": …, "data": {…}}     an event
    {"unsubscribed": "<topic>"}
    {"error": "<message>", "topic": "<topic or null>"}

An unauthenticated handshake is refused (HTTP 403); a socket whose login session ends
(logout) is closed with code 4401; a socket whose user's access changed (role change,
removal from an organization) is closed with code 4403, and the client reconnects and
subscribes again under the new rights.

Events of one topic arrive in id order with no gaps and no duplicates while they are
retained; ``truncated`` says that some events after ``after`` are no longer retained.
"""

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from argus import events

MAX_SUBSCRIPTIONS = 100
# Sent when the login session behind a socket ends (logout); clients should not retry.
CLOSE_SESSION_ENDED = 4401
# Sent when the user's rights changed; clients reconnect and subscribe again.
CLOSE_ACCESS_CHANGED = 4403


class EventConsumer(AsyncJsonWebsocketConsumer):
    """Delivers events of the topics the connection subscribed to and may see."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Closing before accept() refuses the handshake (HTTP 403).
            await self.close()
            return
        # topic -> [stream, id of the last event delivered]
        self.subscriptions: dict[str, list] = {}
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        self.session_group = events.session_group(key) if key else None
        if self.session_group:
            await self.channel_layer.group_add(self.session_group, self.channel_name)
        self.user_group = events.user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for stream, _last in getattr(self, "subscriptions", {}).values():
            await self.channel_layer.group_discard(stream.group, self.channel_name)
        if getattr(self, "session_group", None):
            await self.channel_layer.group_discard(self.session_group, self.channel_name)
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def session_ended(self, message):
        """The user logged out: this socket's authentication is gone."""
        await self.close(code=CLOSE_SESSION_ENDED)

    async def access_changed(self, message):
        """The user's role or memberships changed: subscriptions must be checked again."""
        await self.close(code=CLOSE_ACCESS_CHANGED)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            await self.send_json({"error": "expected a text frame holding JSON", "topic": None})
            return
        await super().receive(text_data=text_data, **kwargs)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            await self.send_json({"error": "expected a JSON object", "topic": None})
        elif "subscribe" in content:
            await self.subscribe(content["subscribe"], content.get("after"))
        elif "unsubscribe" in content:
            await self.unsubscribe(content["unsubscribe"])
        else:
            await self.send_json(
                {"error": "expected a 'subscribe' or 'unsubscribe' message", "topic": None}
            )

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None

    async def subscribe(self, topic, after):
        if after is not None and (
            not isinstance(after, int) or isinstance(after, bool) or after < 0
        ):
            await self.send_json(
                {
                    "error": "'after' must be a non-negative integer or null",
                    "topic": topic if isinstance(topic, str) else None,
                }
            )
            return
        try:
            organization_id = await database_sync_to_async(events.authorize)(self.scope, topic)
        except events.TopicError as exc:
            await self.send_json(
                {"error": str(exc), "topic": topic if isinstance(topic, str) else None}
            )
            return
        if organization_id is None:
            await self.send_json({"error": "no such topic, or not permitted", "topic": topic})
            return
        if topic not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.send_json(
                {"error": f"at most {MAX_SUBSCRIPTIONS} subscriptions", "topic": topic}
            )
            return
        stream = events.Stream(organization_id, topic)
        previous = self.subscriptions.get(topic)
        if previous is not None and previous[0] != stream:
            # The same topic name now means another organization (switched).
            await self.channel_layer.group_discard(previous[0].group, self.channel_name)
        # Join first, then read the log: anything published in between arrives twice
        # and the id check in `deliver` drops the second copy.
        await self.channel_layer.group_add(stream.group, self.channel_name)
        newest = await sync_to_async(events.last_id, thread_sensitive=False)(stream)
        backlog = []
        if after is not None and after < newest:
            backlog = await sync_to_async(events.events_between, thread_sensitive=False)(
                stream, after, newest
            )
        # Missed events are gone when the oldest retained one is not right after
        # `after`, or when `after` is ahead of the stream (its log was reset).
        truncated = after is not None and (
            after > newest or (after < newest and (not backlog or backlog[0]["id"] != after + 1))
        )
        start = newest if after is None else min(after, newest)
        self.subscriptions[topic] = [stream, start]
        await self.send_json({"subscribed": topic, "last_id": newest, "truncated": truncated})
        for event in backlog:
            await self.deliver(topic, event)

    async def unsubscribe(self, topic):
        entry = self.subscriptions.pop(topic, None) if isinstance(topic, str) else None
        if entry is None:
            await self.send_json(
                {"error": "not subscribed", "topic": topic if isinstance(topic, str) else None}
            )
            return
        await self.channel_layer.group_discard(entry[0].group, self.channel_name)
        await self.send_json({"unsubscribed": topic})

    async def argus_event(self, message):
        """A published event arrives from the channel layer."""
        event = message["event"]
        topic = event["topic"]
        entry = self.subscriptions.get(topic)
        if entry is None or entry[0].key != message["stream"]:
            return
        stream, last = entry
        if event["id"] > last + 1:
            # Publishers race between INCR and the group send: fetch what came before.
            for missing in await sync_to_async(events.events_between, thread_sensitive=False)(
                stream, last, event["id"] - 1
            ):
                await self.deliver(topic, missing)
        await self.deliver(topic, event)

    async def deliver(self, topic, event):
        entry = self.subscriptions.get(topic)
        if entry is None or event["id"] <= entry[1]:
            return
        entry[1] = event["id"]
        await self.send_json(event)
