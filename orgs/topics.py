"""Realtime topic kinds owned by the orgs app."""

from orgs.services import current_organization


def org_topic(scope: dict, arg: str | None) -> int | None:
    """``org``: the connection's current organization, for any of its members."""
    if arg is not None:
        return None
    organization = current_organization(scope.get("user"), scope.get("session"))
    return organization.pk if organization else None
