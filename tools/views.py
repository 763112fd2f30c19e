"""Console pages of the tools app: servers (list, form with "Test connection", detail
with health and catalog, actions, access) and the tool catalog (list, detail with the
schema, "Try it" and the review of a changed definition)."""

from __future__ import annotations

import difflib
import json
import logging

from django.contrib import messages
from django.db.models import Count, Q
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views import View
from django.views.generic import DetailView
from django.views.generic.detail import SingleObjectMixin

from argus.console import live_events, newest_event_id
from argus.errors import ServiceError
from argus.generic import (
    ObjectActionView,
    ObjectCreateView,
    ObjectFormView,
    ObjectGrantsView,
    ObjectListView,
    OrgViewMixin,
)
from orgs.permissions import Action, can
from orgs.services import require_create
from tools import forms, services
from tools.choices import ServerStatus, ToolState
from tools.filters import ServerFilter, ToolFilter
from tools.models import MCPServer, ServerCheck, Tool

logger = logging.getLogger(__name__)

# How many checks the health sparkline draws, and how many failures "Recent errors" lists.
SPARKLINE_CHECKS = 60
RECENT_ERRORS = 10
# Unchanged lines shown around each change of a definition diff.
DIFF_CONTEXT = 3


def is_htmx(request) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


# --- servers --------------------------------------------------------------------------------


class ServerListView(ObjectListView):
    """Servers: health at a glance, filterable by name, status and transport."""

    queryset = MCPServer.objects.annotate(
        tool_count=Count("tools", filter=~Q(tools__state=ToolState.REMOVED)),
        changed_count=Count("tools", filter=Q(tools__state=ToolState.CHANGED)),
    ).order_by("name", "pk")  # explicit: Meta.ordering does not apply to grouped queries
    filterset_class = ServerFilter
    template_name = "tools/server_list.html"
    partial_template_name = "tools/partials/server_table.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # The table was rendered at this event: the live reload replays anything newer,
        # so a change made between rendering and the socket subscribing is not missed.
        context["events_last_id"] = newest_event_id("org", self.principal.organization.pk)
        return context


class ServerFormMixin:
    """The registration and edit form; secrets are write-only, values never rendered."""

    form_class = forms.ServerForm
    template_name = "tools/server_form.html"

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "server": self.object}

    def get_success_url(self):
        return reverse("tools:server_detail", args=[(self.written or self.object).pk])


class ServerCreateView(ServerFormMixin, ObjectCreateView):
    """Register a server (``change`` in the organization)."""

    create_model = MCPServer

    def perform(self, form):
        self.written = services.create_server(self.principal, **form.service_data())
        messages.success(
            self.request,
            f"Server {self.written.name} registered; Argus checks it and lists its tools shortly.",
        )


class ServerEditView(ServerFormMixin, ObjectFormView):
    """Change a server's configuration (``change`` on it)."""

    queryset = MCPServer.objects.all()
    required_action = Action.CHANGE

    def perform(self, form):
        self.written = services.update_server(self.principal, self.object, **form.service_data())
        messages.success(self.request, f"Server {self.written.name} saved.")


class ServerTestNewView(OrgViewMixin, View):
    """The registration form's "Test connection": tries the values typed so far,
    unsaved. htmx gets the result fragment; without it, the form page again."""

    http_method_names = ["post"]
    object = None

    def get_server(self):
        require_create(self.principal, MCPServer)
        return None

    def post(self, request, *args, **kwargs):
        self.object = self.get_server()
        form = forms.ServerForm(request.POST, server=self.object)
        result = error = None
        if form.is_valid():
            try:
                result = services.test_configuration(
                    self.principal, form.service_data(), instance=self.object
                )
            except ServiceError as exc:
                error = exc.message
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        context = {
            "form": form,
            "object": self.object,
            "test_result": result,
            "test_error": error,
            "test_done": True,
        }
        if is_htmx(request):
            return render(request, "tools/partials/test_result.html", context)
        return render(request, "tools/server_form.html", context)


class ServerTestConfigView(ServerTestNewView, SingleObjectMixin):
    """The edit form's "Test connection": the saved server with the typed changes."""

    queryset = MCPServer.objects.all()
    required_action = Action.CHANGE

    def get_server(self):
        return self.get_object()


class ServerDeleteView(ObjectActionView):
    """Delete a server, after a confirmation page (``change`` on it)."""

    queryset = MCPServer.objects.all()
    required_action = Action.CHANGE
    http_method_names = ["get", "post"]
    success_message = "Server {object.name} deleted with its catalog and health history."

    def get(self, request, *args, **kwargs):
        self.object = self.get_object()
        tool_count = self.object.tools.exclude(state=ToolState.REMOVED).count()
        return render(
            request, "tools/server_delete.html", {"object": self.object, "tool_count": tool_count}
        )

    def perform(self, server):
        services.delete_server(self.principal, server)

    def get_success_url(self):
        return reverse("tools:server_list")


def sparkline(checks: list[ServerCheck], width: int = 320, height: int = 56, pad: int = 4):
    """The geometry of an inline SVG of checks (oldest first): a line through the
    latencies of successful checks, a mark for each failure. ``None`` without checks."""
    if not checks:
        return None
    latencies = [check.latency_ms for check in checks if check.ok and check.latency_ms is not None]
    top = max(latencies, default=0) or 1.0
    step = (width - 2 * pad) / max(len(checks) - 1, 1)
    points, failures = [], []
    for index, check in enumerate(checks):
        x = round(pad + index * step, 1)
        if check.ok and check.latency_ms is not None:
            y = round(height - pad - (check.latency_ms / top) * (height - 2 * pad), 1)
            points.append({"x": x, "y": y, "check": check})
        else:
            failures.append({"x": x, "check": check})
    return {
        "width": width,
        "height": height,
        "bottom": height - pad,
        "polyline": " ".join(f"{point['x']},{point['y']}" for point in points),
        "points": points,
        "failures": failures,
        "count": len(checks),
        "max_ms": max(latencies, default=None),
        "min_ms": min(latencies, default=None),
    }


class ServerDetailView(OrgViewMixin, DetailView):
    """One server: configuration, server info, health, catalog, and its actions."""

    queryset = MCPServer.objects.select_related("created_by")
    template_name = "tools/server_detail.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        server = self.object
        checks = list(server.checks.order_by("-checked_at")[:SPARKLINE_CHECKS])
        context["sparkline"] = sparkline(checks[::-1])
        context["recent_errors"] = server.checks.filter(ok=False).order_by("-checked_at")[
            :RECENT_ERRORS
        ]
        context["tools"] = server.tools.order_by("name")
        context["resources"] = server.resources.order_by("uri")
        context["prompts"] = server.prompts.order_by("name")
        context["capabilities_json"] = json.dumps(server.capabilities, indent=2, sort_keys=True)
        context["in_maintenance"] = server.status == ServerStatus.MAINTENANCE
        context["can_operate"] = can(self.principal, Action.OPERATE, server)
        context["can_change"] = can(self.principal, Action.CHANGE, server)
        context["can_see_access"] = can(self.principal, Action.MANAGE, self.principal.organization)
        context.update(live_events(f"server:{server.pk}", server.organization_id))
        return context


class ServerOperationView(ObjectActionView):
    """A POST action that talks to the server (``operate``). Not wrapped in one
    transaction: what the service records on the way (a health check, a sync error)
    is kept even when it then reports a failure."""

    queryset = MCPServer.objects.all()
    required_action = Action.OPERATE
    atomic = False

    def get_success_url(self):
        return reverse("tools:server_detail", args=[self.object.pk])


class ServerTestView(ServerOperationView):
    """Test a saved server now; its status follows the result."""

    def perform(self, server):
        result = services.test_server(self.principal, server)
        if result.ok:
            messages.success(
                self.request,
                f"{server.name} answered in {result.latency_ms:.0f} ms "
                f"and lists {result.tool_count} tool{pluralize(result.tool_count)}.",
            )
        else:
            messages.error(self.request, f"{server.name} failed the test: {result.error}")


class ServerSyncView(ServerOperationView):
    """List the server's tools, resources and prompts into the catalog."""

    def perform(self, server):
        result = services.sync_server(self.principal, server)
        summary = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("added", result.added),
                ("changed", result.changed),
                ("removed", result.removed),
            )
            if names
        ]
        counts = ", ".join(
            f"{count} {word}{pluralize(count)}"
            for count, word in (
                (result.tools, "tool"),
                (result.resources, "resource"),
                (result.prompts, "prompt"),
            )
        )
        messages.success(
            self.request,
            f"Synced {server.name}: {counts}" + (f" ({'; '.join(summary)})." if summary else "."),
        )
        if result.changed:
            changed = len(result.changed)
            messages.warning(
                self.request,
                f"{changed} tool{pluralize(changed)} changed definition and cannot be called "
                "until someone who may approve reviews and accepts the change.",
            )


class ServerMaintenanceView(ObjectActionView):
    """Put a server in maintenance (with a reason) or take it out (``change``)."""

    queryset = MCPServer.objects.all()
    required_action = Action.CHANGE

    def perform(self, server):
        form = forms.MaintenanceForm(self.request.POST)
        if not form.is_valid():
            raise ServiceError("The reason is at most 500 characters.")
        on = form.cleaned_data["on"]
        services.set_maintenance(self.principal, server, on, form.cleaned_data["reason"])
        messages.success(
            self.request,
            f"{server.name} is in maintenance: no checks, no calls."
            if on
            else f"{server.name} is out of maintenance; Argus checks it again now.",
        )

    def get_success_url(self):
        return reverse("tools:server_detail", args=[self.object.pk])


class ServerAccessView(ObjectGrantsView):
    """Who may view, operate or change one server (and its tools) beyond their role."""

    queryset = MCPServer.objects.all()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["back_url"] = reverse("tools:server_detail", args=[self.object.pk])
        context["back_label"] = self.object.name
        return context


# --- tools ----------------------------------------------------------------------------------


class ToolListView(ObjectListView):
    """The tool catalog across servers: search, filter by server, risk and state."""

    queryset = Tool.objects.select_related("server")
    filterset_class = ToolFilter
    template_name = "tools/tool_list.html"
    partial_template_name = "tools/partials/tool_table.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["servers"] = (
            MCPServer.objects.for_user(self.principal, Action.VIEW)
            .order_by("name")
            .values_list("pk", "name")
        )
        context["selected_server"] = self.request.GET.get("server", "")
        return context


def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def definition_diff(before: dict, after: dict, context: int = DIFF_CONTEXT) -> list[dict]:
    """Rows of a side-by-side diff of two definitions as pretty-printed JSON.

    Each row is ``{"kind", "left_no", "left", "right_no", "right"}`` with ``kind``
    ``equal``, ``replace``, ``delete`` or ``insert``; a ``gap`` row stands for unchanged
    lines left out between changes.
    """
    left = pretty_json(before).splitlines()
    right = pretty_json(after).splitlines()
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    rows: list[dict] = []
    shown_until = 0
    for group in matcher.get_grouped_opcodes(context):
        if group[0][1] > shown_until:
            rows.append({"kind": "gap", "skipped": group[0][1] - shown_until})
        for tag, i1, i2, j1, j2 in group:
            for offset in range(max(i2 - i1, j2 - j1)):
                i, j = i1 + offset, j1 + offset
                rows.append(
                    {
                        "kind": tag,
                        "left_no": i + 1 if i < i2 else None,
                        "left": left[i] if i < i2 else "",
                        "right_no": j + 1 if j < j2 else None,
                        "right": right[j] if j < j2 else "",
                    }
                )
            shown_until = i2
    if rows and shown_until < len(left):
        rows.append({"kind": "gap", "skipped": len(left) - shown_until})
    return rows


def call_blocks(result: dict) -> list[dict]:
    """The content blocks of a tool result, ready to render: text as text, anything
    else (images, audio, resources) described, with its JSON."""
    blocks = []
    for block in result.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type", "")
        if kind == "text":
            blocks.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind in ("image", "audio"):
            size = len(str(block.get("data", ""))) * 3 // 4
            blocks.append(
                {"type": kind, "summary": f"{block.get('mimeType', kind)}, about {size} bytes"}
            )
        elif kind == "resource":
            resource = block.get("resource") or {}
            blocks.append(
                {
                    "type": kind,
                    "summary": resource.get("uri", ""),
                    "text": resource.get("text", ""),
                }
            )
        else:
            blocks.append({"type": kind or "unknown", "json": pretty_json(block)})
    return blocks


def present_call(outcome) -> dict:
    """A ``CallResult`` for the template."""
    structured = outcome.result.get("structuredContent")
    return {
        "is_error": outcome.is_error,
        "latency_ms": outcome.latency_ms,
        "blocks": call_blocks(outcome.result),
        "structured": pretty_json(structured) if structured is not None else None,
        "raw": pretty_json(outcome.result),
    }


def why_not_callable(tool: Tool) -> str:
    """Why "Try it" cannot call the tool now, or ``""`` when it can."""
    if tool.state == ToolState.REMOVED:
        return f"{tool.server.name} no longer offers this tool."
    if tool.state == ToolState.CHANGED:
        return "The definition changed since it was accepted; review and accept it first."
    if not tool.server.enabled:
        return f"{tool.server.name} is disabled."
    if tool.server.status == ServerStatus.MAINTENANCE:
        return f"{tool.server.name} is in maintenance."
    return ""


def tool_page_context(principal, tool: Tool) -> dict:
    """What the tool page shows besides the "Try it" form and its result."""
    context = {
        "tool": tool,
        "object": tool,
        "annotations": [(name, json.dumps(value)) for name, value in tool.annotations.items()],
        "input_rows": forms.schema_properties(tool.input_schema),
        "input_json": pretty_json(tool.input_schema),
        "output_rows": forms.schema_properties(tool.output_schema),
        "output_json": pretty_json(tool.output_schema) if tool.output_schema else "",
        "can_operate": can(principal, Action.OPERATE, tool),
        "can_accept": can(principal, Action.APPROVE, tool),
        "not_callable": why_not_callable(tool),
        "diff": None,
    }
    if tool.state == ToolState.CHANGED:
        pinned = tool.pinned_definition or {}
        current = tool.definition()
        # Compare the parts that were pinned (and hashed), nothing else.
        if pinned:
            current = {key: value for key, value in current.items() if key in pinned}
        context["diff"] = definition_diff(pinned, current)
    return context


class ToolDetailView(OrgViewMixin, DetailView):
    """One tool: description, annotations, schemas, "Try it", and drift review."""

    queryset = Tool.objects.select_related("server", "pinned_by")
    template_name = "tools/tool_detail.html"
    context_object_name = "tool"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(tool_page_context(self.principal, self.object))
        context["try_form"] = forms.ToolCallForm(schema=self.object.input_schema)
        return context


class ToolTryView(OrgViewMixin, SingleObjectMixin, View):
    """The target of "Try it": call the tool with the form's arguments (``operate``).
    htmx gets the panel (form and result); without it, the whole tool page."""

    queryset = Tool.objects.select_related("server", "pinned_by")
    required_action = Action.OPERATE
    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        tool = self.object = self.get_object()
        form = forms.ToolCallForm(request.POST, schema=tool.input_schema)
        call = call_error = None
        if form.is_valid():
            try:
                call = present_call(services.call_tool(self.principal, tool, form.arguments()))
            except ServiceError as exc:
                if exc.field == "arguments":
                    form.add_error(None, exc.message)
                else:
                    call_error = exc.message
        context = {"tool": tool, "try_form": form, "call": call, "call_error": call_error}
        if is_htmx(request):
            context["not_callable"] = why_not_callable(tool)
            return render(request, "tools/partials/try_panel.html", context)
        return render(
            request,
            "tools/tool_detail.html",
            {**tool_page_context(self.principal, tool), **context},
        )


class ToolAcceptView(ObjectActionView):
    """Accept a changed tool's new definition (``change``)."""

    queryset = Tool.objects.select_related("server")
    required_action = Action.APPROVE
    success_message = "The new definition of {object.name} is accepted; it can be called again."

    def perform(self, tool):
        # The definition on the page the person reviewed; a newer one is not accepted.
        reviewed = self.request.POST.get("reviewed_hash") or None
        services.accept_tool_change(self.principal, tool, reviewed_hash=reviewed)

    def get_success_url(self):
        return reverse("tools:tool_detail", args=[self.object.pk])
