"""Agents: the hierarchy, the approval lifecycle, tool grants bounded by the parent, the
one resolver of what an agent may do, and the gate every tool call of an agent passes.

- Status changes only through :func:`transition` and the named functions built on it
  (``TRANSITIONS`` says from which statuses), by compare-and-swap.
- What an agent may do is its *scope* (:func:`agent_scope`): hierarchy, engine, budgets,
  allowed grants. ``approved_scope`` keeps the last approved one; a change that grows
  beyond it sends the agent back to ``PENDING_VALIDATION`` with a request showing what
  changed, and a change that stays within it never needs approval.
- :func:`resolve` is the one answer to "may this agent use this tool, and how": every
  caller (task executor, MCP gateway, replay) uses it, through :func:`authorize_call`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import guards
from agents.choices import (
    PARENT_ROLES,
    RUNNABLE,
    AgentRole,
    AgentStatus,
    ApprovalKind,
    ApprovalStatus,
    Engine,
    Refusal,
    Transition,
)
from agents.models import Agent, ApprovalRequest, ToolGrant
from argus import events
from argus.crypto import EncryptedField
from argus.diff import json_changes
from argus.errors import Conflict, ServiceError
from orgs import audit
from orgs.choices import Limit
from orgs.models import Organization
from orgs.permissions import Action, Principal
from orgs.services import (
    enforce_limit,
    lock_organization,
    require,
    require_create,
    require_session,
)
from tools.choices import ToolState
from tools.models import MCPServer, Tool
from tools.network import check_url
from tools.services import (
    accept_tool_change,
    schema_validator,
    validate_against,
    validate_arguments,
)

UNSET: Any = object()
NAME_MAX = Agent._meta.get_field("name").max_length
CAPABILITY_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,49}$")
MAX_CAPABILITIES = 20
CONCURRENCY_RANGE = (1, 100)
BUDGET_RANGE = (1, 10_000_000)
MAX_STEPS_RANGE = (1, 500)
MAX_SCHEMA_CHARS = 20_000
REASON_MAX = 500

# The fields of an agent a person sets (``status`` is never one of them).
AGENT_FIELDS = (
    "name",
    "description",
    "role",
    "parent",
    "server",
    "engine",
    "engine_tool",
    "llm_base_url",
    "llm_model",
    "llm_system_prompt",
    "llm_max_steps",
    "capabilities",
    "max_concurrent_executions",
    "max_tool_calls_per_execution",
    "max_tool_calls_per_hour",
    "max_tool_calls_per_day",
)
BUDGET_FIELDS = (
    "max_tool_calls_per_execution",
    "max_tool_calls_per_hour",
    "max_tool_calls_per_day",
)
GRANT_LIMITS = ("max_calls_per_execution", "max_calls_per_hour")


class InvalidTransition(Conflict):
    """The agent's status does not allow this transition (HTTP 409)."""

    code = "invalid_transition"


class CallRefused(Conflict):
    """The gate refused a tool call; ``code`` is a :class:`Refusal`."""

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)


# --- status transitions ------------------------------------------------------------------
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    Transition.ACTIVATE: (frozenset({AgentStatus.PENDING_VALIDATION}), AgentStatus.ACTIVE),
    Transition.REQUIRE_VALIDATION: (
        frozenset({AgentStatus.ACTIVE, AgentStatus.BUSY, AgentStatus.INACTIVE, AgentStatus.ERROR}),
        AgentStatus.PENDING_VALIDATION,
    ),
    Transition.SUSPEND: (
        frozenset({AgentStatus.ACTIVE, AgentStatus.BUSY, AgentStatus.ERROR}),
        AgentStatus.INACTIVE,
    ),
    Transition.RESUME: (frozenset({AgentStatus.INACTIVE}), AgentStatus.ACTIVE),
    Transition.START_WORK: (frozenset({AgentStatus.ACTIVE}), AgentStatus.BUSY),
    Transition.FINISH_WORK: (frozenset({AgentStatus.BUSY}), AgentStatus.ACTIVE),
    Transition.FAIL: (frozenset({AgentStatus.ACTIVE, AgentStatus.BUSY}), AgentStatus.ERROR),
    Transition.RECOVER: (frozenset({AgentStatus.ERROR}), AgentStatus.ACTIVE),
}


def _publish_agent(agent: Agent, type: str, data: dict) -> None:
    """An event on ``org`` and on ``agent:<id>``, after commit."""
    payload = {"agent": agent.pk, "name": agent.name, **data}
    events.publish("org", type, payload, organization=agent.organization_id)
    events.publish(f"agent:{agent.pk}", type, payload, organization=agent.organization_id)


def transition(principal: Principal | None, agent: Agent, name: str, reason: str = "") -> Agent:
    """Move ``agent`` along the named transition by compare-and-swap; audited and
    published as ``agent.status``. Raises :class:`InvalidTransition` when its current
    status does not allow it. Callers check permission first."""
    sources, target = TRANSITIONS[name]
    reason = (reason or "").strip()[:REASON_MAX]
    now = timezone.now()
    with transaction.atomic():
        current = Agent.objects.filter(pk=agent.pk).values_list("status", flat=True).first()
        if current is None:
            raise Conflict(f"{agent.name} no longer exists.")
        moved = Agent.objects.filter(pk=agent.pk, status__in=sources).update(
            status=target, status_reason=reason, status_changed_at=now, updated_at=now
        )
        if moved != 1:
            raise InvalidTransition(
                f"Cannot {Transition(name).label} {agent.name}: it is "
                f"{AgentStatus(current).label.lower()} (allowed from "
                f"{', '.join(sorted(AgentStatus(s).label.lower() for s in sources))})."
            )
        before = current
        agent.status, agent.status_reason, agent.status_changed_at = target, reason, now
        audit.record(
            principal or Principal.system(agent.organization),
            f"agent.{name}",
            agent,
            changes={"status": [before, target], **({"reason": reason} if reason else {})},
        )
        _publish_agent(
            agent, "agent.status", {"status": target, "previous": before, "reason": reason}
        )
    return agent


def suspend_agent(principal: Principal, agent: Agent, reason: str) -> Agent:
    """Stop an agent from acting (``operate``; a reason is required)."""
    require(principal, Action.OPERATE, agent)
    if not (reason or "").strip():
        raise ServiceError("Say why the agent is suspended.", field="reason")
    return transition(principal, agent, Transition.SUSPEND, reason)


def resume_agent(principal: Principal, agent: Agent, reason: str = "") -> Agent:
    """Let a suspended agent act again (``change``), within what was approved."""
    require(principal, Action.CHANGE, agent)
    with transaction.atomic():
        # Locked: a scope change (which locks the agent first) cannot slip in between.
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        _refuse_while_unapproved(agent, "resume")
        return transition(principal, agent, Transition.RESUME, reason)


def recover_agent(principal: Principal, agent: Agent, reason: str = "") -> Agent:
    """Clear an agent's error once its cause is dealt with (``operate``), within what
    was approved."""
    require(principal, Action.OPERATE, agent)
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        _refuse_while_unapproved(agent, "recover")
        return transition(principal, agent, Transition.RECOVER, reason)


def _refuse_while_unapproved(agent: Agent, verb: str) -> None:
    """An agent acts again only within what a person approved: not while its wider
    scope waits for a decision, nor once that request was rejected, withdrawn or let
    expire (until the scope is narrowed back or approved)."""
    latest = (
        ApprovalRequest.objects.filter(agent=agent, kind=ApprovalKind.AGENT_ACTIVATION)
        .order_by("-created_at", "-id")
        .first()
    )
    if latest is None or latest.status == ApprovalStatus.APPROVED:
        return
    if latest.status == ApprovalStatus.PENDING:
        raise InvalidTransition(
            f"Cannot {verb} {agent.name}: its wider scope waits for approval; decide the "
            "pending request first."
        )
    if scope_grows(agent):
        raise InvalidTransition(
            f"Cannot {verb} {agent.name}: its scope is wider than what was approved and "
            f"the request for it was {latest.get_status_display().lower()}; narrow it back "
            "or ask for approval again."
        )


def start_work(agent: Agent) -> Agent:
    """The tasks executor: the agent runs an execution (ACTIVE → BUSY)."""
    return transition(None, agent, Transition.START_WORK)


def finish_work(agent: Agent) -> Agent:
    """The tasks executor: the agent has nothing running any more (BUSY → ACTIVE)."""
    return transition(None, agent, Transition.FINISH_WORK)


def fail_agent(agent: Agent, reason: str) -> Agent:
    """The tasks executor: the agent is broken until a person recovers it."""
    return transition(None, agent, Transition.FAIL, reason)


# --- validation ----------------------------------------------------------------------------
def _clean_text(value: Any, field: str, label: str, max_length: int, *, required=False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ServiceError(f"{label} must be text.", field=field)
    value = value.strip()
    if required and not value:
        raise ServiceError(f"{label} is required.", field=field)
    if len(value) > max_length:
        raise ServiceError(f"{label} is longer than {max_length} characters.", field=field)
    return value


def _clean_int(value: Any, field: str, label: str, bounds, *, optional=False) -> int | None:
    if value is None or value == "":
        if optional:
            return None
        raise ServiceError(f"{label} is required.", field=field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServiceError(f"{label} must be a whole number.", field=field)
    low, high = bounds
    if not low <= value <= high:
        raise ServiceError(f"{label} must be between {low} and {high}.", field=field)
    return value


def _clean_capabilities(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ServiceError("Capability tags must be a list of words.", field="capabilities")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not CAPABILITY_RE.match(tag.strip().lower()):
            raise ServiceError(
                f"{tag!r} is not a capability tag: use lower-case letters, digits and . _ : - "
                "(at most 50 characters).",
                field="capabilities",
            )
        tag = tag.strip().lower()
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_CAPABILITIES:
        raise ServiceError(
            f"An agent has at most {MAX_CAPABILITIES} capability tags.", field="capabilities"
        )
    return tags


def _check_name(organization: Organization, name: str, exclude_pk: int | None) -> None:
    taken = Agent.objects.filter(organization=organization, name__iexact=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ServiceError(f"An agent named {name!r} already exists.", field="name")


def check_hierarchy(
    organization: Organization, agent: Agent | None, role: str, parent: Agent | None
) -> None:
    """The hierarchy rules for ``agent`` (``None`` while creating) with ``role`` under
    ``parent``, and for the children it keeps; :class:`ServiceError` naming the rule."""
    if role not in AgentRole.values:
        raise ServiceError(
            f"Unknown role {role!r}; choose one of {', '.join(AgentRole.values)}.", field="role"
        )
    if parent is not None:
        if parent.organization_id != organization.pk:
            raise ServiceError("The parent must be an agent of this organization.", field="parent")
        if agent is not None and agent.pk is not None:
            if parent.pk == agent.pk:
                raise ServiceError("An agent cannot be its own parent.", field="parent")
            ancestor, seen = parent, set()
            while ancestor is not None and ancestor.pk not in seen:
                if ancestor.parent_id == agent.pk:
                    raise ServiceError(
                        f"{parent.name} is below {agent.name} in the hierarchy: making it the "
                        "parent would create a cycle.",
                        field="parent",
                    )
                seen.add(ancestor.pk)
                ancestor = ancestor.parent
    allowed = PARENT_ROLES[role]
    label = AgentRole(role).label.lower()
    if not allowed and parent is not None:
        raise ServiceError(f"A {label} agent has no parent.", field="parent")
    if allowed and parent is None:
        raise ServiceError(
            f"A {label} agent needs a parent: "
            f"{' or '.join(AgentRole(r).label.lower() for r in allowed)}.",
            field="parent",
        )
    if parent is not None and parent.role not in allowed:
        raise ServiceError(
            f"A {label}'s parent must be a "
            f"{' or '.join(AgentRole(r).label.lower() for r in allowed)}; "
            f"{parent.name} is a {AgentRole(parent.role).label.lower()}.",
            field="parent",
        )
    if agent is not None and agent.pk is not None:
        misfits = [
            child.name for child in agent.children.all() if role not in PARENT_ROLES[child.role]
        ]
        if misfits:
            raise ServiceError(
                f"{agent.name} cannot become a {label}: its children "
                f"{', '.join(sorted(misfits))} could no longer have it as parent. Re-parent "
                "them first.",
                field="role",
            )


def clean_agent(organization: Organization, data: dict, *, instance: Agent | None = None) -> dict:
    """Check an agent's configuration as a whole; :class:`ServiceError` names the field.

    ``data`` holds the fields of ``AGENT_FIELDS`` (missing ones keep the instance's
    value or the default); ``parent``, ``server`` and ``engine_tool`` are objects.
    """

    def current(name, default=None):
        if name in data:
            return data[name]
        if instance is not None:
            return getattr(instance, name)
        return default

    unknown = set(data) - set(AGENT_FIELDS)
    if unknown:
        raise ServiceError(f"Unknown agent fields: {', '.join(sorted(unknown))}.")
    cleaned: dict[str, Any] = {}
    cleaned["name"] = _clean_text(current("name"), "name", "The name", NAME_MAX, required=True)
    _check_name(organization, cleaned["name"], instance.pk if instance else None)
    cleaned["description"] = _clean_text(
        current("description", ""), "description", "The description", 5000
    )
    role = current("role")
    if not role:
        raise ServiceError("The role is required.", field="role")
    parent = current("parent")
    if parent is not None and not isinstance(parent, Agent):
        raise ServiceError("The parent must be an agent.", field="parent")
    check_hierarchy(organization, instance, role, parent)
    cleaned["role"], cleaned["parent"] = role, parent

    server = current("server")
    if server is not None and (
        not isinstance(server, MCPServer) or server.organization_id != organization.pk
    ):
        raise ServiceError("The home server must be a server of this organization.", field="server")
    cleaned["server"] = server

    engine = current("engine", Engine.PLAN)
    if engine not in Engine.values:
        raise ServiceError(
            f"Unknown engine {engine!r}; choose one of {', '.join(Engine.values)}.", field="engine"
        )
    cleaned["engine"] = engine
    engine_tool = current("engine_tool") if engine == Engine.MCP_TOOL else None
    if engine == Engine.MCP_TOOL:
        if server is None:
            raise ServiceError("The MCP tool engine needs a home server.", field="server")
        if engine_tool is None:
            raise ServiceError(
                "The MCP tool engine needs the tool that receives prompts.", field="engine_tool"
            )
        if not isinstance(engine_tool, Tool) or engine_tool.server_id != server.pk:
            raise ServiceError(
                f"The prompt tool must be a tool of the home server {server.name}.",
                field="engine_tool",
            )
        if engine_tool.state == ToolState.REMOVED:
            raise ServiceError(
                f"{server.name} no longer offers {engine_tool.name}.", field="engine_tool"
            )
    cleaned["engine_tool"] = engine_tool

    base_url = _clean_text(current("llm_base_url", ""), "llm_base_url", "The LLM base URL", 500)
    model = _clean_text(current("llm_model", ""), "llm_model", "The LLM model", 200)
    if engine == Engine.LLM:
        if not base_url:
            raise ServiceError("The LLM engine needs a base URL.", field="llm_base_url")
        if not model:
            raise ServiceError("The LLM engine needs a model name.", field="llm_model")
    if base_url:
        try:
            check_url(base_url, schemes={"http", "https"})
        except ServiceError as exc:
            raise ServiceError(exc.message, field="llm_base_url") from None
    cleaned["llm_base_url"], cleaned["llm_model"] = base_url, model
    cleaned["llm_system_prompt"] = _clean_text(
        current("llm_system_prompt", ""), "llm_system_prompt", "The system prompt", 50_000
    )
    cleaned["llm_max_steps"] = _clean_int(
        current("llm_max_steps", 10), "llm_max_steps", "Max steps", MAX_STEPS_RANGE
    )
    cleaned["capabilities"] = _clean_capabilities(current("capabilities", []))
    cleaned["max_concurrent_executions"] = _clean_int(
        current("max_concurrent_executions", 1),
        "max_concurrent_executions",
        "Max concurrent executions",
        CONCURRENCY_RANGE,
    )
    defaults = {"max_tool_calls_per_execution": 100}
    for name in BUDGET_FIELDS:
        label = Agent._meta.get_field(name).verbose_name.capitalize()
        cleaned[name] = _clean_int(
            current(name, defaults.get(name)), name, label, BUDGET_RANGE, optional=True
        )
    return cleaned


def _clean_api_key(value: Any) -> str | None:
    """``UNSET``/``None`` keep the stored key, ``""`` removes it, text replaces it."""
    if value is UNSET or value is None:
        return None
    if not isinstance(value, str):
        raise ServiceError("The LLM API key must be text.", field="llm_api_key")
    value = value.strip()
    if len(value) > 2000 or any(ch in value for ch in "\r\n"):
        raise ServiceError("That does not look like an API key.", field="llm_api_key")
    return value


def _store_api_key(agent: Agent, value: str) -> None:
    field: EncryptedField = agent._meta.get_field("llm_api_key")
    agent.llm_api_key = field.encrypt(value) if value else ""


# --- scope and approval ------------------------------------------------------------------------
def _ref(obj) -> dict | None:
    return None if obj is None else {"id": obj.pk, "name": str(obj)}


def agent_scope(agent: Agent) -> dict:
    """What ``agent`` may do, as approvers see it: hierarchy, engine, budgets and its
    allowed tool grants (a refused grant gives nothing, so it is not scope)."""
    grants = (
        agent.grants.filter(allowed=True)
        .select_related("tool__server")
        .order_by("tool__server__name", "tool__name", "tool_id")
    )
    return {
        "role": agent.role,
        "parent": _ref(agent.parent),
        "server": _ref(agent.server),
        "engine": agent.engine,
        "engine_settings": {
            "tool": _ref(agent.engine_tool),
            "llm_base_url": agent.llm_base_url,
            "llm_model": agent.llm_model,
            "llm_system_prompt": agent.llm_system_prompt,
            "llm_max_steps": agent.llm_max_steps,
        },
        "limits": {
            "max_concurrent_executions": agent.max_concurrent_executions,
            **{name: getattr(agent, name) for name in BUDGET_FIELDS},
        },
        "grants": {
            str(grant.tool_id): {
                "tool": grant.tool.name,
                "server": grant.tool.server.name,
                "requires_approval": grant.requires_approval,
                "max_calls_per_execution": grant.max_calls_per_execution,
                "max_calls_per_hour": grant.max_calls_per_hour,
                "argument_schema": grant.argument_schema,
            }
            for grant in grants
        },
    }


def _ref_id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def _grant_identity(grant: dict | None) -> dict | None:
    if grant is None:
        return None
    return {key: value for key, value in grant.items() if key not in ("tool", "server")}


def scope_identity(scope: dict) -> dict:
    """The scope without display names (renaming a parent, a server or a tool changes
    nothing an approval is about)."""
    engine = scope.get("engine_settings", {})
    return {
        **scope,
        "parent": _ref_id(scope.get("parent")),
        "server": _ref_id(scope.get("server")),
        "engine_settings": {**engine, "tool": _ref_id(engine.get("tool"))},
        "grants": {key: _grant_identity(grant) for key, grant in scope.get("grants", {}).items()},
    }


def scope_hash(scope: dict) -> str:
    canonical = json.dumps(
        scope_identity(scope), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _wider_limit(before: int | None, after: int | None) -> bool:
    """A cap is wider when it goes away or goes up (``None`` is no cap)."""
    if after is None:
        return before is not None
    return before is not None and after > before


def scope_changes(before: dict | None, after: dict) -> list[dict]:
    """What differs between an approved scope and a new one, each change marked with
    whether it ``grows`` what the agent may do. Everything is new without ``before``."""
    if before is None:
        return []
    changes: list[dict] = []

    def add(what: str, old: Any, new: Any, grows: bool) -> None:
        changes.append({"field": what, "before": old, "after": new, "grows": grows})

    for key in ("role", "parent", "server", "engine"):
        if _ref_id(before.get(key)) != _ref_id(after.get(key)):
            add(key, before.get(key), after.get(key), True)
    for key, new in after["engine_settings"].items():
        old = before.get("engine_settings", {}).get(key)
        if _ref_id(old) != _ref_id(new):
            grows = key != "llm_max_steps" or _wider_limit(old, new)
            add(f"engine_settings.{key}", old, new, grows)
    for key, new in after["limits"].items():
        old = before.get("limits", {}).get(key)
        if old != new:
            add(f"limits.{key}", old, new, _wider_limit(old, new))
    old_grants, new_grants = before.get("grants", {}), after["grants"]
    for tool_id in sorted(set(old_grants) | set(new_grants), key=int):
        old, new = old_grants.get(tool_id), new_grants.get(tool_id)
        label = (new or old)["tool"]
        if old is None:
            add(f"grants.{label}", None, new, True)
        elif new is None:
            add(f"grants.{label}", old, None, False)
        elif _grant_identity(old) != _grant_identity(new):
            grows = (
                (old["requires_approval"] and not new["requires_approval"])
                or any(_wider_limit(old[k], new[k]) for k in GRANT_LIMITS)
                or (
                    old["argument_schema"] is not None
                    and old["argument_schema"] != new["argument_schema"]
                )
            )
            add(f"grants.{label}", old, new, grows)
    return changes


def _expiry():
    return timezone.now() + timedelta(hours=settings.ARGUS_APPROVAL_EXPIRY_HOURS)


def _publish_request(request: ApprovalRequest, type: str) -> None:
    payload = {
        "request": request.pk,
        "kind": request.kind,
        "status": request.status,
        "target": request.target_label,
    }
    events.publish("org", type, payload, organization=request.organization_id)
    if request.agent_id is not None:
        events.publish(
            f"agent:{request.agent_id}", type, payload, organization=request.organization_id
        )


def _close_request(
    principal: Principal | None, request: ApprovalRequest, status: str, reason: str
) -> bool:
    """Move a pending request to ``status`` by compare-and-swap; audited and published."""
    now = timezone.now()
    decided_by = principal.user if principal is not None else None
    closed = ApprovalRequest.objects.filter(pk=request.pk, status=ApprovalStatus.PENDING).update(
        status=status, decided_by=decided_by, decided_at=now, reason=reason[:5000]
    )
    if not closed:
        return False
    request.status, request.decided_by, request.decided_at, request.reason = (
        status,
        decided_by,
        now,
        reason,
    )
    audit.record(
        principal or Principal.system(request.organization),
        f"approval.{status}",
        request,
        changes={"status": ["pending", status], **({"reason": reason} if reason else {})},
        organization=request.organization,
    )
    _publish_request(request, "approval.decided")
    return True


def _open_activation_request(
    principal: Principal, agent: Agent, scope: dict, requester=UNSET
) -> ApprovalRequest:
    """A new request to activate ``agent`` with ``scope``; an older pending one is
    withdrawn (it shows a scope that no longer exists). ``requester``: who asks (the
    principal's user unless said)."""
    for stale in ApprovalRequest.objects.filter(
        agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
    ):
        _close_request(principal, stale, ApprovalStatus.WITHDRAWN, "Superseded by a newer request.")
    changes = scope_changes(agent.approved_scope, scope)
    grown = [change["field"] for change in changes if change["grows"]]
    summary = f"Wider scope: {', '.join(grown)}"[:500] if grown else "Activate a new agent"
    request = ApprovalRequest.objects.create(
        organization=agent.organization,
        kind=ApprovalKind.AGENT_ACTIVATION,
        agent=agent,
        target_label=agent.name,
        summary=summary,
        requested_by=principal.user if requester is UNSET else requester,
        requested_via=principal.channel,
        snapshot=scope,
        snapshot_hash=scope_hash(scope),
        changes=changes,
        expires_at=_expiry(),
    )
    audit.record(
        principal,
        "approval.request",
        request,
        changes={"kind": request.kind, "agent": agent.name, "summary": summary},
    )
    _publish_request(request, "approval.requested")
    return request


def scope_grows(agent: Agent) -> bool:
    """Whether ``agent``'s scope is wider than the one approved (or never approved)."""
    agent = Agent.objects.select_related("parent", "server", "engine_tool").get(pk=agent.pk)
    return agent.approved_scope is None or any(
        change["grows"] for change in scope_changes(agent.approved_scope, agent_scope(agent))
    )


def _pending_activation(agent: Agent) -> ApprovalRequest | None:
    return ApprovalRequest.objects.filter(
        agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
    ).first()


def _note_author(agent: Agent, principal: Principal, widened: bool) -> None:
    """Remember who widened the scope since it was last approved (four-eyes)."""
    user = principal.user
    if widened and user is not None and user.pk not in agent.scope_authors:
        agent.scope_authors = [*agent.scope_authors, user.pk]
        Agent.objects.filter(pk=agent.pk).update(scope_authors=agent.scope_authors)


def _after_scope_change(
    principal: Principal, agent: Agent, before: dict | None = None
) -> ApprovalRequest | None:
    """Decide what a change of scope means: growing beyond what was approved opens a
    request (and a running agent goes back to ``PENDING_VALIDATION``; a suspended or
    failed one stays so, and cannot resume before the decision); coming back within
    what was approved withdraws the request (and a pending agent is active again);
    anything else needs nothing."""
    agent = Agent.objects.select_related("parent", "server", "engine_tool").get(pk=agent.pk)
    scope = agent_scope(agent)
    pending = _pending_activation(agent)
    # Whether this change itself widened the scope (``before``: the scope before it).
    widened = before is None or any(change["grows"] for change in scope_changes(before, scope))
    # A change that widens nothing leaves the request in the name of who asked for it.
    requester = UNSET if widened or pending is None else pending.requested_by
    if agent.approved_scope is None:
        _note_author(agent, principal, widened)
        # Never approved: the request must show the scope as it is now.
        if pending is None or pending.snapshot_hash != scope_hash(scope):
            return _open_activation_request(principal, agent, scope, requester)
        return None
    grows = any(change["grows"] for change in scope_changes(agent.approved_scope, scope))
    if grows:
        _note_author(agent, principal, widened)
        if agent.status in RUNNABLE:
            transition(
                principal,
                agent,
                Transition.REQUIRE_VALIDATION,
                "Its scope grew beyond what was approved.",
            )
        if pending is None or pending.snapshot_hash != scope_hash(scope):
            return _open_activation_request(principal, agent, scope, requester)
        return None
    if pending is not None:
        _close_request(
            principal,
            pending,
            ApprovalStatus.WITHDRAWN,
            "The scope is back within what was approved.",
        )
    if agent.status == AgentStatus.PENDING_VALIDATION:
        transition(
            principal, agent, Transition.ACTIVATE, "Its scope is back within what was approved."
        )
    # Narrowing is remembered, so growing back later asks again.
    Agent.objects.filter(pk=agent.pk).update(approved_scope=scope, scope_authors=[])
    return None


def request_approval(principal: Principal, agent: Agent) -> ApprovalRequest:
    """Ask again for a pending agent whose last request was rejected, withdrawn or
    expired (``change``)."""
    require(principal, Action.CHANGE, agent)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.status != AgentStatus.PENDING_VALIDATION and not (
            agent.status in (AgentStatus.INACTIVE, AgentStatus.ERROR) and scope_grows(agent)
        ):
            raise Conflict(f"{agent.name} is not waiting for approval.")
        if ApprovalRequest.objects.filter(
            agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
        ).exists():
            raise Conflict(f"{agent.name} already has a pending approval request.")
        agent = Agent.objects.select_related("parent", "server", "engine_tool").get(pk=agent.pk)
        return _open_activation_request(principal, agent, agent_scope(agent))


def _check_decider(principal: Principal, request: ApprovalRequest) -> None:
    """Only a person signed in to the console, allowed to approve, and (with four-eyes
    on) not the requester, decides a request."""
    require_session(principal, "Deciding an approval request")
    if principal.user is None or principal.is_system:
        raise PermissionDenied("Only a person decides an approval request.")
    require(principal, Action.APPROVE, request)
    organization = principal.organization
    authors = []
    if request.agent_id is not None:
        authors = (
            Agent.objects.filter(pk=request.agent_id)
            .values_list("scope_authors", flat=True)
            .first()
            or []
        )
    if organization.four_eyes_approval and (
        request.requested_by_id == principal.user.pk or principal.user.pk in authors
    ):
        raise PermissionDenied(
            "Four-eyes approval is on in this organization: someone other than the "
            "requester (and whoever widened the agent's scope) must decide this request."
        )


def _lock_agent_of(request: ApprovalRequest) -> None:
    """Lock the request's agent first, in the order every scope change locks them (the
    agent, then its requests), so a decision and a change never deadlock."""
    if request.agent_id is not None:
        Agent.objects.select_for_update().filter(pk=request.agent_id).first()


def _lock_pending(request: ApprovalRequest) -> ApprovalRequest:
    """The request, locked; :class:`Conflict` unless it is still pending."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if request.status != ApprovalStatus.PENDING:
        raise Conflict(f"This request is already {request.get_status_display().lower()}.")
    return request


def _refuse_expired(request: ApprovalRequest) -> None:
    """An expired request is closed as such (committed) and cannot be decided."""
    if request.status == ApprovalStatus.PENDING and request.expires_at <= timezone.now():
        with transaction.atomic():
            _close_request(None, request, ApprovalStatus.EXPIRED, "Not decided in time.")
        raise Conflict("This request expired before anyone decided it; the agent can ask again.")


def approve_request(
    principal: Principal, request: ApprovalRequest, reason: str = ""
) -> ApprovalRequest:
    """Approve a pending request (``approve``, a person in the console, four-eyes).

    An agent activation makes the agent ``ACTIVE`` with the approved scope; a tool
    change accepts the tool's new definition (which lifts the suspension of its grants).
    Raises :class:`Conflict` when the request is no longer pending, expired, or its
    target changed since the snapshot was taken.
    """
    _check_decider(principal, request)
    _refuse_expired(request)
    reason = (reason or "").strip()[:5000]
    with transaction.atomic():
        _lock_agent_of(request)
        request = _lock_pending(request)
        if request.kind == ApprovalKind.AGENT_ACTIVATION:
            agent = Agent.objects.select_for_update().get(pk=request.agent_id)
            agent = Agent.objects.select_related("parent", "server", "engine_tool").get(pk=agent.pk)
            scope = agent_scope(agent)
            if scope_hash(scope) != request.snapshot_hash:
                raise Conflict(
                    f"{agent.name} changed since this request was made; review the newer request."
                )
            _close_request(principal, request, ApprovalStatus.APPROVED, reason)
            # A suspended (or failed) agent stays so: the approval covers its scope, and
            # resuming it is a decision of its own.
            if agent.status == AgentStatus.PENDING_VALIDATION:
                transition(principal, agent, Transition.ACTIVATE, reason or "Approved.")
            Agent.objects.filter(pk=agent.pk).update(
                approved_scope=scope,
                approved_by=principal.user,
                approved_at=timezone.now(),
                scope_authors=[],
            )
        elif request.kind == ApprovalKind.TOOL_CHANGE:
            _close_request(principal, request, ApprovalStatus.APPROVED, reason)
            accept_tool_change(principal, request.tool, reviewed_hash=request.snapshot_hash)
        else:
            raise Conflict("Tool-call approvals are decided by the executions that wait for them.")
    return request


def reject_request(principal: Principal, request: ApprovalRequest, reason: str) -> ApprovalRequest:
    """Reject a pending request with a reason (same rules as approving). A rejected
    agent stays ``PENDING_VALIDATION``; a rejected tool change keeps the tool's grants
    suspended."""
    _check_decider(principal, request)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why the request is rejected.", field="reason")
    _refuse_expired(request)
    with transaction.atomic():
        _lock_agent_of(request)
        request = _lock_pending(request)
        _close_request(principal, request, ApprovalStatus.REJECTED, reason)
        if request.agent_id is not None and request.kind == ApprovalKind.AGENT_ACTIVATION:
            Agent.objects.filter(pk=request.agent_id).update(
                status_reason=f"Approval rejected: {reason}"[:REASON_MAX]
            )
    return request


def withdraw_request(
    principal: Principal, request: ApprovalRequest, reason: str = ""
) -> ApprovalRequest:
    """The requester takes back a pending request (an API key acts for its creator)."""
    require(principal, Action.VIEW, request)
    if principal.user is None or request.requested_by_id != principal.user.pk:
        raise PermissionDenied("Only the person who made a request can withdraw it.")
    if not (principal.scope_allows(Action.CHANGE) or principal.scope_allows(Action.OPERATE)):
        raise PermissionDenied("This API key's scopes do not allow withdrawing a request.")
    with transaction.atomic():
        request = _lock_pending(request)
        _close_request(
            principal,
            request,
            ApprovalStatus.WITHDRAWN,
            (reason or "").strip() or "Withdrawn by the requester.",
        )
    return request


def expire_requests(now=None) -> int:
    """Close every pending request past its expiry (the beat job); returns how many."""
    now = now or timezone.now()
    expired = 0
    for request in ApprovalRequest.objects.filter(
        status=ApprovalStatus.PENDING, expires_at__lte=now
    ).select_related("organization"):
        with transaction.atomic():
            expired += _close_request(None, request, ApprovalStatus.EXPIRED, "Not decided in time.")
    return expired


# --- tool changes ------------------------------------------------------------------------------
def sync_tool_change_requests(server: MCPServer, principal: Principal | None = None) -> None:
    """Keep one pending ``tool_change`` request per changed tool of ``server``, showing
    its current definition against the accepted one; withdraw those that no longer
    apply. Called inside the catalog's transaction."""
    principal = principal or Principal.system(server.organization)
    tools = {tool.pk: tool for tool in server.tools.all()}
    pending = {
        request.tool_id: request
        for request in ApprovalRequest.objects.filter(
            tool__server=server, kind=ApprovalKind.TOOL_CHANGE, status=ApprovalStatus.PENDING
        )
    }
    for tool_id, request in list(pending.items()):
        tool = tools.get(tool_id)
        if tool is None or tool.state != ToolState.CHANGED:
            reason = "The tool is no longer changed."
        elif tool.definition_hash != request.snapshot_hash:
            reason = "The tool changed again; a newer request shows the current definition."
        else:
            continue
        _close_request(principal, request, ApprovalStatus.WITHDRAWN, reason)
        del pending[tool_id]
    for tool in tools.values():
        if tool.state != ToolState.CHANGED or tool.pk in pending:
            continue
        if ApprovalRequest.objects.filter(
            tool=tool,
            kind=ApprovalKind.TOOL_CHANGE,
            status=ApprovalStatus.REJECTED,
            snapshot_hash=tool.definition_hash,
        ).exists():
            continue  # a person rejected this very definition: do not ask again
        before, after = tool.pinned_definition, tool.definition()
        created = ApprovalRequest.objects.create(
            organization_id=tool.organization_id,
            kind=ApprovalKind.TOOL_CHANGE,
            tool=tool,
            target_label=f"{server.name} / {tool.name}"[:300],
            summary=f"{tool.name}'s definition changed; its grants are suspended until accepted.",
            requested_by=None,
            requested_via="system",
            snapshot={"server": server.name, "tool": tool.name, "before": before, "after": after},
            snapshot_hash=tool.definition_hash,
            changes=json_changes(before, after),
            expires_at=_expiry(),
        )
        audit.record(
            principal,
            "approval.request",
            created,
            changes={"kind": created.kind, "tool": tool.name},
            organization=server.organization,
        )
        _publish_request(created, "approval.requested")


def on_tool_change_accepted(tool: Tool, principal: Principal) -> None:
    """A tool's change was accepted (in the catalog or through its request): its
    pending request, if any, is approved by the same person (``accept_tool_change``
    asked them for ``approve``)."""
    for request in ApprovalRequest.objects.filter(
        tool=tool, kind=ApprovalKind.TOOL_CHANGE, status=ApprovalStatus.PENDING
    ):
        _close_request(principal, request, ApprovalStatus.APPROVED, "Accepted in the tool catalog.")


# --- agents ------------------------------------------------------------------------------------
def _publish_changed(agent: Agent, type: str, fields: list[str] | None = None) -> None:
    _publish_agent(agent, type, {"status": agent.status, **({"fields": fields} if fields else {})})


def create_agent(principal: Principal, *, llm_api_key: Any = UNSET, **data) -> Agent:
    """Create an agent (``change``; counts against the plan's agent limit). It starts
    ``PENDING_VALIDATION`` with an approval request showing its scope."""
    require_create(principal, Agent)
    organization = principal.organization
    cleaned = clean_agent(organization, data)
    api_key = _clean_api_key(llm_api_key)
    with transaction.atomic():
        lock_organization(organization)
        enforce_limit(organization, Limit.AGENTS)
        agent = Agent(
            organization=organization,
            created_by=principal.user,
            scope_authors=[principal.user.pk] if principal.user is not None else [],
            **cleaned,
        )
        agent.status_changed_at = timezone.now()
        if api_key:
            _store_api_key(agent, api_key)
        try:
            with transaction.atomic():
                agent.save()
        except IntegrityError:
            raise ServiceError(
                f"An agent named {agent.name!r} already exists.", field="name"
            ) from None
        audit.record(
            principal,
            "agent.create",
            agent,
            changes={
                **{
                    key: [None, _ref(value) if hasattr(value, "pk") else value]
                    for key, value in cleaned.items()
                    if value not in ("", [], None)
                },
                **({"llm_api_key": "set"} if api_key else {}),
            },
        )
        _publish_changed(agent, "agent.created")
        _open_activation_request(principal, agent, agent_scope(agent))
    return agent


def update_agent(principal: Principal, agent: Agent, *, llm_api_key: Any = UNSET, **data) -> Agent:
    """Change an agent's configuration (``change``); never its status. A change that
    grows its scope beyond what was approved asks for approval again."""
    require(principal, Action.CHANGE, agent)
    if "status" in data:
        raise ServiceError(
            "The status changes only through its actions (approve, suspend, resume).",
            field="status",
        )
    api_key = _clean_api_key(llm_api_key)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        before = agent_scope(agent)
        cleaned = clean_agent(agent.organization, data, instance=agent)
        changes = {
            key: [
                _ref(getattr(agent, key))
                if key in ("parent", "server", "engine_tool")
                else getattr(agent, key),
                _ref(value) if key in ("parent", "server", "engine_tool") else value,
            ]
            for key, value in cleaned.items()
            if getattr(agent, key) != value
        }
        key_changed = api_key is not None and (api_key != "" or agent.has_llm_api_key)
        if not changes and not key_changed:
            return agent
        for key, value in cleaned.items():
            setattr(agent, key, value)
        if key_changed:
            had_key = agent.has_llm_api_key
            _store_api_key(agent, api_key)
            changes["llm_api_key"] = (
                "removed" if api_key == "" else ("replaced" if had_key else "set")
            )
        try:
            with transaction.atomic():
                agent.save()
        except IntegrityError:
            raise ServiceError(
                f"An agent named {agent.name!r} already exists.", field="name"
            ) from None
        audit.record(principal, "agent.update", agent, changes=changes)
        _publish_changed(agent, "agent.updated", sorted(changes))
        _after_scope_change(principal, agent, before)
        agent.refresh_from_db()
    return agent


def delete_agent(principal: Principal, agent: Agent, *, reparent_to: Agent | None = None) -> None:
    """Delete an agent (``change``). One with children is refused unless they move to
    ``reparent_to`` (each must fit there; moving asks for their approval again)."""
    require(principal, Action.CHANGE, agent)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        children = list(agent.children.select_for_update().order_by("name"))
        scopes_before: dict[int, dict] = {}
        if children and reparent_to is None:
            raise Conflict(
                f"{agent.name} has children ({', '.join(child.name for child in children)}); "
                "choose an agent to move them to, or move them first.",
            )
        if children:
            if reparent_to.pk == agent.pk or reparent_to.organization_id != agent.organization_id:
                raise ServiceError(
                    "Move the children to another agent of this organization.", field="reparent_to"
                )
            require(principal, Action.CHANGE, reparent_to)
            for child in children:
                require(principal, Action.CHANGE, child)
                try:
                    check_hierarchy(agent.organization, child, child.role, reparent_to)
                except ServiceError as exc:
                    raise ServiceError(
                        f"{child.name}: {exc.message}", field="reparent_to"
                    ) from None
                before = child.parent
                scopes_before[child.pk] = agent_scope(child)
                child.parent = reparent_to
                child.save(update_fields=["parent", "updated_at"])
                audit.record(
                    principal,
                    "agent.update",
                    child,
                    changes={"parent": [_ref(before), _ref(reparent_to)]},
                )
                _publish_changed(child, "agent.updated", ["parent"])
        audit.record(principal, "agent.delete", agent, changes={"name": [agent.name, None]})
        _publish_agent(agent, "agent.deleted", {})
        agent.delete()
        for child in children:
            _after_scope_change(principal, child, scopes_before[child.pk])


# --- tool grants --------------------------------------------------------------------------------
def _clean_grant(data: dict, *, instance: ToolGrant | None = None) -> dict:
    def current(name, default=None):
        if name in data:
            return data[name]
        return getattr(instance, name) if instance is not None else default

    cleaned: dict[str, Any] = {}
    for name in ("allowed", "requires_approval"):
        value = current(name, name == "allowed")
        if not isinstance(value, bool):
            raise ServiceError("Must be true or false.", field=name)
        cleaned[name] = value
    for name in GRANT_LIMITS:
        label = ToolGrant._meta.get_field(name).verbose_name.capitalize()
        cleaned[name] = _clean_int(current(name), name, label, BUDGET_RANGE, optional=True)
    schema = current("argument_schema")
    if schema in ({}, ""):
        schema = None
    if schema is not None:
        if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
            raise ServiceError(
                f"The argument schema is longer than {MAX_SCHEMA_CHARS} characters.",
                field="argument_schema",
            )
        schema_validator(schema, what="the argument schema", field="argument_schema")
    cleaned["argument_schema"] = schema
    cleaned["reason"] = _clean_text(current("reason", ""), "reason", "The reason", REASON_MAX)
    return cleaned


def _check_within_parent(agent: Agent, tool: Tool, cleaned: dict) -> None:
    """A grant of a supervisor or worker is never wider than its parent's effective
    permission on the tool; :class:`ServiceError` naming the parent."""
    parent = agent.parent
    if parent is None or not cleaned["allowed"]:
        return
    ceiling = resolve(parent, tool)
    if not ceiling.allowed:
        raise ServiceError(
            f"{agent.name}'s parent {parent.name} may not use {tool.name} "
            f"({ceiling.reason}); a child can only be granted tools its parent holds.",
            field="tool",
        )
    for name in GRANT_LIMITS:
        limit = getattr(ceiling, name)
        if limit is not None and (cleaned[name] is None or cleaned[name] > limit):
            label = ToolGrant._meta.get_field(name).verbose_name
            raise ServiceError(
                f"{label.capitalize()} can be at most {limit}, the limit of {agent.name}'s "
                f"parent {parent.name} on {tool.name}.",
                field=name,
            )
    if ceiling.requires_approval and not cleaned["requires_approval"]:
        raise ServiceError(
            f"{agent.name}'s parent {parent.name} needs approval for each call of "
            f"{tool.name}; this grant must require approval too.",
            field="requires_approval",
        )


def _grant_summary(grant: ToolGrant) -> dict:
    return {
        "allowed": grant.allowed,
        "requires_approval": grant.requires_approval,
        "max_calls_per_execution": grant.max_calls_per_execution,
        "max_calls_per_hour": grant.max_calls_per_hour,
        "argument_schema": grant.argument_schema,
    }


def _publish_grant(grant: ToolGrant, type: str) -> None:
    _publish_agent(grant.agent, type, {"tool": grant.tool_id, "tool_name": grant.tool.name})


def grant_tool(principal: Principal, agent: Agent, tool: Tool, **data) -> ToolGrant:
    """Give ``agent`` a grant on ``tool`` (``change`` on the agent). Bounded by the
    parent; a grant that widens an approved agent's scope asks for approval again."""
    require(principal, Action.CHANGE, agent)
    if tool.organization_id != agent.organization_id:
        raise ServiceError("The tool must belong to this organization.", field="tool")
    if tool.state == ToolState.REMOVED:
        raise ServiceError(f"{tool.server.name} no longer offers {tool.name}.", field="tool")
    cleaned = _clean_grant(data)
    with transaction.atomic():
        agent = (
            Agent.objects.select_for_update(of=("self",)).select_related("parent").get(pk=agent.pk)
        )
        if agent.grants.filter(tool=tool).exists():
            raise ServiceError(
                f"{agent.name} already has a grant for {tool.name}; change that one.", field="tool"
            )
        before = agent_scope(agent)
        _check_within_parent(agent, tool, cleaned)
        grant = ToolGrant.objects.create(
            organization_id=agent.organization_id,
            agent=agent,
            tool=tool,
            granted_by=principal.user,
            **cleaned,
        )
        audit.record(
            principal,
            "grant.create",
            grant,
            changes={"tool": tool.name, **{k: [None, v] for k, v in _grant_summary(grant).items()}},
            target_label=f"{agent.name} → {tool.name}",
        )
        _publish_grant(grant, "grant.created")
        _after_scope_change(principal, agent, before)
    return grant


def update_tool_grant(principal: Principal, grant: ToolGrant, **data) -> ToolGrant:
    """Change a grant (``change`` on its agent); never wider than the parent's.
    Narrowing takes effect at once, for the agent and all its descendants."""
    require(principal, Action.CHANGE, grant.agent)
    unknown = set(data) - {
        "allowed",
        "requires_approval",
        *GRANT_LIMITS,
        "argument_schema",
        "reason",
    }
    if unknown:
        raise ServiceError(f"Unknown grant fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        # The agent first, as every other write about it does (no lock-order deadlock).
        Agent.objects.select_for_update().filter(pk=grant.agent_id).first()
        grant = (
            ToolGrant.objects.select_for_update(of=("self",))
            .select_related("agent__parent", "tool")
            .get(pk=grant.pk)
        )
        cleaned = _clean_grant(data, instance=grant)
        scope_before = agent_scope(grant.agent)
        before = _grant_summary(grant)
        for key, value in cleaned.items():
            setattr(grant, key, value)
        after = _grant_summary(grant)
        if before == after:
            # Only the reason changed (or nothing): no new limits to check or approve.
            grant.save(update_fields=["reason", "updated_at"])
            return grant
        _check_within_parent(grant.agent, grant.tool, cleaned)
        grant.granted_by = principal.user
        grant.save()
        audit.record(
            principal,
            "grant.update",
            grant,
            changes={key: [before[key], after[key]] for key in after if before[key] != after[key]},
            target_label=f"{grant.agent.name} → {grant.tool.name}",
        )
        _publish_grant(grant, "grant.updated")
        _after_scope_change(principal, grant.agent, scope_before)
    return grant


def revoke_tool_grant(principal: Principal, grant: ToolGrant) -> None:
    """Remove a grant (``change`` on its agent). Its descendants lose the tool at once:
    the resolver finds the parent no longer holds it."""
    require(principal, Action.CHANGE, grant.agent)
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=grant.agent_id).first()
        grant = ToolGrant.objects.select_related("agent", "tool").get(pk=grant.pk)
        audit.record(
            principal,
            "grant.delete",
            grant,
            changes={
                "tool": grant.tool.name,
                **{k: [v, None] for k, v in _grant_summary(grant).items()},
            },
            target_label=f"{grant.agent.name} → {grant.tool.name}",
        )
        _publish_grant(grant, "grant.deleted")
        agent = grant.agent
        scope_before = agent_scope(agent)
        grant.delete()
        _after_scope_change(principal, agent, scope_before)


# --- the resolver -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Permission:
    """What one agent may do with one tool, and why (the tightest along its chain)."""

    agent_id: int
    tool: Tool
    allowed: bool
    code: str
    reason: str
    requires_approval: bool = False
    max_calls_per_execution: int | None = None
    max_calls_per_hour: int | None = None
    argument_schemas: tuple = ()
    # The agent's own grant (None when it has none).
    grant: ToolGrant | None = None

    @property
    def suspended(self) -> bool:
        return self.code == "tool_changed"


def _tighter(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


class Resolver:
    """Resolves permissions of many agents on many tools with two queries: the
    organization's hierarchy and the grants of the agents involved."""

    def __init__(self, organization_id: int, tool_ids=None, *, chain_of: int | None = None):
        """``tool_ids``: the tools to resolve (all when ``None``); ``chain_of``: load only
        the grants of that agent's chain."""
        rows = Agent.objects.filter(organization_id=organization_id).values_list(
            "id", "parent_id", "name", "status"
        )
        self.hierarchy = {pk: parent_id for pk, parent_id, _name, _status in rows}
        self.names = {pk: name for pk, _parent_id, name, _status in rows}
        self.statuses = {pk: status for pk, _parent_id, _name, status in rows}
        grants = ToolGrant.objects.filter(organization_id=organization_id)
        if tool_ids is not None:
            grants = grants.filter(tool_id__in=list(tool_ids))
        if chain_of is not None:
            grants = grants.filter(agent_id__in=self.chain(chain_of))
        self.grants = {(grant.agent_id, grant.tool_id): grant for grant in grants}

    def chain(self, agent_id: int) -> list[int]:
        """The agent, its parent, and so on up to its master."""
        chain, seen = [], set()
        current = agent_id
        while current is not None and current not in seen:
            chain.append(current)
            seen.add(current)
            current = self.hierarchy.get(current)
        return chain

    def resolve(self, agent_id: int, tool: Tool) -> Permission:
        chain = self.chain(agent_id)
        own = self.grants.get((agent_id, tool.pk))
        requires_approval = False
        per_execution = per_hour = None
        schemas = []
        for position, link in enumerate(chain):
            grant = self.grants.get((link, tool.pk))
            name = self.names.get(link, "?")
            if grant is None or not grant.allowed:
                if position == 0:
                    code, why = (
                        ("no_grant", f"{name} has no grant for {tool.name}")
                        if grant is None
                        else ("denied", f"{name}'s grant for {tool.name} refuses it")
                    )
                else:
                    code = "parent_lacks"
                    why = (
                        f"{name}, above {self.names.get(agent_id, '?')}, "
                        f"{'has no grant for' if grant is None else 'is refused'} {tool.name}"
                    )
                return Permission(agent_id, tool, False, code, why, grant=own)
            requires_approval = requires_approval or grant.requires_approval
            per_execution = _tighter(per_execution, grant.max_calls_per_execution)
            per_hour = _tighter(per_hour, grant.max_calls_per_hour)
            if grant.argument_schema is not None:
                schemas.append(grant.argument_schema)
        limits = {
            "requires_approval": requires_approval,
            "max_calls_per_execution": per_execution,
            "max_calls_per_hour": per_hour,
            "argument_schemas": tuple(schemas),
            "grant": own,
        }
        if tool.state == ToolState.REMOVED:
            return Permission(
                agent_id, tool, False, "tool_removed", f"{tool.name} is no longer offered", **limits
            )
        if tool.state == ToolState.CHANGED:
            return Permission(
                agent_id,
                tool,
                False,
                "tool_changed",
                f"{tool.name}'s definition changed; the grant is suspended until a person "
                "accepts the change",
                **limits,
            )
        via = " (within the limits of its parents)" if len(chain) > 1 else ""
        return Permission(agent_id, tool, True, "granted", f"granted{via}", **limits)


def resolve(agent: Agent, tool: Tool) -> Permission:
    """Whether ``agent`` may use ``tool``, why, whether each call needs approval, and
    the effective limits (the tightest along the chain). Every caller uses this."""
    if tool.organization_id != agent.organization_id:
        return Permission(agent.pk, tool, False, "no_grant", "the tool is in another organization")
    return Resolver(agent.organization_id, [tool.pk]).resolve(agent.pk, tool)


def effective_tools(agent: Agent) -> list[Permission]:
    """Every tool the agent or one of its ancestors holds a grant for, resolved, with
    the reason for each (what the agent detail page shows)."""
    resolver = Resolver(agent.organization_id, chain_of=agent.pk)
    tool_ids = {tool_id for (_agent_id, tool_id) in resolver.grants}
    tools = (
        Tool.objects.filter(pk__in=tool_ids)
        .select_related("server")
        .order_by("server__name", "name")
    )
    return [resolver.resolve(agent.pk, tool) for tool in tools]


def permitted_tools(agent: Agent) -> list[Tool]:
    """The tools ``agent`` may see and call (resolved as allowed)."""
    return [permission.tool for permission in effective_tools(agent) if permission.allowed]


def permission_matrix(agents: list[Agent], tools: list[Tool]) -> dict[tuple[int, int], dict]:
    """For the permissions matrix: each (agent, tool) cell's own grant, the effective
    permission, and the ceiling its parent sets (``None`` for a master)."""
    if not agents:
        return {}
    resolver = Resolver(agents[0].organization_id, [tool.pk for tool in tools])
    cells = {}
    for agent in agents:
        for tool in tools:
            parent_id = resolver.hierarchy.get(agent.pk)
            cells[(agent.pk, tool.pk)] = {
                "grant": resolver.grants.get((agent.pk, tool.pk)),
                "effective": resolver.resolve(agent.pk, tool),
                "ceiling": resolver.resolve(parent_id, tool) if parent_id else None,
            }
    return cells


# --- the kill switch -----------------------------------------------------------------------------
def pause_agents(principal: Principal, reason: str) -> Organization:
    """Pause every agent of the organization at once (``manage``): every gate refuses
    until :func:`resume_agents`. Running executions are cancelled by the tasks app."""
    organization = principal.organization
    require(principal, Action.MANAGE, organization)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("Say why every agent is paused.", field="reason")
    with transaction.atomic():
        organization = Organization.objects.select_for_update().get(pk=organization.pk)
        if organization.agents_paused_at is not None:
            raise Conflict("This organization's agents are already paused.")
        organization.agents_paused_at = timezone.now()
        organization.agents_paused_by = principal.user
        organization.agents_paused_reason = reason[:REASON_MAX]
        organization.save(
            update_fields=["agents_paused_at", "agents_paused_by", "agents_paused_reason"]
        )
        audit.record(
            principal, "organization.pause_agents", organization, changes={"reason": reason}
        )
        _publish_kill_switch(organization, paused=True, reason=reason)
    principal.organization = organization
    return organization


def resume_agents(principal: Principal) -> Organization:
    """Lift the kill switch (``manage``); agents keep their own statuses."""
    organization = principal.organization
    require(principal, Action.MANAGE, organization)
    with transaction.atomic():
        organization = Organization.objects.select_for_update().get(pk=organization.pk)
        if organization.agents_paused_at is None:
            raise Conflict("This organization's agents are not paused.")
        paused_since = organization.agents_paused_at
        organization.agents_paused_at = None
        organization.agents_paused_by = None
        organization.agents_paused_reason = ""
        organization.save(
            update_fields=["agents_paused_at", "agents_paused_by", "agents_paused_reason"]
        )
        audit.record(
            principal,
            "organization.resume_agents",
            organization,
            changes={"paused_since": paused_since.isoformat()},
        )
        _publish_kill_switch(organization, paused=False, reason="")
    principal.organization = organization
    return organization


def _publish_kill_switch(organization: Organization, *, paused: bool, reason: str) -> None:
    events.publish(
        "org",
        "agents.paused" if paused else "agents.resumed",
        {"paused": paused, "reason": reason},
        organization=organization.pk,
    )
    for agent_id, name, status in Agent.objects.filter(organization=organization).values_list(
        "id", "name", "status"
    ):
        events.publish(
            f"agent:{agent_id}",
            "agent.status",
            {"agent": agent_id, "name": name, "status": status, "paused": paused, "reason": reason},
            organization=organization.pk,
        )


# --- the gate -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clearance:
    """A call the gate let through: the permission it was judged under."""

    permission: Permission
    requires_approval: bool


def authorize_call(agent: Agent, tool: Tool, arguments: Any, *, execution: str) -> Clearance:
    """The gate every tool call of an agent passes, in order: the kill switch, the
    agent's status, the resolved permission (grants along the chain, a changed or
    removed tool), the tool's input schema and every argument schema along the chain,
    loop detection, then the budgets (counted atomically, only when all pass).

    ``execution`` identifies the execution (or session) the call belongs to. Raises
    :class:`CallRefused` with a :class:`Refusal` code and a message saying why.
    """
    state = (
        Agent.objects.filter(pk=agent.pk)
        .values(
            "status",
            "organization__agents_paused_at",
            "max_tool_calls_per_execution",
            "max_tool_calls_per_hour",
            "max_tool_calls_per_day",
        )
        .first()
    )
    if state is None:
        raise CallRefused(Refusal.AGENT_NOT_ACTIVE, f"{agent.name} no longer exists.")
    if state["organization__agents_paused_at"] is not None:
        raise CallRefused(
            Refusal.ORGANIZATION_PAUSED,
            "Every agent of this organization is paused (kill switch); no tool call runs.",
        )
    if state["status"] not in RUNNABLE:
        raise CallRefused(
            Refusal.AGENT_NOT_ACTIVE,
            f"{agent.name} is {AgentStatus(state['status']).label.lower()}; only an active "
            "agent calls tools.",
        )
    # The tool as it is now: a definition that changed since the caller loaded it counts.
    current = Tool.objects.filter(pk=tool.pk).first()
    if current is None:
        raise CallRefused(Refusal.TOOL_UNAVAILABLE, f"{tool.name} no longer exists.")
    tool = current
    if tool.organization_id != agent.organization_id:
        raise CallRefused(Refusal.NOT_PERMITTED, f"{tool.name} is in another organization.")
    resolver = Resolver(agent.organization_id, [tool.pk])
    for ancestor in resolver.chain(agent.pk)[1:]:
        ancestor_status = resolver.statuses.get(ancestor)
        if ancestor_status not in RUNNABLE:
            # A parent waiting for approval (its grants are not approved), suspended or
            # failed bounds its children to nothing.
            state = (
                "suspended"
                if ancestor_status == AgentStatus.INACTIVE
                else AgentStatus(ancestor_status).label.lower()
            )
            raise CallRefused(
                Refusal.AGENT_NOT_ACTIVE,
                f"{resolver.names[ancestor]}, above {agent.name}, is {state}; the agents "
                "below it do not act either.",
            )
    permission = resolver.resolve(agent.pk, tool)
    if not permission.allowed:
        code = (
            Refusal.TOOL_UNAVAILABLE
            if permission.code in ("tool_changed", "tool_removed")
            else Refusal.NOT_PERMITTED
        )
        raise CallRefused(code, f"{agent.name} may not call {tool.name}: {permission.reason}.")
    try:
        validate_arguments(tool, arguments)
        for schema in permission.argument_schemas:
            validate_against(
                schema, arguments, what="the argument schema of a grant", check_formats=True
            )
    except ServiceError as exc:
        raise CallRefused(Refusal.INVALID_ARGUMENTS, exc.message) from None
    threshold = settings.ARGUS_LOOP_DETECTION_REPEATS
    repeated = guards.repeats(agent.pk, execution, guards.call_signature(tool.pk, arguments))
    if repeated >= threshold:
        raise CallRefused(
            Refusal.LOOP_DETECTED,
            f"{agent.name} called {tool.name} with the same arguments {repeated} times in a "
            "row; the execution is stopped as a loop.",
        )
    exhausted = guards.take(
        guards.agent_budgets(
            agent.pk,
            tool.pk,
            execution,
            per_execution=state["max_tool_calls_per_execution"],
            per_hour=state["max_tool_calls_per_hour"],
            per_day=state["max_tool_calls_per_day"],
            tool_per_execution=permission.max_calls_per_execution,
            tool_per_hour=permission.max_calls_per_hour,
        )
    )
    if exhausted is not None:
        raise CallRefused(
            Refusal.BUDGET_EXCEEDED,
            f"{agent.name} reached its limit of {exhausted.label} ({exhausted.cap}).",
        )
    return Clearance(permission=permission, requires_approval=permission.requires_approval)


def call_usage(agent: Agent, now=None) -> dict[str, int]:
    """The agent's tool calls counted this hour and today (for the console)."""
    hour, day = guards.used(
        [
            f"{guards.PREFIX}agent:{agent.pk}:hour:{guards.hour_bucket(now)}",
            f"{guards.PREFIX}agent:{agent.pk}:day:{guards.day_bucket(now)}",
        ]
    )
    return {"hour": hour, "day": day}


# --- the demo organization ------------------------------------------------------------------------
DEMO_AGENTS = (
    # name, role, parent, description, {tool: grant fields}, approve
    (
        "Orchestrator",
        AgentRole.MASTER,
        None,
        "Plans work and hands it to its supervisors.",
        {"echo": {}, "calculate": {}, "get_weather": {}, "progress": {}, "slow_operation": {}},
        True,
    ),
    (
        "Research lead",
        AgentRole.SUPERVISOR,
        "Orchestrator",
        "Supervises the workers that gather facts.",
        {"echo": {}, "get_weather": {"max_calls_per_hour": 60}, "calculate": {}},
        True,
    ),
    (
        "Weather worker",
        AgentRole.WORKER,
        "Research lead",
        "Looks up the weather; at most 30 calls an hour.",
        {"get_weather": {"max_calls_per_hour": 30}},
        True,
    ),
    (
        "Calculator",
        AgentRole.WORKER,
        "Research lead",
        "Does arithmetic; waits in the approvals inbox for a person to activate it.",
        {"calculate": {"requires_approval": True}},
        False,
    ),
)


def seed_demo_agents(organization: Organization, server: MCPServer | None, user) -> list[Agent]:
    """The demo organization's agents, once: a small hierarchy on the demo server's
    tools, all approved by the demo admin except one left in the approvals inbox."""
    if server is None or organization.agents.exists():
        return []
    creator = Principal.system(organization)
    decider = Principal.member(user, organization, channel="system")
    tools = {tool.name: tool for tool in server.tools.exclude(state=ToolState.REMOVED)}
    created: dict[str, Agent] = {}
    for name, role, parent, description, grants, approve in DEMO_AGENTS:
        agent = create_agent(
            creator,
            name=name,
            role=role,
            parent=created.get(parent),
            server=server,
            description=description,
            capabilities=["demo"],
        )
        for tool_name, fields in grants.items():
            if tool_name in tools:
                grant_tool(creator, agent, tools[tool_name], reason="Demo setup.", **fields)
        if approve:
            request = ApprovalRequest.objects.get(
                agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
            )
            approve_request(decider, request, "Approved when the demo was set up.")
        agent.refresh_from_db()
        created[name] = agent
    return list(created.values())
