"""Realtime topic kinds owned by the orgs app."""

from orgs.permissions import Action, can, scope_principal


def org_topic(scope: dict, arg: str | None) -> int | None:
    """``org``: the connection's organization (its key's, or its session's current one),
    for principals who may view it."""
    if arg is not None:
        return None
    principal = scope_principal(scope)
    if principal is None or not can(principal, Action.VIEW, principal.organization):
        return None
    return principal.organization.pk
