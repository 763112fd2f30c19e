"""Realtime topic kinds owned by the tools app."""

from orgs.permissions import Action, scope_principal
from tools.models import MCPServer


def server_topic(scope: dict, arg: str | None) -> int | None:
    """``server:<id>``: a server the connection's principal may view."""
    if arg is None or not arg.isdigit():
        return None
    principal = scope_principal(scope)
    if principal is None:
        return None
    server = (
        MCPServer.objects.for_user(principal, Action.VIEW)
        .filter(pk=int(arg))
        .values_list("organization_id", flat=True)
        .first()
    )
    return server
