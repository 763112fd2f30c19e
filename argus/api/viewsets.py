"""The base API viewset: apps declare a queryset, a serializer and, where they differ
from the defaults, the actions their endpoints need; permission is enforced here once.

- The queryset is narrowed with ``for_user(principal, "view")``: an object the caller
  may not see (another organization's, say) is a 404, never a 403.
- Each DRF action maps to a permission action (``permission_actions``, or ``permission_action``
  on an ``@action``); a visible object the caller may not act on is a 403.
- Writes run in one transaction and are re-checked afterwards: the result must still be
  visible to the caller, or the write is rolled back.
- ``session_only`` endpoints refuse API keys (key management).
"""

from django.db import transaction
from rest_framework import exceptions, mixins, viewsets

from orgs.middleware import request_principal
from orgs.permissions import Action, can, can_create, denial, still_visible

SAFE_ACTIONS = {"list", "retrieve", "metadata"}


class OrgViewSet(viewsets.GenericViewSet):
    """Organization-scoped endpoints of one model."""

    permission_actions = {
        "list": Action.VIEW,
        "retrieve": Action.VIEW,
        "create": Action.CHANGE,
        "update": Action.CHANGE,
        "partial_update": Action.CHANGE,
        "destroy": Action.CHANGE,
    }
    # Set per ``@action(..., permission_action=...)``.
    permission_action = None
    session_only = False
    principal = None

    def perform_authentication(self, request):
        super().perform_authentication(request)
        if request.user.is_authenticated:
            self.principal = request_principal(request, channel="api")

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.session_only and request.auth is not None:
            raise exceptions.PermissionDenied(
                "This endpoint is not available with an API key; use the console."
            )
        if self.principal is None:
            raise exceptions.PermissionDenied("You are not a member of any organization.")
        if not self.principal.is_member:
            raise exceptions.PermissionDenied(
                "This API key's creator is no longer a member of its organization."
            )

    @property
    def model(self):
        return self.queryset.model

    def required_action(self) -> str:
        if self.permission_action is not None:
            return self.permission_action
        return self.permission_actions.get(self.action, Action.CHANGE)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset.none()
        return self.queryset.all().for_user(self.principal, Action.VIEW)

    def filter_queryset(self, queryset):
        # List filters narrow lists only: a detail route (``/servers/5/tools/?q=x``)
        # must not lose its object to a query parameter meant for something else.
        if self.detail:
            return queryset
        return super().filter_queryset(queryset)

    def check_permissions(self, request):
        super().check_permissions(request)
        principal = getattr(self, "principal", None)
        if principal is None or self.detail or self.action in SAFE_ACTIONS:
            return
        if self.action == "create" and not self.may_create():
            raise exceptions.PermissionDenied(
                denial(principal, Action.CHANGE, self.model, creating=True)
            )

    def may_create(self) -> bool:
        """Whether the caller gets as far as a create (the service checks the rest)."""
        return can_create(self.principal, self.model)

    def check_object_permissions(self, request, obj):
        super().check_object_permissions(request, obj)
        action = self.required_action()
        if action != Action.VIEW and not can(self.principal, action, obj):
            raise exceptions.PermissionDenied(denial(self.principal, action, type(obj)))

    def write(self, service, *args, **kwargs):
        """Call a service in a transaction and re-check that its result (a row of this
        model) is still visible to the caller; otherwise the write is rolled back."""
        with transaction.atomic():
            result = service(self.principal, *args, **kwargs)
            obj = result[0] if isinstance(result, tuple) else result
            if isinstance(obj, self.model) and not still_visible(self.principal, obj):
                raise exceptions.PermissionDenied("The result would be outside what you may see.")
        return result


class OrgModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    OrgViewSet,
):
    """List, detail, create, update and delete of one model; writes go to services
    through ``perform_*`` overrides and :meth:`OrgViewSet.write`."""
