"""Console pages of the agents app: agents (list, hierarchy tree, form, detail with
grants, effective tools, approvals and live activity, status actions, access), tool
grants, the permissions matrix, the approvals inbox, and the organization's kill switch.

Every write goes through ``agents.services``; the status of an agent is never a form
field, only the outcome of its actions.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import DetailView, TemplateView

from agents import forms, services
from agents.choices import (
    AgentRole,
    AgentStatus,
    ApprovalKind,
    ApprovalStatus,
    Engine,
    Transition,
)
from agents.filters import AgentFilter, ApprovalFilter
from agents.models import Agent, ApprovalRequest, ToolGrant
from argus.console import live_events, newest_event_id
from argus.errors import ServiceError
from argus.generic import (
    ObjectActionView,
    ObjectCreateView,
    ObjectFormView,
    ObjectGrantsView,
    ObjectListView,
    OrgViewMixin,
    require_listing,
)
from orgs.permissions import Action, can, can_create, denial
from tools.choices import ToolState
from tools.models import MCPServer, Tool
from tools.views import definition_diff, is_htmx

logger = logging.getLogger(__name__)

# Masters first, then supervisors, then workers (the tree's roots and the matrix rows).
ROLE_ORDER = {AgentRole.MASTER: 0, AgentRole.SUPERVISOR: 1, AgentRole.WORKER: 2}
APPROVAL_HISTORY = 20


def hierarchy(agents: list[Agent]) -> list[dict]:
    """Tree nodes ``{"agent", "children"}`` of ``agents``; an agent whose parent is not
    among them (not visible to the user) is a root. Roots by role, then name."""
    nodes = {agent.pk: {"agent": agent, "children": []} for agent in agents}
    roots = []
    for agent in agents:
        parent = nodes.get(agent.parent_id)
        (parent["children"] if parent is not None else roots).append(nodes[agent.pk])
    roots.sort(key=lambda node: (ROLE_ORDER.get(node["agent"].role, 9), node["agent"].name))
    return roots


def flatten(nodes: list[dict], depth: int = 0):
    """``(agent, depth)`` of a tree, each parent before its children."""
    for node in nodes:
        yield node["agent"], depth
        yield from flatten(node["children"], depth + 1)


# --- agents ---------------------------------------------------------------------------------


class AgentListView(ObjectListView):
    """Agents: role, status, parent, home server and engine, filterable."""

    queryset = Agent.objects.select_related("parent", "server")
    filterset_class = AgentFilter
    template_name = "agents/agent_list.html"
    partial_template_name = "agents/partials/agent_table.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["servers"] = (
            MCPServer.objects.for_user(self.principal, Action.VIEW)
            .order_by("name")
            .values_list("pk", "name")
        )
        context["selected_server"] = self.request.GET.get("server", "")
        context["events_last_id"] = newest_event_id("org", self.principal.organization.pk)
        return context


class AgentTreeView(OrgViewMixin, TemplateView):
    """The hierarchy as a nested tree: masters, their supervisors, their workers."""

    template_name = "agents/agent_tree.html"

    def get(self, request, *args, **kwargs):
        require_listing(self.principal, Agent)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        agents = list(
            Agent.objects.for_user(self.principal, Action.VIEW)
            .select_related("server")
            .order_by("name", "pk")
        )
        context["tree"] = hierarchy(agents)
        context["agent_count"] = len(agents)
        context["can_create"] = can_create(self.principal, Agent)
        return context


def warn_if_revalidating(request, agent: Agent, before: str) -> bool:
    """After a change of scope: say so when it sent ``agent`` back to validation."""
    status = Agent.objects.filter(pk=agent.pk).values_list("status", flat=True).first()
    if status != AgentStatus.PENDING_VALIDATION or before == AgentStatus.PENDING_VALIDATION:
        return False
    messages.warning(
        request,
        f"{agent.name}'s scope grew beyond what was approved: it is pending validation "
        "again until someone approves the change.",
    )
    return True


class AgentFormMixin:
    """The create and edit form; the LLM API key is write-only."""

    form_class = forms.AgentForm
    template_name = "agents/agent_form.html"

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "agent": self.object}

    def get_success_url(self):
        return reverse("agents:agent_detail", args=[(self.written or self.object).pk])


class AgentCreateView(AgentFormMixin, ObjectCreateView):
    """Create an agent (``change`` in the organization); it waits for approval."""

    create_model = Agent

    def perform(self, form):
        self.written = services.create_agent(self.principal, **form.service_data())
        messages.success(
            self.request,
            f"Agent {self.written.name} created. It is pending validation until someone "
            "who may approve it does.",
        )


class AgentEditView(AgentFormMixin, ObjectFormView):
    """Change an agent's configuration (``change`` on it); never its status."""

    queryset = Agent.objects.select_related("parent", "server", "engine_tool")
    required_action = Action.CHANGE

    def perform(self, form):
        before = self.object.status
        self.written = services.update_agent(self.principal, self.object, **form.service_data())
        messages.success(self.request, f"Agent {self.written.name} saved.")
        warn_if_revalidating(self.request, self.written, before)


def status_actions(principal, agent: Agent, pending: ApprovalRequest | None) -> dict:
    """Which status actions the principal may take on ``agent`` now."""
    may_operate = can(principal, Action.OPERATE, agent)
    may_change = can(principal, Action.CHANGE, agent)

    def allowed_from(name: str) -> bool:
        return agent.status in services.TRANSITIONS[name][0]

    return {
        "can_suspend": may_operate and allowed_from(Transition.SUSPEND),
        "can_resume": may_change and allowed_from(Transition.RESUME),
        "can_recover": may_operate and allowed_from(Transition.RECOVER),
        "can_request_approval": may_change
        and pending is None
        and (
            agent.status == AgentStatus.PENDING_VALIDATION
            or (
                agent.status in (AgentStatus.INACTIVE, AgentStatus.ERROR)
                and services.scope_grows(agent)
            )
        ),
    }


def read_usage(agent: Agent) -> dict | None:
    """Calls counted this hour and today, or ``None`` when the counters cannot be read."""
    try:
        return services.call_usage(agent)
    except Exception:  # the page still renders; the dashboard's health card says what is down
        logger.warning("could not read the call counters of agent %s", agent.pk, exc_info=True)
        return None


class AgentDetailView(OrgViewMixin, DetailView):
    """One agent: status (live), configuration, grants, effective tools, approvals,
    activity and usage. htmx gets the status card only (refreshed on its events)."""

    queryset = Agent.objects.select_related(
        "parent", "server", "engine_tool__server", "created_by", "approved_by"
    )
    template_name = "agents/agent_detail.html"

    def get_template_names(self):
        if is_htmx(self.request):
            return ["agents/partials/agent_status.html"]
        return super().get_template_names()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        agent = self.object
        pending = (
            agent.approval_requests.filter(
                kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
            )
            .order_by("-created_at")
            .first()
        )
        context["pending_request"] = pending
        context["can_change"] = can(self.principal, Action.CHANGE, agent)
        context.update(status_actions(self.principal, agent, pending))
        if is_htmx(self.request):
            return context
        context["children"] = agent.children.order_by("name")
        context["grants"] = agent.grants.select_related("tool__server", "granted_by").order_by(
            "tool__server__name", "tool__name"
        )
        context["effective_tools"] = services.effective_tools(agent)
        context["approvals"] = agent.approval_requests.select_related(
            "requested_by", "decided_by"
        ).order_by("-created_at", "-id")[:APPROVAL_HISTORY]
        context["usage"] = read_usage(agent)
        context["can_see_access"] = can(self.principal, Action.MANAGE, self.principal.organization)
        context["suspend_form"] = forms.SuspendForm()
        context.update(live_events(f"agent:{agent.pk}", agent.organization_id))
        return context


class AgentActionView(ObjectActionView):
    """A status action on one agent; back to its page."""

    queryset = Agent.objects.all()

    def get_success_url(self):
        return reverse("agents:agent_detail", args=[self.object.pk])


class AgentSuspendView(AgentActionView):
    """Stop an agent from acting, with a reason (``operate``)."""

    required_action = Action.OPERATE

    def perform(self, agent):
        form = forms.SuspendForm(self.request.POST)
        if not form.is_valid():
            raise ServiceError("The reason is at most 500 characters.", field="reason")
        services.suspend_agent(self.principal, agent, form.cleaned_data["reason"])
        messages.success(self.request, f"{agent.name} is suspended: it calls no tool.")


class AgentResumeView(AgentActionView):
    """Let a suspended agent act again (``change``)."""

    required_action = Action.CHANGE

    def perform(self, agent):
        services.resume_agent(self.principal, agent, self.request.POST.get("reason", ""))
        messages.success(self.request, f"{agent.name} is active again.")


class AgentRecoverView(AgentActionView):
    """Clear an agent's error (``operate``)."""

    required_action = Action.OPERATE

    def perform(self, agent):
        services.recover_agent(self.principal, agent, self.request.POST.get("reason", ""))
        messages.success(self.request, f"{agent.name} recovered and is active.")


class AgentRequestApprovalView(AgentActionView):
    """Ask again for approval of a pending agent (``change``)."""

    required_action = Action.CHANGE

    def perform(self, agent):
        request = services.request_approval(self.principal, agent)
        messages.success(self.request, f"Approval requested again for {agent.name}.")
        return self.redirect(reverse("agents:approval_detail", args=[request.pk]))


class AgentDeleteView(ObjectFormView):
    """Delete an agent after a confirmation; its children move to another agent."""

    queryset = Agent.objects.all()
    required_action = Action.CHANGE
    form_class = forms.AgentDeleteForm
    template_name = "agents/agent_delete.html"

    def setup_object(self):
        super().setup_object()
        self.children = list(self.object.children.order_by("name"))

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "agent": self.object, "children": self.children}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["children"] = self.children
        context["grant_count"] = self.object.grants.count()
        return context

    def perform(self, form):
        services.delete_agent(
            self.principal, self.object, reparent_to=form.cleaned_data.get("reparent_to")
        )
        messages.success(self.request, f"Agent {self.object.name} deleted.")

    def get_success_url(self):
        return reverse("agents:agent_list")


class AgentAccessView(ObjectGrantsView):
    """Who may view, operate, change or approve one agent beyond their role."""

    queryset = Agent.objects.all()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["back_url"] = reverse("agents:agent_detail", args=[self.object.pk])
        context["back_label"] = self.object.name
        return context


# --- tool grants ------------------------------------------------------------------------------


class GrantCreateView(ObjectFormView):
    """Give an agent a grant on a tool (``change`` on the agent); bounded by its parent."""

    queryset = Agent.objects.select_related("parent")
    required_action = Action.CHANGE
    form_class = forms.GrantCreateForm
    template_name = "agents/grant_form.html"

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "agent": self.object}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "agent": self.object}

    def perform(self, form):
        before = self.object.status
        tool = form.cleaned_data["tool"]
        self.written = services.grant_tool(self.principal, self.object, tool, **form.service_data())
        messages.success(
            self.request,
            f"{self.object.name} may now use {tool.name}."
            if self.written.allowed
            else f"{self.object.name}'s grant refuses {tool.name}.",
        )
        warn_if_revalidating(self.request, self.object, before)

    def get_success_url(self):
        return reverse("agents:agent_detail", args=[self.object.pk])


class GrantEditView(ObjectFormView):
    """Change a grant (``change`` on its agent); never wider than the parent's."""

    queryset = ToolGrant.objects.select_related("agent__parent", "tool__server")
    required_action = Action.CHANGE
    form_class = forms.GrantForm
    template_name = "agents/grant_form.html"

    def get_initial(self):
        return {name: getattr(self.object, name) for name in forms.GrantForm.FIELDS}

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "agent": self.object.agent,
            "grant": self.object,
        }

    def perform(self, form):
        before = self.object.agent.status
        self.written = services.update_tool_grant(
            self.principal, self.object, **form.service_data()
        )
        messages.success(self.request, f"Grant of {self.object.tool.name} saved.")
        warn_if_revalidating(self.request, self.object.agent, before)

    def get_success_url(self):
        return reverse("agents:agent_detail", args=[self.object.agent_id])


class GrantDeleteView(ObjectActionView):
    """Revoke a grant (``change`` on its agent); its descendants lose the tool too."""

    queryset = ToolGrant.objects.select_related("agent", "tool")
    required_action = Action.CHANGE

    def perform(self, grant):
        services.revoke_tool_grant(self.principal, grant)
        messages.success(self.request, f"{grant.agent.name} no longer holds {grant.tool.name}.")

    def get_success_url(self):
        return reverse("agents:agent_detail", args=[self.object.agent_id])


# --- the permissions matrix ------------------------------------------------------------------

MATRIX_VALUES = {
    "none": "No grant",
    "allow": "Allowed",
    "approval": "Each call approved",
    "deny": "Refused",
}


def grant_value(grant: ToolGrant | None) -> str:
    """A grant as one of ``MATRIX_VALUES``."""
    if grant is None:
        return "none"
    if not grant.allowed:
        return "deny"
    return "approval" if grant.requires_approval else "allow"


def permission_label(permission: services.Permission | None) -> str:
    """A resolved permission in a word or two (``""`` for none: a master's ceiling)."""
    if permission is None:
        return ""
    if permission.allowed:
        return "approval per call" if permission.requires_approval else "allowed"
    return "suspended" if permission.suspended else "refused"


def set_matrix_cell(principal, agent: Agent, tool: Tool, value: str) -> None:
    """Make ``agent``'s own grant on ``tool`` say ``value`` through the services. A new
    grant takes the limits of the parent's effective permission (it cannot exceed them)."""
    grant = ToolGrant.objects.filter(agent=agent, tool=tool).first()
    if value == "none":
        if grant is not None:
            services.revoke_tool_grant(principal, grant)
        return
    fields: dict[str, Any] = {"allowed": value != "deny", "requires_approval": value == "approval"}
    if grant is not None:
        services.update_tool_grant(principal, grant, **fields)
        return
    if value != "deny" and agent.parent_id is not None:
        ceiling = services.resolve(agent.parent, tool)
        if ceiling.allowed:
            fields["max_calls_per_execution"] = ceiling.max_calls_per_execution
            fields["max_calls_per_hour"] = ceiling.max_calls_per_hour
    services.grant_tool(principal, agent, tool, reason="Set in the permissions matrix.", **fields)


class MatrixMixin:
    """Builds the matrix of the visible agents by the tools of one server."""

    def matrix_context(self, server: MCPServer | None, error: dict | None = None) -> dict:
        principal = self.principal
        agents = list(
            Agent.objects.for_user(principal, Action.VIEW)
            .order_by("name", "pk")
            .only("pk", "name", "role", "status", "parent_id", "organization_id")
        )
        tools = []
        if server is not None:
            tools = list(
                Tool.objects.for_user(principal, Action.VIEW)
                .filter(server=server)
                .exclude(state=ToolState.REMOVED)
                .order_by("name")
            )
        cells = services.permission_matrix(agents, tools) if tools else {}
        rows = []
        for agent, depth in flatten(hierarchy(agents)):
            editable = can(principal, Action.CHANGE, agent)
            row_cells = []
            for tool in tools:
                cell = cells[(agent.pk, tool.pk)]
                value = grant_value(cell["grant"])
                row_cells.append(
                    {
                        "tool": tool,
                        "value": value,
                        "value_label": MATRIX_VALUES[value],
                        "effective": cell["effective"],
                        "effective_label": permission_label(cell["effective"]),
                        "ceiling_label": permission_label(cell["ceiling"]),
                        "error": error["message"]
                        if error and error["cell"] == (agent.pk, tool.pk)
                        else "",
                    }
                )
            rows.append({"agent": agent, "depth": depth, "editable": editable, "cells": row_cells})
        return {
            "server": server,
            "tools": tools,
            "rows": rows,
            "matrix_values": MATRIX_VALUES,
            "matrix_error": error["message"] if error else "",
            "can_create": can_create(principal, Agent),
        }


class MatrixView(MatrixMixin, OrgViewMixin, TemplateView):
    """Agents (rows) by the tools of one server (columns): own grant, effective result
    and the parent's ceiling per cell; ``change`` holders edit cells in place."""

    template_name = "agents/matrix.html"

    def get(self, request, *args, **kwargs):
        require_listing(self.principal, Agent)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        servers = list(
            MCPServer.objects.for_user(self.principal, Action.VIEW)
            .order_by("name", "pk")
            .only("pk", "name", "organization_id")
        )
        chosen = self.request.GET.get("server", "")
        server = servers[0] if servers else None
        if chosen:
            server = next((s for s in servers if str(s.pk) == chosen), None)
            if server is None:
                raise Http404("No such server.")
        context["servers"] = servers
        context.update(self.matrix_context(server))
        return context


class MatrixCellView(MatrixMixin, OrgViewMixin, View):
    """One cell of the matrix: POST ``agent``, ``tool``, ``value`` (none, allow, approval,
    deny). htmx gets the table again (with the service's error on the cell)."""

    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        agent = get_object_or_404(
            Agent.objects.for_user(self.principal, Action.VIEW).select_related("parent"),
            pk=parse_id(request.POST.get("agent")),
        )
        tool = get_object_or_404(
            Tool.objects.for_user(self.principal, Action.VIEW).select_related("server"),
            pk=parse_id(request.POST.get("tool")),
        )
        value = request.POST.get("value", "")
        if value not in MATRIX_VALUES:
            return HttpResponseBadRequest(
                f"Unknown value; choose one of {', '.join(MATRIX_VALUES)}."
            )
        if not can(self.principal, Action.CHANGE, agent):
            raise PermissionDenied(denial(self.principal, Action.CHANGE, Agent))
        error = None
        try:
            with transaction.atomic():
                set_matrix_cell(self.principal, agent, tool, value)
        except ServiceError as exc:
            error = {"cell": (agent.pk, tool.pk), "message": f"{agent.name}: {exc.message}"}
        except PermissionDenied as exc:
            error = {"cell": (agent.pk, tool.pk), "message": str(exc)}
        if is_htmx(request):
            return render(
                request,
                "agents/partials/matrix_table.html",
                self.matrix_context(tool.server, error),
            )
        if error:
            messages.error(request, error["message"])
        else:
            messages.success(
                request, f"{agent.name} on {tool.name}: {MATRIX_VALUES[value].lower()}."
            )
        return self.redirect(f"{reverse('agents:matrix')}?server={tool.server_id}")


def parse_id(value: str | None) -> int:
    """A primary key from a form, or a 404."""
    if not value or not value.isdigit():
        raise Http404("No such object.")
    return int(value)


# --- approvals -------------------------------------------------------------------------------


class ApprovalListView(ObjectListView):
    """The approvals inbox: pending requests by default, the decided ones as history."""

    queryset = ApprovalRequest.objects.select_related("agent", "tool__server", "requested_by")
    filterset_class = ApprovalFilter
    template_name = "agents/approval_list.html"
    partial_template_name = "agents/partials/approval_table.html"

    def history(self) -> bool:
        return self.request.GET.get("view") == "history" or bool(self.request.GET.get("status"))

    def get_queryset(self):
        queryset = super().get_queryset()
        if not self.request.GET.get("status"):
            if self.history():
                queryset = queryset.exclude(status=ApprovalStatus.PENDING)
            else:
                queryset = queryset.filter(status=ApprovalStatus.PENDING)
        pending_first = Case(
            When(status=ApprovalStatus.PENDING, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return queryset.order_by(pending_first, "-created_at", "-id")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["history"] = self.history()
        context["now"] = timezone.now()
        context["events_last_id"] = newest_event_id("org", self.principal.organization.pk)
        return context


def readable(value: Any) -> tuple[str, bool]:
    """A snapshot value for people: ``(text, is_block)``; a reference shows its name,
    structures show as indented JSON (a block)."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, dict) and set(value) == {"id", "name"}:
        return str(value["name"]), False
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False), True
    return str(value), False


def change_label(field: str) -> str:
    """``engine_settings.llm_model`` → ``Engine settings: llm_model`` (names kept)."""
    head, _dot, rest = field.partition(".")
    head = head.replace("_", " ").capitalize()
    return f"{head}: {rest}" if rest else head


def present_changes(request: ApprovalRequest) -> list[dict]:
    """The request's ``changes`` as rows: what, before, after, and whether it grows."""
    rows = []
    for change in request.changes or []:
        if not isinstance(change, dict):
            continue
        before, before_block = readable(change.get("before"))
        after, after_block = readable(change.get("after"))
        if "field" in change:
            label = change_label(str(change["field"]))
        else:
            label = str(change.get("path", ""))
        rows.append(
            {
                "label": label,
                "before": before,
                "after": after,
                "block": before_block or after_block,
                "grows": change.get("grows"),
            }
        )
    return rows


def present_scope(scope: dict) -> dict:
    """An agent's scope snapshot for the template."""
    settings = scope.get("engine_settings") or {}
    engine = scope.get("engine", "")
    grants = []
    for grant in (scope.get("grants") or {}).values():
        schema = grant.get("argument_schema")
        grants.append(
            {
                **grant,
                "schema": json.dumps(schema, indent=2, sort_keys=True) if schema else "",
            }
        )
    return {
        "role": scope.get("role", ""),
        "parent": readable(scope.get("parent"))[0],
        "server": readable(scope.get("server"))[0],
        "engine": Engine(engine).label if engine in Engine.values else engine,
        "engine_value": engine,
        "tool": readable(settings.get("tool"))[0],
        "llm_base_url": settings.get("llm_base_url") or "",
        "llm_model": settings.get("llm_model") or "",
        "llm_system_prompt": settings.get("llm_system_prompt") or "",
        "llm_max_steps": settings.get("llm_max_steps"),
        "limits": [
            (change_label(name).capitalize(), readable(value)[0])
            for name, value in (scope.get("limits") or {}).items()
        ],
        "grants": grants,
    }


def decision_context(principal, request: ApprovalRequest) -> dict:
    """Who may do what with the request: decide (approve, session, not the requester
    under four-eyes), or withdraw (the requester). The service judges in the end."""
    user = principal.user
    pending = request.is_pending
    expired = pending and request.expires_at <= timezone.now()
    authors = request.agent.scope_authors if request.agent_id is not None else []
    four_eyes_blocked = bool(
        principal.organization.four_eyes_approval
        and user is not None
        and (request.requested_by_id == user.pk or user.pk in authors)
    )
    may_approve = can(principal, Action.APPROVE, request)
    return {
        "expired": expired,
        "may_approve": may_approve,
        "four_eyes_blocked": pending and may_approve and four_eyes_blocked,
        "can_decide": pending
        and not expired
        and request.kind != ApprovalKind.TOOL_CALL
        and may_approve
        and principal.api_key is None
        and not four_eyes_blocked,
        "can_withdraw": pending and user is not None and request.requested_by_id == user.pk,
    }


class ApprovalPageMixin:
    """What the approval page shows: the snapshot, the changes, and the decision forms."""

    queryset = ApprovalRequest.objects.select_related(
        "agent", "tool__server", "requested_by", "decided_by"
    )
    template_name = "agents/approval_detail.html"

    def approval_context(self, request: ApprovalRequest) -> dict:
        context = {
            "approval": request,
            "changes": present_changes(request),
            "scope": None,
            "definition_diff": None,
        }
        snapshot = request.snapshot or {}
        if request.kind == ApprovalKind.AGENT_ACTIVATION:
            context["scope"] = present_scope(snapshot)
        elif request.kind == ApprovalKind.TOOL_CHANGE:
            context["definition_diff"] = definition_diff(
                snapshot.get("before") or {}, snapshot.get("after") or {}
            )
        else:
            context["snapshot_json"] = json.dumps(snapshot, indent=2, sort_keys=True)
        context.update(decision_context(self.principal, request))
        return context


class ApprovalDetailView(ApprovalPageMixin, OrgViewMixin, DetailView):
    """One request: what is asked, what changed, and the decision."""

    context_object_name = "approval"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(self.approval_context(self.object))
        context["approve_form"] = forms.ReasonForm(prefix="approve")
        context["reject_form"] = forms.ReasonForm(prefix="reject")
        return context


class ApprovalDecisionView(ApprovalPageMixin, ObjectFormView):
    """Approve or reject (``approve`` on the request). The service is the judge: a
    refusal it makes (four-eyes, an API key, expired, changed since) shows on the page.
    Not wrapped in a transaction: the service commits an expiry it finds on the way."""

    required_action = Action.APPROVE
    form_class = forms.ReasonForm

    def get(self, request, *args, **kwargs):
        self.setup_object()
        return self.redirect(reverse("agents:approval_detail", args=[self.object.pk]))

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(self.approval_context(self.object))
        form = context["form"]
        context["approve_form"] = (
            form if self.prefix == "approve" else forms.ReasonForm(prefix="approve")
        )
        context["reject_form"] = (
            form if self.prefix == "reject" else forms.ReasonForm(prefix="reject")
        )
        return context

    def form_valid(self, form):
        try:
            self.perform(form)
        except ServiceError as exc:
            form.add_error("reason" if exc.field == "reason" else None, exc.message)
            return self.form_invalid(form)
        except PermissionDenied as exc:
            form.add_error(None, str(exc) or "You are not allowed to decide this request.")
            return self.form_invalid(form)
        return self.redirect(reverse("agents:approval_detail", args=[self.object.pk]))

    def form_invalid(self, form):
        self.object.refresh_from_db()
        return super().form_invalid(form)


class ApprovalApproveView(ApprovalDecisionView):
    prefix = "approve"

    def perform(self, form):
        services.approve_request(self.principal, self.object, form.cleaned_data["reason"])
        if self.object.kind == ApprovalKind.AGENT_ACTIVATION:
            messages.success(self.request, f"Approved: {self.object.target_label} is active.")
        else:
            messages.success(self.request, f"Approved: {self.object.target_label}.")


class ApprovalRejectView(ApprovalDecisionView):
    prefix = "reject"

    def perform(self, form):
        services.reject_request(self.principal, self.object, form.cleaned_data["reason"])
        messages.success(self.request, f"Rejected: {self.object.target_label}.")


class ApprovalWithdrawView(ObjectActionView):
    """The requester takes back a pending request."""

    queryset = ApprovalRequest.objects.all()

    def perform(self, request):
        services.withdraw_request(self.principal, request, self.request.POST.get("reason", ""))
        messages.success(self.request, "Request withdrawn.")

    def get_success_url(self):
        return reverse("agents:approval_detail", args=[self.object.pk])


# --- the kill switch -------------------------------------------------------------------------


class KillSwitchView(OrgViewMixin, View):
    """Pause or resume every agent of the organization (``manage``: admins)."""

    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        if not can(self.principal, Action.MANAGE, self.principal.organization):
            raise PermissionDenied("Only an admin can pause or resume every agent.")
        try:
            self.perform(request)
        except ServiceError as exc:
            messages.error(request, exc.message)
        return self.redirect(self.back_url())

    def back_url(self) -> str:
        target = self.request.POST.get("next", "")
        if target and url_has_allowed_host_and_scheme(
            target, {self.request.get_host()}, require_https=self.request.is_secure()
        ):
            return target
        return reverse("console:dashboard")


class PauseAgentsView(KillSwitchView):
    def perform(self, request):
        services.pause_agents(self.principal, request.POST.get("reason", ""))
        messages.warning(request, "Every agent is paused: no tool call runs until resumed.")


class ResumeAgentsView(KillSwitchView):
    def perform(self, request):
        services.resume_agents(self.principal)
        messages.success(request, "Agents resumed: each acts again as its own status allows.")
