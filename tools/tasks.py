"""Celery tasks of the tools app: health checks and catalog refreshes.

Each takes a server id and tolerates a deleted server. The dispatcher runs on beat
(``ARGUS_HEALTH_DISPATCH_SECONDS``); it claims each due server with a lease, so two
dispatchers or workers never check one server at once.
"""

import logging

from celery import shared_task

from argus.errors import ServiceError
from orgs.permissions import Principal
from tools import services
from tools.choices import ServerStatus
from tools.models import MCPServer

logger = logging.getLogger(__name__)


@shared_task(name="tools.dispatch_health_checks", ignore_result=True)
def dispatch_health_checks() -> int:
    """Enqueue a check of every server that is due; returns how many."""
    return len(services.dispatch_checks(lambda server_id: check_server.delay(server_id)))


@shared_task(name="tools.check_server", ignore_result=True)
def check_server(server_id: int) -> None:
    """Check one server's health (its lease was taken by the dispatcher)."""
    services.run_check(server_id)


@shared_task(name="tools.refresh_server", ignore_result=True)
def refresh_server(server_id: int) -> None:
    """After a server is created or reconfigured: check it (unless a check is running
    already), then sync its catalog."""
    timeout_s = MCPServer.objects.filter(pk=server_id).values_list("timeout_s", flat=True).first()
    if timeout_s is None:
        return
    if services.claim_check(server_id, timeout_s):
        server = services.run_check(server_id)
    else:
        server = MCPServer.objects.select_related("organization").filter(pk=server_id).first()
    if server is None or server.status in (ServerStatus.OFFLINE, ServerStatus.MAINTENANCE):
        return
    try:
        services.sync_server(Principal.system(server.organization), server)
    except ServiceError as exc:
        logger.warning("sync of server %s failed: %s", server_id, exc.message)
