"""Realtime and Celery for servers: the ``server:<id>`` topic over a WebsocketCommunicator,
and a real Celery worker that checks and syncs a real demo server."""

from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from argus.consumers import EventConsumer
from orgs.permissions import Principal
from tests.support import processes
from tests.support.mcp import demo_command
from tests.tools.factories import make_server
from tools import services, tasks
from tools.choices import ServerStatus
from tools.models import MCPServer

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = str(Path(__file__).resolve().parents[2])


def communicator(user):
    comm = WebsocketCommunicator(EventConsumer.as_asgi(), "/ws/")
    comm.scope["user"] = user
    comm.scope["session"] = {}
    return comm


def test_server_topic_delivers_status_changes_to_members_only(personas):
    server = make_server(personas.org_a)
    manager = personas.principal("MANAGER")

    async def scenario():
        viewer = communicator(personas.viewer)
        assert (await viewer.connect())[0]
        await viewer.send_json_to({"subscribe": f"server:{server.pk}", "after": None})
        ack = await viewer.receive_json_from(timeout=5)
        assert ack["subscribed"] == f"server:{server.pk}"

        outsider = communicator(personas.outsider)
        assert (await outsider.connect())[0]
        await outsider.send_json_to({"subscribe": f"server:{server.pk}", "after": None})
        refused = await outsider.receive_json_from(timeout=5)
        assert "subscribed" not in refused
        await outsider.disconnect()

        await sync_to_async(services.set_maintenance)(manager, server, True, "upgrade")
        event = await viewer.receive_json_from(timeout=5)
        assert event["type"] == "server.status"
        assert event["data"]["status"] == ServerStatus.MAINTENANCE
        assert event["data"]["previous"] == ServerStatus.UNKNOWN
        await viewer.disconnect()

    async_to_sync(scenario)()


def test_the_task_bodies(personas):
    argv = demo_command()
    server = make_server(personas.org_a, command=argv[0], args=argv[1:], cwd=ROOT)
    tasks.refresh_server(server.pk)
    server.refresh_from_db()
    assert server.status == ServerStatus.ONLINE or server.status == ServerStatus.DEGRADED
    assert server.tools.filter(name="echo").exists()
    MCPServer.objects.filter(pk=server.pk).update(next_check_at=timezone.now())
    tasks.check_server(server.pk)  # a check without a lease still runs
    tasks.check_server(999_999)  # a deleted server is tolerated
    tasks.refresh_server(999_999)


@pytest.mark.slow
def test_a_real_worker_checks_and_syncs_a_new_server(personas, tmp_path):
    env = processes.child_env()
    argv = demo_command()
    with processes.worker(env, tmp_path / "worker.log"):
        # Created through the service: the refresh is enqueued on commit.
        server = services.create_server(
            Principal.system(personas.org_a),
            name="worker demo",
            transport="stdio",
            command=argv[0],
            args=argv[1:],
            cwd=ROOT,
        )
        processes.wait_until(
            lambda: MCPServer.objects.get(pk=server.pk).tools.filter(name="echo").exists(),
            60,
            "the worker did not check and sync the new server: "
            + (tmp_path / "worker.log").read_text(errors="replace")[-3000:],
        )
        # The beat-driven dispatcher, sent by hand here: it claims the due server once.
        MCPServer.objects.filter(pk=server.pk).update(next_check_at=timezone.now())
        before = MCPServer.objects.get(pk=server.pk).last_checked_at
        tasks.dispatch_health_checks.delay()
        processes.wait_until(
            lambda: MCPServer.objects.get(pk=server.pk).last_checked_at != before,
            60,
            "the dispatched check never ran",
        )
        assert MCPServer.objects.get(pk=server.pk).check_lease_until is None
