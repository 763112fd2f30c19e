"""REST endpoints of the agents app: agents and their hierarchy, tool grants, approval
requests. Writes call ``agents.services``; permission is the base viewset's and the
services' own."""

from django.db.models import BooleanField, ExpressionWrapper, OuterRef, Q, Subquery
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from agents import services
from agents.api import serializers
from agents.choices import ApprovalKind, ApprovalStatus
from agents.filters import AgentFilter, ApprovalFilter, ToolGrantFilter
from agents.models import Agent, ApprovalRequest, ToolGrant
from argus.api.viewsets import OrgModelViewSet, OrgViewSet
from argus.errors import ServiceError
from orgs.permissions import Action
from orgs.services import require_session

REPARENT_TO = OpenApiParameter(
    "reparent_to",
    OpenApiTypes.INT,
    OpenApiParameter.QUERY,
    required=False,
    description="The id of the agent the children move to; required when there are children.",
)
DECIDING = "Deciding an approval request"


@extend_schema_view(
    destroy=extend_schema(
        parameters=[REPARENT_TO],
        description="Delete an agent; one with children needs ``reparent_to`` (409 otherwise).",
    )
)
class AgentViewSet(OrgModelViewSet):
    """Agents: configuration (``change``), suspend and recover (``operate``), resume and
    asking for approval again (``change``). The status is never written directly."""

    queryset = (
        Agent.objects.select_related("created_by", "approved_by")
        .annotate(
            pending_approval=Subquery(
                ApprovalRequest.objects.filter(
                    agent=OuterRef("pk"),
                    kind=ApprovalKind.AGENT_ACTIVATION,
                    status=ApprovalStatus.PENDING,
                ).values("pk")[:1]
            ),
            paused=ExpressionWrapper(
                Q(organization__agents_paused_at__isnull=False), output_field=BooleanField()
            ),
        )
        .order_by("name", "pk")
    )
    serializer_class = serializers.AgentSerializer
    filterset_class = AgentFilter

    def _fresh(self, agent: Agent) -> Agent:
        """The agent as lists show it (with its pending request and the kill switch)."""
        return self.get_queryset().get(pk=agent.pk)

    def perform_create(self, serializer):
        agent = self.write(services.create_agent, **serializer.service_fields())
        serializer.instance = self._fresh(agent)

    def perform_update(self, serializer):
        agent = self.write(
            services.update_agent, serializer.instance, **serializer.service_fields()
        )
        serializer.instance = self._fresh(agent)

    def perform_destroy(self, instance):
        services.delete_agent(self.principal, instance, reparent_to=self._reparent_to())

    def _reparent_to(self) -> Agent | None:
        value = self.request.query_params.get("reparent_to", "").strip()
        if not value:
            return None
        if not value.isdigit():
            raise ServiceError("Give the id of an agent.", field="reparent_to")
        target = Agent.objects.for_user(self.principal, Action.VIEW).filter(pk=int(value)).first()
        if target is None:
            raise ServiceError(f"There is no agent {value}.", field="reparent_to")
        return target

    def _transition(self, service):
        agent = self.get_object()
        payload = serializers.ReasonSerializer(data=self.request.data)
        payload.is_valid(raise_exception=True)
        agent = self.write(service, agent, payload.validated_data.get("reason", ""))
        return Response(self.get_serializer(self._fresh(agent)).data)

    @extend_schema(request=serializers.ReasonSerializer, responses=serializers.AgentSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.OPERATE)
    def suspend(self, request, pk=None):
        """Stop the agent from acting (INACTIVE); ``reason`` is required."""
        return self._transition(services.suspend_agent)

    @extend_schema(request=serializers.ReasonSerializer, responses=serializers.AgentSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.CHANGE)
    def resume(self, request, pk=None):
        """Let a suspended agent act again (ACTIVE)."""
        return self._transition(services.resume_agent)

    @extend_schema(request=serializers.ReasonSerializer, responses=serializers.AgentSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.OPERATE)
    def recover(self, request, pk=None):
        """Clear the agent's error (ERROR → ACTIVE) once its cause is dealt with."""
        return self._transition(services.recover_agent)

    @extend_schema(request=None, responses={201: serializers.ApprovalDetailSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path="request-approval",
        permission_action=Action.CHANGE,
    )
    def request_approval(self, request, pk=None):
        """Ask again for approval of a pending agent whose last request was rejected,
        withdrawn or expired; 409 if it is not pending or already has a request."""
        approval = services.request_approval(self.principal, self.get_object())
        return Response(
            serializers.ApprovalDetailSerializer(approval).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(responses=serializers.AgentNodeSerializer(many=True))
    @action(
        detail=False,
        methods=["get"],
        permission_action=Action.VIEW,
        filter_backends=[],
        pagination_class=None,
    )
    def tree(self, request):
        """The hierarchy of the agents you may view; one whose parent you may not view
        is a root."""
        rows = list(
            Agent.objects.for_user(self.principal, Action.VIEW)
            .order_by("name", "pk")
            .values_list("id", "name", "role", "status", "parent_id")
        )
        nodes = {
            pk: {"id": pk, "name": name, "role": role, "status": status_, "children": []}
            for pk, name, role, status_, _parent in rows
        }
        roots = []
        for pk, _name, _role, _status, parent_id in rows:
            siblings = nodes[parent_id]["children"] if parent_id in nodes else roots
            siblings.append(nodes[pk])
        return Response(roots)

    @extend_schema(responses=serializers.EffectiveToolSerializer(many=True))
    @action(
        detail=True,
        methods=["get"],
        url_path="effective-tools",
        permission_action=Action.VIEW,
        filter_backends=[],
        pagination_class=None,
    )
    def effective_tools(self, request, pk=None):
        """Every tool the agent or one of its ancestors holds a grant for, resolved: whether
        the agent may use it, why, and the tightest limits along its chain."""
        permissions = services.effective_tools(self.get_object())
        return Response(serializers.EffectiveToolSerializer(permissions, many=True).data)


class ToolGrantViewSet(OrgModelViewSet):
    """Tool grants (``change`` on their agent, which a per-object grant gives too);
    never wider than the parent's, checked by the service."""

    queryset = ToolGrant.objects.select_related("tool", "granted_by")
    serializer_class = serializers.ToolGrantSerializer
    filterset_class = ToolGrantFilter

    def may_create(self) -> bool:
        # Granting needs ``change`` on the agent, which the service checks. A per-object
        # grant gives it without the role that ``can_create`` asks for, so whoever may
        # change some agent gets as far as the service.
        return (
            super().may_create() or Agent.objects.for_user(self.principal, Action.CHANGE).exists()
        )

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = list(page if page is not None else queryset)
        # One resolver for the page: the hierarchy and the grants of its tools, two queries.
        resolver = services.Resolver(
            self.principal.organization.pk, {grant.tool_id for grant in rows}
        )
        context = {**self.get_serializer_context(), "resolver": resolver}
        data = self.get_serializer(rows, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = self.write(
            services.grant_tool, data["agent"], data["tool"], **serializer.service_fields()
        )

    def perform_update(self, serializer):
        serializer.instance = self.write(
            services.update_tool_grant, serializer.instance, **serializer.service_fields()
        )

    def perform_destroy(self, instance):
        services.revoke_tool_grant(self.principal, instance)


class ApprovalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgViewSet):
    """Approval requests. Deciding (``approve``) is for a person signed in to the console,
    never an API key, and with four-eyes on never the requester; the requester withdraws."""

    queryset = ApprovalRequest.objects.select_related("requested_by", "decided_by")
    serializer_class = serializers.ApprovalSerializer
    filterset_class = ApprovalFilter

    def get_serializer_class(self):
        if self.action == "list":
            return serializers.ApprovalSerializer
        return serializers.ApprovalDetailSerializer

    def check_object_permissions(self, request, obj):
        # Said before the role check, so an API key hears why it may never decide.
        if self.action in ("approve", "reject"):
            require_session(self.principal, DECIDING)
        super().check_object_permissions(request, obj)

    def _decide(self, service):
        approval = self.get_object()
        payload = serializers.ReasonSerializer(data=self.request.data)
        payload.is_valid(raise_exception=True)
        # Not in ``write``'s transaction: an expired request is closed (committed) as
        # expired before the 409 says so.
        approval = service(self.principal, approval, payload.validated_data.get("reason", ""))
        return Response(serializers.ApprovalDetailSerializer(approval).data)

    @extend_schema(
        request=serializers.ReasonSerializer, responses=serializers.ApprovalDetailSerializer
    )
    @action(detail=True, methods=["post"], permission_action=Action.APPROVE)
    def approve(self, request, pk=None):
        """Approve a pending request (an agent becomes ACTIVE with the approved scope; a
        tool change is accepted). 403 with an API key or, with four-eyes, for the
        requester; 409 once decided, expired, or if the target changed since."""
        return self._decide(services.approve_request)

    @extend_schema(
        request=serializers.ReasonSerializer, responses=serializers.ApprovalDetailSerializer
    )
    @action(detail=True, methods=["post"], permission_action=Action.APPROVE)
    def reject(self, request, pk=None):
        """Reject a pending request; ``reason`` is required. Same rules as approving."""
        return self._decide(services.reject_request)

    @extend_schema(
        request=serializers.ReasonSerializer, responses=serializers.ApprovalDetailSerializer
    )
    @action(detail=True, methods=["post"], permission_action=Action.VIEW)
    def withdraw(self, request, pk=None):
        """Take back your own pending request (403 for anyone else, 409 once decided)."""
        return self._decide(services.withdraw_request)
