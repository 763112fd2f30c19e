"""Cross-process realtime: a real Celery worker publishes, a real daphne delivers."""

import asyncio
import json

import pytest
import websockets
from django.conf import settings
from django.test import Client

from argus import events
from tests.support import processes
from tests.support.celery_tasks import publish_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


async def _subscribe(port, cookie, after):
    socket = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/",
        additional_headers={"Cookie": cookie},
        origin=f"http://127.0.0.1:{port}",
    )
    await socket.send(json.dumps({"subscribe": "org", "after": after}))
    ack = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert ack["subscribed"] == "org", ack
    return socket, ack


async def _receive(socket, count, timeout=20):
    return [json.loads(await asyncio.wait_for(socket.recv(), timeout)) for _ in range(count)]


async def _nothing_more(socket, wait=0.5):
    try:
        extra = await asyncio.wait_for(socket.recv(), wait)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message {extra}")


def test_worker_event_reaches_browser_socket_and_reconnect_catches_up(
    member, organization, tmp_path
):
    client = Client()
    client.force_login(member)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    stream = events.Stream(organization.pk, "org")
    env = processes.child_env()
    port = processes.free_port()

    with (
        processes.web(port, env, tmp_path / "web.log"),
        processes.worker(env, tmp_path / "worker.log"),
    ):

        async def scenario():
            socket, ack = await _subscribe(port, cookie, None)
            start = ack["last_id"]
            publish_event.delay(organization.pk, "probe.live", {"n": 1})
            [live] = await _receive(socket, 1)
            assert live["id"] == start + 1
            assert (live["topic"], live["type"], live["data"]) == ("org", "probe.live", {"n": 1})
            await socket.close()

            # While disconnected, the worker publishes three more.
            for n in (2, 3, 4):
                publish_event.delay(organization.pk, "probe.missed", {"n": n})
            await asyncio.to_thread(
                processes.wait_until,
                lambda: events.last_id(stream) >= start + 4,
                20,
                "worker published the missed events",
            )

            socket, ack = await _subscribe(port, cookie, live["id"])
            assert ack["truncated"] is False
            missed = await _receive(socket, 3)
            assert [e["id"] for e in missed] == [start + 2, start + 3, start + 4]
            assert [e["data"]["n"] for e in missed] == [2, 3, 4]

            publish_event.delay(organization.pk, "probe.live", {"n": 5})
            [after] = await _receive(socket, 1)
            assert (after["id"], after["data"]) == (start + 5, {"n": 5})
            assert await _nothing_more(socket)
            await socket.close()

        asyncio.run(scenario())


def test_socket_from_foreign_origin_is_refused(member, tmp_path):
    """Even with a valid session cookie: the origin check stands on its own."""
    client = Client()
    client.force_login(member)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    port = processes.free_port()
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):

        async def scenario():
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/",
                    additional_headers={"Cookie": cookie},
                    origin="http://evil.example.com",
                )
            assert refused.value.response.status_code == 403
            # The same cookie from the right origin is welcome.
            socket, _ack = await _subscribe(port, cookie, None)
            await socket.close()

        asyncio.run(scenario())


def test_unauthenticated_socket_is_refused(tmp_path):
    port = processes.free_port()
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):

        async def scenario():
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/", origin=f"http://127.0.0.1:{port}"
                )
            assert refused.value.response.status_code == 403

        asyncio.run(scenario())


def test_api_key_socket_needs_no_origin_and_closes_when_revoked(member, organization, tmp_path):
    from orgs import services
    from orgs.permissions import Principal

    principal = Principal.member(member, organization)
    key, secret = services.create_api_key(principal, "socket", scopes=["read"])
    port = processes.free_port()
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):

        async def scenario():
            url = f"ws://127.0.0.1:{port}/ws/"
            for bad in ("argus_sk_wrong", "not-a-key"):
                with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                    await websockets.connect(url, additional_headers={"X-API-Key": bad})
                assert refused.value.response.status_code == 403
            socket = await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {secret}"}
            )
            await socket.send(json.dumps({"subscribe": "org", "after": None}))
            ack = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert ack["subscribed"] == "org", ack
            await asyncio.to_thread(
                events.send_event, events.Stream(organization.pk, "org"), "probe.key", {}
            )
            [event] = await _receive(socket, 1)
            assert event["type"] == "probe.key"
            await asyncio.to_thread(services.revoke_api_key, principal, key)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await _receive(socket, 1)
            assert closed.value.rcvd.code == 4403
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                await websockets.connect(url, additional_headers={"X-API-Key": secret})
            assert refused.value.response.status_code == 403

        asyncio.run(scenario())
