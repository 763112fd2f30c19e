"""REST endpoints of the tools app: servers and the tool catalog. Writes call services."""

from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from argus.api.viewsets import OrgModelViewSet, OrgViewSet
from orgs.permissions import Action
from tools import services
from tools.api import serializers
from tools.choices import ToolState
from tools.filters import ServerFilter, ToolFilter
from tools.models import MCPServer, Tool

WRITE_FIELDS = (*services.SERVER_FIELDS, "secrets")


def test_payload(server, result) -> dict:
    info = result.server
    return {
        "ok": result.ok,
        "status": server.status if server is not None else None,
        "timings": result.timings,
        "tool_count": result.tool_count,
        "error": result.error,
        "reason": result.reason,
        "server_name": info.name if info else "",
        "server_version": info.version if info else "",
        "protocol_version": info.protocol_version if info else "",
    }


class ServerViewSet(OrgModelViewSet):
    """MCP servers: configuration (``change``), tests and syncs (``operate``)."""

    queryset = MCPServer.objects.annotate(
        tool_count=Count("tools", filter=~Q(tools__state=ToolState.REMOVED))
    ).order_by("name", "pk")
    serializer_class = serializers.ServerSerializer
    filterset_class = ServerFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _data(self, serializer):
        return {
            key: value for key, value in serializer.validated_data.items() if key in WRITE_FIELDS
        }

    def perform_create(self, serializer):
        serializer.instance = self.write(services.create_server, **self._data(serializer))

    def perform_update(self, serializer):
        serializer.instance = self.write(
            services.update_server, serializer.instance, **self._data(serializer)
        )

    def perform_destroy(self, instance):
        services.delete_server(self.principal, instance)

    @extend_schema(request=None, responses=serializers.TestResultSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.OPERATE)
    def test(self, request, pk=None):
        """Connect now (initialize + tools/list) and update the status; never a 5xx for a
        server that fails: ``ok`` is false and ``error`` says why."""
        server = self.get_object()
        result = services.test_server(self.principal, server)
        server.refresh_from_db()
        return Response(serializers.TestResultSerializer(test_payload(server, result)).data)

    @extend_schema(request=None, responses=serializers.SyncResultSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.OPERATE)
    def sync(self, request, pk=None):
        """List the server's tools, resources and prompts and update the catalog."""
        result = services.sync_server(self.principal, self.get_object())
        return Response(serializers.SyncResultSerializer(result).data)

    @extend_schema(
        request=serializers.MaintenanceSerializer, responses=serializers.ServerSerializer
    )
    @action(detail=True, methods=["post"], permission_action=Action.CHANGE)
    def maintenance(self, request, pk=None):
        """Enter (``on: true``) or leave (``on: false``) maintenance."""
        payload = serializers.MaintenanceSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        server = self.write(
            services.set_maintenance,
            self.get_object(),
            payload.validated_data["on"],
            payload.validated_data.get("reason", ""),
        )
        return Response(self.get_serializer(server).data)

    @extend_schema(responses=serializers.ToolSerializer(many=True))
    @action(detail=True, methods=["get"], permission_action=Action.VIEW)
    def tools(self, request, pk=None):
        """The server's tools, filterable like ``/tools/``."""
        server = self.get_object()
        queryset = ToolFilter(
            request.query_params,
            queryset=Tool.objects.for_user(self.principal, Action.VIEW)
            .filter(server=server)
            .select_related("server"),
        ).qs
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializers.ToolSerializer(page, many=True).data)

    def _entries(self, request, serializer_class):
        server = self.get_object()
        queryset = serializer_class.Meta.model.objects.filter(server=server)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)

    @extend_schema(responses=serializers.ResourceSerializer(many=True))
    @action(detail=True, methods=["get"], permission_action=Action.VIEW)
    def resources(self, request, pk=None):
        """The resources the server lists (read-only catalog entries)."""
        return self._entries(request, serializers.ResourceSerializer)

    @extend_schema(responses=serializers.PromptSerializer(many=True))
    @action(detail=True, methods=["get"], permission_action=Action.VIEW)
    def prompts(self, request, pk=None):
        """The prompts the server lists (read-only catalog entries)."""
        return self._entries(request, serializers.PromptSerializer)


class ToolViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgViewSet):
    """The tool catalog across servers; drift acceptance (``approve``) and calls (``operate``)."""

    queryset = Tool.objects.select_related("server")
    serializer_class = serializers.ToolSerializer
    filterset_class = ToolFilter

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.ToolDetailSerializer
        return super().get_serializer_class()

    @extend_schema(request=serializers.AcceptSerializer, responses=serializers.ToolDetailSerializer)
    @action(
        detail=True, methods=["post"], url_path="accept-change", permission_action=Action.APPROVE
    )
    def accept_change(self, request, pk=None):
        """Accept a changed tool's new definition (it becomes the pinned one). With
        ``definition_hash`` (the one reviewed), a definition that changed again since is
        refused with 409."""
        payload = serializers.AcceptSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tool = self.write(
            services.accept_tool_change,
            self.get_object(),
            reviewed_hash=payload.validated_data.get("definition_hash"),
        )
        return Response(serializers.ToolDetailSerializer(tool).data)

    @extend_schema(request=serializers.CallSerializer, responses=serializers.CallResultSerializer)
    @action(detail=True, methods=["post"], permission_action=Action.OPERATE)
    def call(self, request, pk=None):
        """Call the tool with ``arguments`` (checked against its input schema). A tool's own
        error is a 200 with ``is_error``; a server that fails is a 400 naming why."""
        payload = serializers.CallSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = services.call_tool(
            self.principal,
            self.get_object(),
            payload.validated_data["arguments"],
            timeout=payload.validated_data.get("timeout_s"),
        )
        return Response(
            serializers.CallResultSerializer(
                {
                    "is_error": result.is_error,
                    "latency_ms": result.latency_ms,
                    "result": result.result,
                }
            ).data
        )
