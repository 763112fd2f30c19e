"""Approval requests: who decides, four-eyes, expiry, and re-approval when an approved
agent's scope grows (never when it narrows)."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents import services, tasks
from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, ApprovalRequest
from argus import events
from argus.errors import Conflict, ServiceError
from orgs import services as org_services
from orgs.models import AuditEvent, Organization
from orgs.permissions import Principal
from tests.agents.factories import make_agent, make_grant, make_request, make_server, make_tool
from tools import services as tool_services

PENDING = AgentStatus.PENDING_VALIDATION


@pytest.fixture
def admin(personas):
    return personas.principal("ADMIN")


@pytest.fixture
def manager(personas):
    return personas.principal("MANAGER")


@pytest.fixture
def created(manager):
    """An agent the manager created: pending, with the manager's request."""
    agent = services.create_agent(manager, name="Fresh", role=AgentRole.MASTER)
    return agent, ApprovalRequest.objects.get(agent=agent)


def pending_request(agent) -> ApprovalRequest:
    return ApprovalRequest.objects.get(
        agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
    )


def status_of(agent) -> str:
    return Agent.objects.values_list("status", flat=True).get(pk=agent.pk)


def api_key_principal(personas, role="ADMIN", scopes=("write",)) -> Principal:
    key, _secret = org_services.create_api_key(
        personas.principal(role), "automation", scopes=list(scopes)
    )
    return Principal.for_api_key(key)


def set_four_eyes(personas, on: bool) -> None:
    Organization.objects.filter(pk=personas.org_a.pk).update(four_eyes_approval=on)
    personas.org_a.refresh_from_db()


def expire(request) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )


# --- the request a new agent opens ---------------------------------------------------------------
def test_a_new_agent_opens_a_pending_request_with_its_scope(personas, created):
    agent, request = created
    agent.refresh_from_db()
    assert request.kind == ApprovalKind.AGENT_ACTIVATION
    assert request.status == ApprovalStatus.PENDING
    assert request.organization == personas.org_a
    assert request.requested_by == personas.manager
    assert request.requested_via == "console"
    assert request.target_label == "Fresh"
    assert request.summary == "Activate a new agent"
    assert request.changes == []
    assert request.snapshot == services.agent_scope(agent)
    assert request.snapshot_hash == services.scope_hash(request.snapshot)
    assert len(request.snapshot_hash) == 64
    expected_expiry = timezone.now() + timedelta(hours=168)
    assert abs((request.expires_at - expected_expiry).total_seconds()) < 60
    assert AuditEvent.objects.filter(action="approval.request", target_id=str(request.pk)).exists()


# --- who decides ---------------------------------------------------------------------------------
def test_approving_makes_the_agent_active_with_the_approved_scope(
    personas, created, admin, django_capture_on_commit_callbacks
):
    agent, request = created
    stream = events.Stream(personas.org_a.pk, "org")
    before = events.last_id(stream)
    with django_capture_on_commit_callbacks(execute=True):
        decided = services.approve_request(admin, request, "  looks right ")
    assert (decided.status, decided.decided_by, decided.reason) == (
        ApprovalStatus.APPROVED,
        personas.admin,
        "looks right",
    )
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert agent.status_reason == "looks right"
    assert agent.approved_by == personas.admin
    assert agent.approved_at is not None
    assert agent.approved_scope == request.snapshot
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED
    assert request.decided_at is not None
    assert AuditEvent.objects.filter(action="approval.approved", target_id=str(request.pk)).exists()
    assert AuditEvent.objects.filter(action="agent.activate", target_id=str(agent.pk)).exists()
    types = [event["type"] for event in events.events_between(stream, before)]
    assert types == ["approval.decided", "agent.status"]


def test_an_api_key_never_decides(personas, created):
    _agent, request = created
    key = api_key_principal(personas)
    with pytest.raises(PermissionDenied, match="not possible with an API key; use the console"):
        services.approve_request(key, request)
    with pytest.raises(PermissionDenied, match="not possible with an API key"):
        services.reject_request(key, request, "no")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_an_api_key_may_ask_for_approval(personas, admin, created):
    agent, request = created
    services.withdraw_request(personas.principal("MANAGER"), request)
    key = api_key_principal(personas, "MANAGER")
    again = services.request_approval(key, agent)
    assert (again.requested_by, again.requested_via) == (personas.manager, "api")
    assert again.status == ApprovalStatus.PENDING


def test_four_eyes_keeps_the_requester_from_deciding(personas, created, manager):
    _agent, request = created
    with pytest.raises(PermissionDenied, match="Four-eyes approval is on"):
        services.approve_request(manager, request)
    with pytest.raises(PermissionDenied, match="someone other than the requester"):
        services.reject_request(manager, request, "no")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_without_four_eyes_the_requester_may_decide(personas, created):
    agent, request = created
    set_four_eyes(personas, False)
    services.approve_request(personas.principal("MANAGER"), request)
    assert status_of(agent) == AgentStatus.ACTIVE


def test_a_viewer_cannot_approve(personas, created):
    _agent, request = created
    with pytest.raises(PermissionDenied, match="not allowed to approve this approval request"):
        services.approve_request(personas.principal("VIEWER"), request)
    with pytest.raises(PermissionDenied):
        services.reject_request(personas.principal("OPERATOR"), request, "no")


def test_argus_itself_never_decides(personas, created):
    _agent, request = created
    with pytest.raises(PermissionDenied, match="Only a person decides"):
        services.approve_request(Principal.system(personas.org_a), request)


def test_an_outsider_cannot_approve(personas, created):
    _agent, request = created
    with pytest.raises(PermissionDenied):
        services.approve_request(personas.principal("outsider"), request)


def test_a_per_object_approve_grant_lets_a_viewer_approve(personas, admin, created):
    agent, request = created
    other = make_agent(personas.org_a, status=PENDING)
    other_request = make_request(other, requested_by=personas.manager)
    org_services.grant(admin, "approve", agent, user=personas.viewer)
    viewer = personas.principal("VIEWER")
    # The grant covers this agent's requests, not another agent's.
    with pytest.raises(PermissionDenied):
        services.approve_request(viewer, other_request)
    services.approve_request(viewer, request)
    agent.refresh_from_db()
    assert (agent.status, agent.approved_by) == (AgentStatus.ACTIVE, personas.viewer)


# --- rejecting, withdrawing, deciding twice ------------------------------------------------------
def test_rejecting_needs_a_reason_and_keeps_the_agent_pending(personas, created, admin):
    agent, request = created
    with pytest.raises(ServiceError) as error:
        services.reject_request(admin, request, "   ")
    assert (error.value.field, error.value.message) == (
        "reason",
        "Say why the request is rejected.",
    )
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    services.reject_request(admin, request, "too many tools")
    request.refresh_from_db()
    assert (request.status, request.reason, request.decided_by) == (
        ApprovalStatus.REJECTED,
        "too many tools",
        personas.admin,
    )
    agent.refresh_from_db()
    assert agent.status == PENDING
    assert agent.status_reason == "Approval rejected: too many tools"
    assert agent.approved_scope is None
    assert AuditEvent.objects.filter(action="approval.rejected", target_id=str(request.pk)).exists()


def test_asking_again_after_a_rejection(personas, created, admin, manager):
    agent, request = created
    with pytest.raises(Conflict, match="already has a pending approval request"):
        services.request_approval(manager, agent)
    services.reject_request(admin, request, "not yet")
    again = services.request_approval(manager, agent)
    assert again.pk != request.pk
    assert again.status == ApprovalStatus.PENDING
    with pytest.raises(PermissionDenied):
        services.request_approval(personas.principal("VIEWER"), agent)
    active = make_agent(personas.org_a)
    with pytest.raises(Conflict, match="is not waiting for approval"):
        services.request_approval(manager, active)


def test_only_the_requester_withdraws(personas, created, admin, manager):
    _agent, request = created
    with pytest.raises(PermissionDenied, match="Only the person who made a request"):
        services.withdraw_request(admin, request)
    services.withdraw_request(manager, request)
    request.refresh_from_db()
    assert (request.status, request.reason) == (
        ApprovalStatus.WITHDRAWN,
        "Withdrawn by the requester.",
    )


def test_the_requesters_api_key_may_withdraw(personas, created):
    _agent, request = created
    read_only = api_key_principal(personas, "MANAGER", ("read",))
    with pytest.raises(PermissionDenied, match="scopes do not allow withdrawing a request"):
        services.withdraw_request(read_only, request)
    services.withdraw_request(api_key_principal(personas, "MANAGER", ("write",)), request, "oops")
    request.refresh_from_db()
    assert (request.status, request.reason) == (ApprovalStatus.WITHDRAWN, "oops")


@pytest.mark.parametrize(
    ("first", "words"),
    [("approve", "already approved"), ("reject", "already rejected")],
)
def test_deciding_twice_is_a_conflict(personas, created, admin, first, words):
    _agent, request = created
    if first == "approve":
        services.approve_request(admin, request)
    else:
        services.reject_request(admin, request, "no")
    for decide in (
        lambda: services.approve_request(admin, request),
        lambda: services.reject_request(admin, request, "again"),
        lambda: services.withdraw_request(personas.principal("MANAGER"), request),
    ):
        with pytest.raises(Conflict, match=words) as error:
            decide()
        assert error.value.status == 409


def test_a_tool_call_request_is_not_decided_here(personas, admin):
    agent = make_agent(personas.org_a)
    request = make_request(agent)
    ApprovalRequest.objects.filter(pk=request.pk).update(kind=ApprovalKind.TOOL_CALL)
    request.refresh_from_db()
    with pytest.raises(Conflict, match="decided by the executions"):
        services.approve_request(admin, request)
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


# --- expiry --------------------------------------------------------------------------------------
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_expired_request_cannot_be_decided(personas, created, admin, decision):
    agent, request = created
    expire(request)
    request.refresh_from_db()
    with pytest.raises(Conflict, match="expired before anyone decided it"):
        if decision == "approve":
            services.approve_request(admin, request)
        else:
            services.reject_request(admin, request, "late")
    request.refresh_from_db()
    assert (request.status, request.reason) == (ApprovalStatus.EXPIRED, "Not decided in time.")
    assert request.decided_by is None
    assert status_of(agent) == PENDING


def test_expire_requests_closes_only_due_ones(personas):
    due = make_request(make_agent(personas.org_a, status=PENDING))
    later = make_request(make_agent(personas.org_a, status=PENDING))
    expire(due)
    assert services.expire_requests() == 1
    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == ApprovalStatus.EXPIRED
    assert later.status == ApprovalStatus.PENDING
    assert AuditEvent.objects.filter(action="approval.expired", target_id=str(due.pk)).exists()
    assert services.expire_requests() == 0
    assert services.expire_requests(now=timezone.now() + timedelta(days=8)) == 1
    later.refresh_from_db()
    assert later.status == ApprovalStatus.EXPIRED


def test_the_expiry_task_closes_due_requests(personas):
    due = make_request(make_agent(personas.org_a, status=PENDING))
    decided = make_request(make_agent(personas.org_a, status=PENDING), status="approved")
    expire(due)
    expire(decided)
    assert tasks.expire_approvals() == 1
    due.refresh_from_db()
    decided.refresh_from_db()
    assert (due.status, decided.status) == (ApprovalStatus.EXPIRED, ApprovalStatus.APPROVED)


# --- scope growth needs approval again -----------------------------------------------------------
@pytest.fixture
def world(personas):
    """An approved, ACTIVE worker under a master that holds tools ``a`` and ``b``; the
    worker holds ``a`` with every kind of restriction."""
    server = make_server(personas.org_a)
    a, b = make_tool(server, "a"), make_tool(server, "b")
    master = make_agent(personas.org_a, name="Master")
    other_master = make_agent(personas.org_a, name="Other master")
    make_grant(master, a)
    make_grant(master, b)
    worker = make_agent(
        personas.org_a,
        name="Worker",
        role=AgentRole.WORKER,
        parent=master,
        max_tool_calls_per_execution=50,
        max_tool_calls_per_hour=500,
    )
    grant = make_grant(
        worker,
        a,
        requires_approval=True,
        max_calls_per_execution=5,
        max_calls_per_hour=20,
        argument_schema={"type": "object", "properties": {"q": {"maxLength": 10}}},
    )
    Agent.objects.filter(pk=worker.pk).update(approved_scope=services.agent_scope(worker))
    worker.refresh_from_db()
    return {
        "worker": worker,
        "grant": grant,
        "a": a,
        "b": b,
        "server": server,
        "other_master": other_master,
    }


GROWTH = {
    "new grant": (lambda m, w: services.grant_tool(m, w["worker"], w["b"]), "grants.b"),
    "wider limit": (
        lambda m, w: services.update_tool_grant(m, w["grant"], max_calls_per_execution=6),
        "grants.a",
    ),
    "removed limit": (
        lambda m, w: services.update_tool_grant(m, w["grant"], max_calls_per_hour=None),
        "grants.a",
    ),
    "approval lifted": (
        lambda m, w: services.update_tool_grant(m, w["grant"], requires_approval=False),
        "grants.a",
    ),
    "schema lifted": (
        lambda m, w: services.update_tool_grant(m, w["grant"], argument_schema=None),
        "grants.a",
    ),
    "schema replaced": (
        lambda m, w: services.update_tool_grant(m, w["grant"], argument_schema={"type": "object"}),
        "grants.a",
    ),
    "refused grant allowed": (None, "grants.a"),
    "new parent": (
        lambda m, w: services.update_agent(m, w["worker"], parent=w["other_master"]),
        "parent",
    ),
    "new engine": (
        lambda m, w: services.update_agent(
            m, w["worker"], engine=Engine.MCP_TOOL, server=w["server"], engine_tool=w["a"]
        ),
        "engine",
    ),
    "new home server": (
        lambda m, w: services.update_agent(m, w["worker"], server=w["server"]),
        "server",
    ),
    "raised budget": (
        lambda m, w: services.update_agent(m, w["worker"], max_tool_calls_per_execution=51),
        "limits.max_tool_calls_per_execution",
    ),
    "lifted budget": (
        lambda m, w: services.update_agent(m, w["worker"], max_tool_calls_per_hour=None),
        "limits.max_tool_calls_per_hour",
    ),
    "more concurrency": (
        lambda m, w: services.update_agent(m, w["worker"], max_concurrent_executions=2),
        "limits.max_concurrent_executions",
    ),
    "more steps": (
        lambda m, w: services.update_agent(m, w["worker"], llm_max_steps=11),
        "engine_settings.llm_max_steps",
    ),
    "new LLM endpoint": (
        lambda m, w: services.update_agent(m, w["worker"], llm_base_url="http://127.0.0.1:9/v1"),
        "engine_settings.llm_base_url",
    ),
    "new system prompt": (
        lambda m, w: services.update_agent(m, w["worker"], llm_system_prompt="Be bold."),
        "engine_settings.llm_system_prompt",
    ),
}


def _allow_refused_grant(manager, world):
    """A refused grant is no scope; allowing it is growth."""
    services.update_tool_grant(manager, world["grant"], allowed=False)
    assert status_of(world["worker"]) == AgentStatus.ACTIVE
    services.update_tool_grant(manager, world["grant"], allowed=True)


@pytest.mark.parametrize("kind", list(GROWTH))
def test_scope_growth_needs_approval_again(personas, manager, world, kind):
    change, field = GROWTH[kind]
    (change or _allow_refused_grant)(manager, world)
    worker = world["worker"]
    worker.refresh_from_db()
    assert worker.status == PENDING
    assert worker.status_reason == "Its scope grew beyond what was approved."
    request = pending_request(worker)
    grown = [change["field"] for change in request.changes if change["grows"]]
    assert field in grown
    assert request.summary.startswith("Wider scope: ")
    assert field in request.summary
    assert request.snapshot == services.agent_scope(worker)
    assert request.requested_by == personas.manager
    assert AuditEvent.objects.filter(
        action="agent.require_validation", target_id=str(worker.pk)
    ).exists()


def test_a_growth_request_is_approved_by_someone_else(personas, manager, admin, world):
    worker = world["worker"]
    services.grant_tool(manager, worker, world["b"])
    request = pending_request(worker)
    with pytest.raises(PermissionDenied, match="Four-eyes"):
        services.approve_request(manager, request)
    services.approve_request(admin, request)
    worker.refresh_from_db()
    assert worker.status == AgentStatus.ACTIVE
    assert str(world["b"].pk) in worker.approved_scope["grants"]
    # Approved once: the same grant changed back and forth within it needs nothing.
    grant = worker.grants.get(tool=world["b"])
    services.update_tool_grant(manager, grant, max_calls_per_hour=3)
    assert status_of(worker) == AgentStatus.ACTIVE


NARROWING = {
    "revoked grant": lambda m, w: services.revoke_tool_grant(m, w["grant"]),
    "refused grant": lambda m, w: services.update_tool_grant(m, w["grant"], allowed=False),
    "lower limit": lambda m, w: services.update_tool_grant(
        m, w["grant"], max_calls_per_execution=4, max_calls_per_hour=19
    ),
    "reason only": lambda m, w: services.update_tool_grant(m, w["grant"], reason="audit"),
    "lower budget": lambda m, w: services.update_agent(
        m, w["worker"], max_tool_calls_per_execution=10
    ),
    "new budget": lambda m, w: services.update_agent(m, w["worker"], max_tool_calls_per_day=100),
    "fewer steps": lambda m, w: services.update_agent(m, w["worker"], llm_max_steps=3),
    "renamed": lambda m, w: services.update_agent(m, w["worker"], name="Worker two"),
    "capabilities": lambda m, w: services.update_agent(m, w["worker"], capabilities=["x"]),
}


@pytest.mark.parametrize("kind", list(NARROWING))
def test_narrowing_never_needs_approval(manager, world, kind):
    NARROWING[kind](manager, world)
    worker = world["worker"]
    worker.refresh_from_db()
    assert worker.status == AgentStatus.ACTIVE
    assert not ApprovalRequest.objects.filter(agent=worker).exists()
    # What is approved follows the narrowing, so growing back asks again.
    assert worker.approved_scope == services.agent_scope(worker)


def test_requiring_approval_is_narrowing(personas, manager, world):
    grant = world["grant"]
    services.update_tool_grant(manager, grant, requires_approval=False)
    services.approve_request(personas.principal("ADMIN"), pending_request(world["worker"]))
    services.update_tool_grant(manager, grant, requires_approval=True)
    assert status_of(world["worker"]) == AgentStatus.ACTIVE
    assert not ApprovalRequest.objects.filter(
        agent=world["worker"], status=ApprovalStatus.PENDING
    ).exists()


def test_adding_a_schema_to_an_unrestricted_grant_is_narrowing(personas, manager, world):
    services.update_tool_grant(manager, world["grant"], argument_schema=None)
    services.approve_request(personas.principal("ADMIN"), pending_request(world["worker"]))
    services.update_tool_grant(manager, world["grant"], argument_schema={"type": "object"})
    assert status_of(world["worker"]) == AgentStatus.ACTIVE


def test_growing_back_after_narrowing_asks_again(manager, world):
    services.update_tool_grant(manager, world["grant"], max_calls_per_execution=2)
    services.update_tool_grant(manager, world["grant"], max_calls_per_execution=5)
    assert status_of(world["worker"]) == PENDING


def test_a_pending_agent_back_within_its_approved_scope_is_active_again(manager, world):
    worker = world["worker"]
    grant = services.grant_tool(manager, worker, world["b"])
    request = pending_request(worker)
    services.revoke_tool_grant(manager, grant)
    worker.refresh_from_db()
    assert worker.status == AgentStatus.ACTIVE
    assert worker.status_reason == "Its scope is back within what was approved."
    request.refresh_from_db()
    assert (request.status, request.reason) == (
        ApprovalStatus.WITHDRAWN,
        "The scope is back within what was approved.",
    )


def test_a_newer_change_supersedes_the_older_request(personas, manager, world):
    worker = world["worker"]
    services.grant_tool(manager, worker, world["b"])
    first = pending_request(worker)
    services.update_agent(manager, worker, max_tool_calls_per_execution=60)
    first.refresh_from_db()
    assert (first.status, first.reason) == (
        ApprovalStatus.WITHDRAWN,
        "Superseded by a newer request.",
    )
    second = pending_request(worker)
    grown = {change["field"] for change in second.changes if change["grows"]}
    assert grown == {"grants.b", "limits.max_tool_calls_per_execution"}
    with pytest.raises(Conflict, match="already withdrawn"):
        services.approve_request(personas.principal("ADMIN"), first)
    services.approve_request(personas.principal("ADMIN"), second)
    assert status_of(worker) == AgentStatus.ACTIVE


def test_a_never_approved_agent_gets_a_fresh_request_on_every_change(manager, created):
    agent, first = created
    services.update_agent(manager, agent, max_tool_calls_per_execution=5)
    first.refresh_from_db()
    assert first.status == ApprovalStatus.WITHDRAWN
    second = pending_request(agent)
    assert second.changes == []
    assert second.snapshot["limits"]["max_tool_calls_per_execution"] == 5
    # A change outside the scope (the description) keeps the request.
    services.update_agent(manager, agent, description="docs")
    assert pending_request(agent).pk == second.pk


def test_approving_a_stale_snapshot_is_a_conflict(personas, admin, created):
    agent, request = created
    # Written behind the services' back, so no newer request supersedes this one.
    make_grant(agent, make_tool(make_server(personas.org_a)))
    with pytest.raises(Conflict, match="changed since this request was made") as error:
        services.approve_request(admin, request)
    assert error.value.status == 409
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    assert status_of(agent) == PENDING


def test_renaming_the_parent_does_not_make_narrowing_grow(personas, manager, world):
    master = world["worker"].parent
    services.update_agent(manager, master, name="Renamed master")
    services.update_agent(manager, world["worker"], max_tool_calls_per_execution=10)
    assert status_of(world["worker"]) == AgentStatus.ACTIVE


def test_renaming_a_server_keeps_a_pending_request_approvable(personas, manager, world):
    services.grant_tool(manager, world["worker"], world["b"])
    request = pending_request(world["worker"])
    tool_services.update_server(manager, world["server"], name="renamed server")
    services.approve_request(personas.principal("ADMIN"), request)
    assert status_of(world["worker"]) == AgentStatus.ACTIVE


@pytest.mark.parametrize("then", ["approve", "narrow back"])
def test_a_scope_change_does_not_lift_a_suspension(personas, manager, world, then):
    worker = world["worker"]
    services.suspend_agent(personas.principal("OPERATOR"), worker, "misbehaving")
    services.update_agent(manager, worker, max_tool_calls_per_execution=60)
    if then == "approve":
        services.approve_request(personas.principal("ADMIN"), pending_request(worker))
    else:
        services.update_agent(manager, worker, max_tool_calls_per_execution=50)
    assert status_of(worker) == AgentStatus.INACTIVE


def test_a_suspended_agent_with_a_wider_scope_resumes_only_after_the_decision(
    personas, manager, world
):
    worker = world["worker"]
    services.suspend_agent(personas.principal("OPERATOR"), worker, "misbehaving")
    services.update_agent(manager, worker, max_tool_calls_per_execution=60)
    with pytest.raises(services.InvalidTransition) as refused:
        services.resume_agent(manager, worker)
    assert "waits for approval" in refused.value.message
    assert status_of(worker) == AgentStatus.INACTIVE
    services.approve_request(personas.principal("ADMIN"), pending_request(worker))
    services.resume_agent(manager, worker)
    assert status_of(worker) == AgentStatus.ACTIVE
