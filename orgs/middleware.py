"""Puts the organization the user works in on every request."""

from django.utils.functional import SimpleLazyObject

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
