"""The ``agent:<id>`` topic: permission-checked, and it carries status changes and
approval decisions as they commit."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from agents import services
from agents.choices import AgentStatus
from agents.models import ApprovalRequest
from argus.consumers import EventConsumer

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(user):
    comm = WebsocketCommunicator(EventConsumer.as_asgi(), "/ws/")
    comm.scope["user"] = user
    comm.scope["session"] = {}
    return comm


async def subscribe(user, topic):
    comm = communicator(user)
    assert (await comm.connect())[0]
    await comm.send_json_to({"subscribe": topic, "after": None})
    return comm, await comm.receive_json_from(timeout=5)


def test_the_agent_topic_follows_status_and_approvals(personas):
    manager = personas.principal("MANAGER")
    admin = personas.principal("ADMIN")
    agent = services.create_agent(manager, name="Scout", role="MASTER")
    request = ApprovalRequest.objects.get(agent=agent)

    async def scenario():
        viewer, ack = await subscribe(personas.viewer, f"agent:{agent.pk}")
        assert ack["subscribed"] == f"agent:{agent.pk}"
        outsider, refused = await subscribe(personas.outsider, f"agent:{agent.pk}")
        assert "subscribed" not in refused
        await outsider.disconnect()

        await sync_to_async(services.approve_request)(admin, request, "looks right")
        seen = [await viewer.receive_json_from(timeout=5) for _ in range(2)]
        by_type = {event["type"]: event["data"] for event in seen}
        assert by_type["approval.decided"]["status"] == "approved"
        assert by_type["agent.status"]["status"] == AgentStatus.ACTIVE
        assert by_type["agent.status"]["previous"] == AgentStatus.PENDING_VALIDATION

        await sync_to_async(services.suspend_agent)(manager, agent, "maintenance window")
        event = await viewer.receive_json_from(timeout=5)
        assert event["type"] == "agent.status"
        assert event["data"]["status"] == AgentStatus.INACTIVE
        assert event["data"]["reason"] == "maintenance window"
        await viewer.disconnect()

    async_to_sync(scenario)()


def test_an_unknown_or_malformed_agent_topic_is_refused(personas):
    async def scenario():
        for topic in ("agent:999999", "agent:abc", "agent:"):
            comm, answer = await subscribe(personas.admin, topic)
            assert "subscribed" not in answer, topic
            await comm.disconnect()

    async_to_sync(scenario)()
