"""publish() on commit, the per-topic log, and the /ws/ consumer (WebsocketCommunicator)."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from argus import events
from argus.consumers import EventConsumer
from orgs.services import SESSION_ORGANIZATION_KEY

# Transactional: the consumer reaches the ORM through database_sync_to_async, which
# closes the test's connection inside the test transaction otherwise.
pytestmark = pytest.mark.django_db(transaction=True)


def stream_for(organization):
    return events.Stream(organization.pk, "org")


def communicator(user, session=None):
    comm = WebsocketCommunicator(EventConsumer.as_asgi(), "/ws/")
    comm.scope["user"] = user
    comm.scope["session"] = session or {}
    return comm


async def subscribed(user, after=None, session=None):
    """A connected communicator subscribed to ``org``, and the subscription's ack."""
    comm = communicator(user, session)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"subscribe": "org", "after": after})
    return comm, await comm.receive_json_from(timeout=5)


def run(coroutine_function):
    """Run an async scenario from a sync test so ORM calls share the test's transaction."""
    return async_to_sync(coroutine_function)()


@pytest.mark.django_db
def test_publish_waits_for_commit(organization, django_capture_on_commit_callbacks):
    before = events.last_id(stream_for(organization))
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            events.publish("org", "thing.created", {"n": 1}, organization=organization)
        assert events.last_id(stream_for(organization)) == before
    assert len(callbacks) == 1
    callbacks[0]()
    assert events.last_id(stream_for(organization)) == before + 1
    [event] = events.events_between(stream_for(organization), before)
    assert event["id"] == before + 1
    assert event["topic"] == "org"
    assert event["type"] == "thing.created"
    assert event["data"] == {"n": 1}
    assert event["at"]


@pytest.mark.django_db
def test_rolled_back_publish_sends_nothing(organization, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        try:
            with transaction.atomic():
                events.publish("org", "thing.created", {}, organization=organization)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
    assert callbacks == []


@pytest.mark.django_db
def test_publish_rejects_unknown_topics(organization):
    with pytest.raises(events.TopicError, match="unknown topic kind"):
        events.publish("nope:1", "x", {}, organization=organization)
    with pytest.raises(events.TopicError, match="malformed"):
        events.publish("org:bad id!", "x", {}, organization=organization)


@pytest.mark.django_db
def test_log_keeps_only_the_retention(organization, settings):
    settings.ARGUS_EVENT_RETENTION = 3
    stream = events.Stream(organization.pk, "org")
    first = events.last_id(stream)
    for n in range(5):
        events.send_event(stream, "tick", {"n": n})
    kept = events.events_between(stream, first)
    assert [e["data"]["n"] for e in kept] == [2, 3, 4]
    assert [e["id"] for e in kept] == [first + 3, first + 4, first + 5]


def test_anonymous_connection_is_refused():
    async def scenario():
        comm = communicator(AnonymousUser())
        connected, _code = await comm.connect()
        assert not connected

    run(scenario)


def test_subscribe_receive_and_unsubscribe(member, organization):
    stream = stream_for(organization)

    async def scenario():
        comm, ack = await subscribed(member, None)
        assert ack["subscribed"] == "org"
        assert ack["truncated"] is False
        newest = ack["last_id"]
        await sync_to_async(events.send_event)(stream, "agent.status", {"status": "ACTIVE"})
        event = await comm.receive_json_from(timeout=5)
        assert event == {
            "id": newest + 1,
            "topic": "org",
            "type": "agent.status",
            "at": event["at"],
            "data": {"status": "ACTIVE"},
        }
        await comm.send_json_to({"unsubscribe": "org"})
        assert await comm.receive_json_from(timeout=5) == {"unsubscribed": "org"}
        await sync_to_async(events.send_event)(stream, "agent.status", {"status": "BUSY"})
        # Resubscribing from the newest id shows nothing arrived in between.
        await comm.send_json_to({"subscribe": "org", "after": None})
        ack = await comm.receive_json_from(timeout=5)
        assert ack["last_id"] == newest + 2
        await sync_to_async(events.send_event)(stream, "agent.status", {"status": "IDLE"})
        assert (await comm.receive_json_from(timeout=5))["data"] == {"status": "IDLE"}
        await comm.disconnect()

    run(scenario)


def test_after_replays_missed_events_in_order(member, organization):
    stream = stream_for(organization)
    start = events.last_id(stream)
    for n in range(4):
        events.send_event(stream, "tick", {"n": n})

    async def scenario():
        comm, ack = await subscribed(member, start + 1)
        assert ack == {"subscribed": "org", "last_id": start + 4, "truncated": False}
        received = [await comm.receive_json_from(timeout=5) for _ in range(3)]
        assert [e["id"] for e in received] == [start + 2, start + 3, start + 4]
        assert [e["data"]["n"] for e in received] == [1, 2, 3]
        await sync_to_async(events.send_event)(stream, "tick", {"n": 4})
        # No duplicate of the replay comes before the next live event.
        assert (await comm.receive_json_from(timeout=5))["id"] == start + 5
        await comm.disconnect()

    run(scenario)


def test_gap_in_live_events_is_filled_from_the_log(member, organization):
    """Two publishers race: the later id reaches the socket first."""
    stream = stream_for(organization)

    async def scenario():
        comm, ack = await subscribed(member, None)
        newest = ack["last_id"]
        # Append one event to the log without fanning it out, then publish the next.
        await sync_to_async(_append_only)(stream, "first")
        await sync_to_async(events.send_event)(stream, "second", {})
        first = await comm.receive_json_from(timeout=5)
        second = await comm.receive_json_from(timeout=5)
        assert (first["id"], first["type"]) == (newest + 1, "first")
        assert (second["id"], second["type"]) == (newest + 2, "second")
        await comm.disconnect()

    run(scenario)


def _append_only(stream, event_type):
    from django.conf import settings

    from argus.broker import redis_client

    redis_client().eval(
        events._APPEND,
        2,
        events.COUNTER_KEY.format(stream=stream.key),
        events.LOG_KEY.format(stream=stream.key),
        f'{{"topic":"org","type":"{event_type}","at":"now","data":{{}}}}',
        settings.ARGUS_EVENT_RETENTION,
        settings.ARGUS_EVENT_TTL,
    )


def test_truncated_when_missed_events_are_gone(member, organization, settings):
    settings.ARGUS_EVENT_RETENTION = 2
    stream = stream_for(organization)
    start = events.last_id(stream)
    for n in range(5):
        events.send_event(stream, "tick", {"n": n})

    async def scenario():
        comm, ack = await subscribed(member, start)
        assert ack["truncated"] is True
        received = [await comm.receive_json_from(timeout=5) for _ in range(2)]
        assert [e["data"]["n"] for e in received] == [3, 4]
        await comm.disconnect()

    run(scenario)


def test_outsider_cannot_subscribe_to_another_organization(outsider, organization):
    """The org topic is always the connection's own organization; a forged session
    choice of another organization falls back to the user's own."""
    stream = stream_for(organization)
    own = events.Stream(outsider.memberships.get().organization_id, "org")

    async def scenario():
        comm, ack = await subscribed(outsider, None, {SESSION_ORGANIZATION_KEY: organization.pk})
        assert ack["subscribed"] == "org"
        await sync_to_async(events.send_event)(stream, "secret", {"x": 1})
        await sync_to_async(events.send_event)(own, "own", {"x": 2})
        # The next message is the outsider's own event: Acme's never arrived.
        assert (await comm.receive_json_from(timeout=5))["type"] == "own"
        await comm.disconnect()

    run(scenario)


def test_user_without_organization_gets_an_error(db):
    from orgs.models import User

    lonely = User.objects.create_user("lonely@example.test", "pw-pw-pw-pw")

    async def scenario():
        comm = communicator(lonely)
        await comm.connect()
        await comm.send_json_to({"subscribe": "org", "after": None})
        assert await comm.receive_json_from(timeout=5) == {
            "error": "no such topic, or not permitted",
            "topic": "org",
        }
        await comm.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"subscribe": "nope"}, "unknown topic kind 'nope'"),
        ({"subscribe": "org:x y"}, "malformed topic 'org:x y'"),
        ({"subscribe": 5}, "malformed topic 5"),
        ({"subscribe": "org", "after": -1}, "'after' must be a non-negative integer or null"),
        ({"subscribe": "org", "after": "3"}, "'after' must be a non-negative integer or null"),
        ({"unsubscribe": "org"}, "not subscribed"),
        ({"hello": 1}, "expected a 'subscribe' or 'unsubscribe' message"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_messages_get_clear_errors(member, message, error):
    async def scenario():
        comm = communicator(member)
        await comm.connect()
        await comm.send_json_to(message)
        reply = await comm.receive_json_from(timeout=5)
        assert reply["error"] == error
        await comm.disconnect()

    run(scenario)


def test_invalid_json_gets_an_error(member):
    async def scenario():
        comm = communicator(member)
        await comm.connect()
        await comm.send_to(text_data="{not json")
        assert (await comm.receive_json_from(timeout=5))["error"] == "expected a JSON object"
        await comm.disconnect()

    run(scenario)


def test_after_ahead_of_the_stream_is_truncated_and_still_live(member, organization):
    """A client remembers ids from before the broker's data was reset."""
    stream = stream_for(organization)

    async def scenario():
        newest = await sync_to_async(events.last_id)(stream)
        comm, ack = await subscribed(member, newest + 1000)
        assert ack == {"subscribed": "org", "last_id": newest, "truncated": True}
        await sync_to_async(events.send_event)(stream, "fresh", {})
        assert (await comm.receive_json_from(timeout=5))["id"] == newest + 1
        await comm.disconnect()

    run(scenario)


def test_health_probe_leaves_live_subscriptions_alone(member, organization):
    """The channel-layer check runs in the web process beside the consumers."""
    from argus.health import check_channel_layer

    stream = stream_for(organization)

    async def scenario():
        comm, ack = await subscribed(member, None)
        newest = ack["last_id"]
        for _ in range(3):
            assert await check_channel_layer() == "RedisChannelLayer"
        await sync_to_async(events.send_event)(stream, "after.probe", {})
        assert (await comm.receive_json_from(timeout=5))["id"] == newest + 1
        await comm.disconnect()

    run(scenario)


def test_binary_frames_get_an_error(member):
    async def scenario():
        comm = communicator(member)
        await comm.connect()
        await comm.send_to(bytes_data=b"\x00\x01")
        reply = await comm.receive_json_from(timeout=5)
        assert reply == {"error": "expected a text frame holding JSON", "topic": None}
        await comm.disconnect()

    run(scenario)


def test_subscriptions_are_capped(member, monkeypatch):
    from argus import consumers

    monkeypatch.setattr(consumers, "MAX_SUBSCRIPTIONS", 1)

    async def scenario():
        comm, ack = await subscribed(member)
        assert ack["subscribed"] == "org"
        # Subscribing again to the same topic is fine; a second topic is over the cap.
        await comm.send_json_to({"subscribe": "org", "after": None})
        assert "subscribed" in await comm.receive_json_from(timeout=5)
        consumers.events.register_topic("probe", lambda scope, arg: ack_org)
        await comm.send_json_to({"subscribe": "probe", "after": None})
        assert await comm.receive_json_from(timeout=5) == {
            "error": "at most 1 subscriptions",
            "topic": "probe",
        }
        await comm.disconnect()

    ack_org = member.memberships.get().organization_id
    try:
        run(scenario)
    finally:
        events._hooks.pop("probe", None)


def test_logout_closes_the_sessions_sockets(member, client):
    from importlib import import_module

    from django.conf import settings

    client.force_login(member)
    session = import_module(settings.SESSION_ENGINE).SessionStore(client.session.session_key)

    async def scenario():
        comm, ack = await subscribed(member, None, session)
        assert ack["subscribed"] == "org"
        await sync_to_async(client.logout)()
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}

    run(scenario)


def test_a_role_change_closes_the_users_sockets_so_they_resubscribe(member, organization):
    from orgs import services
    from orgs.choices import Role
    from orgs.models import Membership
    from orgs.permissions import Principal
    from tests.support.personas import make_user

    admin = make_user("boss@acme.test")
    Membership.objects.create(user=admin, organization=organization, role=Role.ADMIN)
    acting = Principal.member(admin, organization)
    membership = member.memberships.get()

    async def scenario():
        comm, ack = await subscribed(member)
        assert ack["subscribed"] == "org"
        await sync_to_async(services.change_role)(acting, membership, Role.VIEWER)
        event = await comm.receive_json_from(timeout=5)
        assert (event["type"], event["data"]) == (
            "member.role_changed",
            {"user": member.pk, "role": "VIEWER"},
        )
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
        # Removed from the organization: a new socket can no longer subscribe to it.
        await sync_to_async(services.remove_member)(acting, membership)
        again = communicator(member)
        assert (await again.connect())[0]
        await again.send_json_to({"subscribe": "org", "after": None})
        assert "error" in await again.receive_json_from(timeout=5)
        await again.disconnect()

    run(scenario)


def test_an_api_key_socket_is_rechecked_on_every_subscription(member, organization):
    from datetime import timedelta

    from orgs import services
    from orgs.permissions import Principal

    principal = Principal.member(member, organization)
    key, secret = services.create_api_key(principal, "socket", scopes=["read"])
    authenticated = services.authenticate_api_key(secret)
    scope = {"user": member, "api_key": authenticated, "api_key_hash": authenticated.matched_hash}
    assert events.authorize(scope, "org") == organization.pk
    services.rotate_api_key(principal, key, grace=timedelta(minutes=5))
    assert events.authorize(scope, "org") == organization.pk  # the old secret, in its grace
    services.rotate_api_key(principal, key)  # no grace: the handshake's secret is gone
    assert events.authorize(scope, "org") is None
