"""Puts the organization the user works in, and the acting principal, on every request."""

import ipaddress

from django.utils.functional import SimpleLazyObject

from orgs.permissions import Principal
from orgs.services import current_organization


class CurrentOrganizationMiddleware:
    """``request.organization``: looked up once, on first use, per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.organization = SimpleLazyObject(
            lambda: current_organization(request.user, request.session)
        )
        return self.get_response(request)


def client_ip(meta: dict) -> str | None:
    """The caller's address as Django saw it (``REMOTE_ADDR``), if it is a valid IP."""
    try:
        return str(ipaddress.ip_address(meta.get("REMOTE_ADDR", "")))
    except ValueError:
        return None


def request_context(request) -> dict:
    """Where a request comes from, for the audit trail."""
    return {
        "ip": client_ip(request.META),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],
        "request_id": getattr(request, "id", ""),
    }


def request_principal(request, channel: str = "console") -> Principal | None:
    """The principal a request acts as: its API key (``request.auth``) or the signed-in
    user in the current organization; ``None`` without either."""
    from orgs.models import ApiKey

    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return Principal.for_api_key(auth, channel="api", **request_context(request))
    user = request.user
    organization = getattr(request, "organization", None)
    if not user.is_authenticated or not organization:
        return None
    organization = getattr(organization, "_wrapped", organization)  # the real row, not a proxy
    return Principal.member(user, organization, channel=channel, **request_context(request))
