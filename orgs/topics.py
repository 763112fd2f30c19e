"""Realtime topic kinds owned by the orgs app."""

from orgs.permissions import Action, Principal, can
from orgs.services import current_organization


def org_topic(scope: dict, arg: str | None) -> int | None:
    """``org``: the connection's current organization, for members who may view it."""
    if arg is not None:
        return None
    user = scope.get("user")
    organization = current_organization(user, scope.get("session"))
    if organization is None:
        return None
    principal = Principal.member(user, organization)
    return organization.pk if can(principal, Action.VIEW, organization) else None
