"""The agents service layer: hierarchy, configuration, permissions, plan limit, deletion
and the status transitions (agents.services)."""

from contextlib import contextmanager

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from agents import services
from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, ApprovalRequest
from agents.services import TRANSITIONS, UNSET, InvalidTransition
from argus import events
from argus.errors import Conflict, LimitExceeded, ServiceError
from orgs.choices import Plan
from orgs.models import AuditEvent, Organization
from tests.agents.factories import make_agent, make_chain, make_server, make_tool
from tools.choices import ToolState

MASTER, SUPERVISOR, WORKER = AgentRole.MASTER, AgentRole.SUPERVISOR, AgentRole.WORKER


@pytest.fixture
def admin(personas):
    return personas.principal("ADMIN")


@pytest.fixture
def manager(personas):
    return personas.principal("MANAGER")


def create(principal, name="agent", role=MASTER, **fields):
    return services.create_agent(principal, name=name, role=role, **fields)


def refused(exc_info, field, *words):
    """The ServiceError names ``field`` and says each of ``words``."""
    error = exc_info.value
    assert error.field == field, (error.field, error.message)
    for word in words:
        assert word in error.message, (word, error.message)


@contextmanager
def published(organization, topic="org"):
    """The events published on ``topic`` while the block runs; put it around
    ``django_capture_on_commit_callbacks(execute=True)``, since events go out on commit."""
    stream = events.Stream(organization.pk, topic)
    before = events.last_id(stream)
    seen: list[dict] = []
    yield seen
    seen.extend(events.events_between(stream, before))


# --- creation ------------------------------------------------------------------------------------
def test_a_new_agent_waits_for_validation_with_a_request(personas, manager):
    agent = create(manager, "Planner", capabilities=["Search", "search", "web.fetch"])
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION
    assert agent.created_by == personas.manager
    assert agent.capabilities == ["search", "web.fetch"]
    assert agent.approved_scope is None
    request = ApprovalRequest.objects.get(agent=agent)
    assert (request.kind, request.status) == (ApprovalKind.AGENT_ACTIVATION, "pending")
    assert AuditEvent.objects.filter(action="agent.create", target_id=str(agent.pk)).exists()


def test_creating_publishes_on_the_org_and_agent_topics(
    personas, manager, django_capture_on_commit_callbacks
):
    with published(personas.org_a) as on_org, django_capture_on_commit_callbacks(execute=True):
        agent = create(manager, "Published")
    assert [event["type"] for event in on_org] == ["agent.created", "approval.requested"]
    assert on_org[0]["data"]["agent"] == agent.pk
    stream = events.Stream(personas.org_a.pk, f"agent:{agent.pk}")
    assert "agent.created" in [event["type"] for event in events.events_between(stream, 0)]


# --- hierarchy -----------------------------------------------------------------------------------
def test_the_roles_sit_where_they_belong(manager):
    master = create(manager, "M")
    supervisor = create(manager, "S", SUPERVISOR, parent=master)
    worker_under_supervisor = create(manager, "W1", WORKER, parent=supervisor)
    worker_under_master = create(manager, "W2", WORKER, parent=master)
    assert master.parent is None
    assert supervisor.parent == master
    assert worker_under_supervisor.parent == supervisor
    assert worker_under_master.parent == master


def test_a_master_has_no_parent(personas, manager):
    other = make_agent(personas.org_a)
    with pytest.raises(ServiceError) as error:
        create(manager, parent=other)
    refused(error, "parent", "A master agent has no parent.")


@pytest.mark.parametrize(
    ("role", "words"),
    [(SUPERVISOR, "A supervisor agent needs a parent: master."), (WORKER, "supervisor or master")],
)
def test_a_missing_parent_is_refused(manager, role, words):
    with pytest.raises(ServiceError) as error:
        create(manager, role=role)
    refused(error, "parent", words)


def test_a_supervisors_parent_must_be_a_master(personas, manager):
    _master, supervisor, worker = make_chain(personas.org_a)
    for wrong in (supervisor, worker):
        with pytest.raises(ServiceError) as error:
            create(manager, "S", SUPERVISOR, parent=wrong)
        refused(error, "parent", "A supervisor's parent must be a master", wrong.name)


def test_a_workers_parent_is_not_a_worker(personas, manager):
    _master, _supervisor, worker = make_chain(personas.org_a)
    with pytest.raises(ServiceError) as error:
        create(manager, "W", WORKER, parent=worker)
    refused(error, "parent", "supervisor or master", f"{worker.name} is a worker")


def test_unknown_and_missing_roles_are_refused(manager):
    with pytest.raises(ServiceError) as error:
        create(manager, role="CAPTAIN")
    refused(error, "role", "Unknown role 'CAPTAIN'")
    with pytest.raises(ServiceError) as error:
        create(manager, role="")
    refused(error, "role", "The role is required.")


def test_a_parent_of_another_organization_is_refused(personas, manager):
    foreign = make_agent(personas.org_b)
    with pytest.raises(ServiceError) as error:
        create(manager, "S", SUPERVISOR, parent=foreign)
    refused(error, "parent", "The parent must be an agent of this organization.")


def test_a_parent_that_is_not_an_agent_is_refused(personas, manager):
    with pytest.raises(ServiceError) as error:
        create(manager, "S", SUPERVISOR, parent=personas.org_a)
    refused(error, "parent", "The parent must be an agent.")


def test_a_home_server_of_another_organization_is_refused(personas, manager):
    with pytest.raises(ServiceError) as error:
        create(manager, server=make_server(personas.org_b))
    refused(error, "server", "The home server must be a server of this organization.")


def test_an_engine_tool_of_another_organization_is_refused(personas, manager):
    own = make_server(personas.org_a)
    foreign_tool = make_tool(make_server(personas.org_b))
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.MCP_TOOL, server=own, engine_tool=foreign_tool)
    refused(error, "engine_tool", f"must be a tool of the home server {own.name}")


def test_an_agent_cannot_be_its_own_parent(personas, manager):
    _master, supervisor, _worker = make_chain(personas.org_a)
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, supervisor, parent=supervisor)
    refused(error, "parent", "An agent cannot be its own parent.")


@pytest.mark.parametrize("depth", [1, 2])
def test_a_descendant_as_parent_is_a_cycle(personas, manager, depth):
    master, supervisor, worker = make_chain(personas.org_a)
    agent, descendant = (supervisor, worker) if depth == 1 else (master, worker)
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, agent, role=WORKER, parent=descendant)
    refused(error, "parent", f"{descendant.name} is below {agent.name}", "cycle")
    agent.refresh_from_db()
    assert agent.parent_id == (master.pk if depth == 1 else None)


def test_a_role_change_that_orphans_children_is_refused(personas, manager):
    master, supervisor, _worker = make_chain(personas.org_a)
    other_master = make_agent(personas.org_a)
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, master, role=SUPERVISOR, parent=other_master)
    refused(error, "role", f"{master.name} cannot become a supervisor", supervisor.name)
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, supervisor, role=WORKER)
    refused(error, "role", "cannot become a worker", "Re-parent them first.")
    master.refresh_from_db()
    assert (master.role, master.parent) == (MASTER, None)


def test_a_role_change_without_children_is_fine(personas, manager):
    master = make_agent(personas.org_a)
    lonely = make_agent(personas.org_a, role=SUPERVISOR, parent=master)
    changed = services.update_agent(manager, lonely, role=WORKER)
    assert (changed.role, changed.parent) == (WORKER, master)


# --- deletion ------------------------------------------------------------------------------------
def test_deleting_an_agent_with_children_is_a_conflict(personas, manager):
    master, supervisor, _worker = make_chain(personas.org_a)
    with pytest.raises(Conflict) as error:
        services.delete_agent(manager, master)
    assert error.value.status == 409
    assert supervisor.name in error.value.message
    assert "choose an agent to move them to" in error.value.message
    assert Agent.objects.filter(pk=master.pk).exists()


def test_deleting_a_leaf_removes_it_and_its_requests(personas, manager):
    agent = create(manager, "Leaf")
    services.delete_agent(manager, agent)
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not ApprovalRequest.objects.filter(agent_id=agent.pk).exists()
    assert AuditEvent.objects.filter(action="agent.delete", target_id=str(agent.pk)).exists()


def test_children_move_to_the_reparent_target_and_need_approval_again(personas, manager):
    master, supervisor, worker = make_chain(personas.org_a)
    other = make_agent(personas.org_a, role=SUPERVISOR, parent=master)
    services.delete_agent(manager, supervisor, reparent_to=other)
    assert not Agent.objects.filter(pk=supervisor.pk).exists()
    worker.refresh_from_db()
    assert worker.parent == other
    assert worker.status == AgentStatus.PENDING_VALIDATION
    request = ApprovalRequest.objects.get(agent=worker, status=ApprovalStatus.PENDING)
    [change] = request.changes
    assert change["field"] == "parent"
    assert change["grows"] is True
    assert change["after"]["id"] == other.pk


def test_reparenting_where_children_do_not_fit_is_refused(personas, manager):
    master, supervisor, worker = make_chain(personas.org_a)
    other_master = make_agent(personas.org_a)
    # The supervisor under the master cannot move under a worker.
    with pytest.raises(ServiceError) as error:
        services.delete_agent(manager, master, reparent_to=worker)
    refused(error, "reparent_to", supervisor.name)
    with pytest.raises(ServiceError) as error:
        services.delete_agent(manager, master, reparent_to=master)
    refused(error, "reparent_to", "another agent of this organization")
    with pytest.raises(ServiceError) as error:
        services.delete_agent(manager, master, reparent_to=make_agent(personas.org_b))
    refused(error, "reparent_to", "another agent of this organization")
    assert Agent.objects.filter(pk=master.pk).exists()
    services.delete_agent(manager, master, reparent_to=other_master)
    supervisor.refresh_from_db()
    assert supervisor.parent == other_master


# --- names ---------------------------------------------------------------------------------------
def test_names_are_unique_case_insensitively(personas, manager):
    first = create(manager, "Scout")
    with pytest.raises(ServiceError) as error:
        create(manager, "  SCOUT ")
    refused(error, "name", "An agent named 'SCOUT' already exists.")
    second = create(manager, "Ranger")
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, second, name="scout")
    refused(error, "name", "already exists")
    assert services.update_agent(manager, first, name="SCOUT").name == "SCOUT"
    # Another organization may use the name.
    assert create(personas.principal("outsider"), "Scout").organization == personas.org_b


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"name": ""}, "name", "The name is required."),
        ({"name": "x" * 101}, "name", "longer than 100 characters"),
        ({"name": 7}, "name", "The name must be text."),
        ({"description": "x" * 5001}, "description", "longer than 5000"),
        ({"capabilities": "search"}, "capabilities", "must be a list of words"),
        ({"capabilities": ["Not OK!"]}, "capabilities", "'Not OK!' is not a capability tag"),
        ({"capabilities": [3]}, "capabilities", "3 is not a capability tag"),
        ({"capabilities": [f"t{n}" for n in range(21)]}, "capabilities", "at most 20"),
        ({"max_concurrent_executions": 0}, "max_concurrent_executions", "between 1 and 100"),
        ({"max_concurrent_executions": 101}, "max_concurrent_executions", "between 1 and 100"),
        ({"max_concurrent_executions": None}, "max_concurrent_executions", "is required"),
        ({"max_concurrent_executions": "2"}, "max_concurrent_executions", "whole number"),
        ({"max_tool_calls_per_execution": 0}, "max_tool_calls_per_execution", "between 1"),
        ({"max_tool_calls_per_hour": True}, "max_tool_calls_per_hour", "whole number"),
        ({"max_tool_calls_per_day": 10_000_001}, "max_tool_calls_per_day", "and 10000000"),
        ({"max_tool_calls_per_day": 1.5}, "max_tool_calls_per_day", "whole number"),
        ({"llm_max_steps": 0}, "llm_max_steps", "Max steps must be between 1 and 500."),
        ({"engine": "telepathy"}, "engine", "Unknown engine 'telepathy'"),
        ({"status": "ACTIVE"}, None, "Unknown agent fields: status."),
    ],
)
def test_bad_configurations_are_refused_and_store_nothing(manager, fields, field, words):
    data = {"name": "bad", "role": MASTER, **fields}
    with pytest.raises(ServiceError) as error:
        services.create_agent(manager, **data)
    refused(error, field, words)
    assert not Agent.objects.exists()


def test_budgets_default_and_can_be_lifted(manager):
    agent = create(manager, "Budgets")
    assert agent.max_tool_calls_per_execution == 100
    assert agent.max_tool_calls_per_hour is None
    unlimited = create(manager, "Unlimited", max_tool_calls_per_execution=None)
    assert unlimited.max_tool_calls_per_execution is None


def test_a_bad_edit_keeps_what_was_stored(personas, manager):
    agent = make_agent(personas.org_a, name="Kept", max_tool_calls_per_hour=5)
    with pytest.raises(ServiceError):
        services.update_agent(manager, agent, description="new", max_tool_calls_per_hour=-1)
    agent.refresh_from_db()
    assert (agent.description, agent.max_tool_calls_per_hour) == ("", 5)


def test_the_status_is_never_edited(personas, manager):
    agent = make_agent(personas.org_a)
    with pytest.raises(ServiceError) as error:
        services.update_agent(manager, agent, status=AgentStatus.INACTIVE)
    refused(error, "status", "only through its actions")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_unknown_fields_are_refused_on_edit(personas, manager):
    with pytest.raises(ServiceError, match=r"Unknown agent fields: colour\."):
        services.update_agent(manager, make_agent(personas.org_a), colour="red")


# --- engines -------------------------------------------------------------------------------------
def test_the_mcp_tool_engine_needs_a_server_and_one_of_its_tools(personas, manager):
    server = make_server(personas.org_a)
    tool = make_tool(server)
    other_tool = make_tool(make_server(personas.org_a))
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.MCP_TOOL)
    refused(error, "server", "The MCP tool engine needs a home server.")
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.MCP_TOOL, server=server)
    refused(error, "engine_tool", "needs the tool that receives prompts")
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.MCP_TOOL, server=server, engine_tool=other_tool)
    refused(error, "engine_tool", f"a tool of the home server {server.name}")
    agent = create(manager, engine=Engine.MCP_TOOL, server=server, engine_tool=tool)
    assert (agent.server, agent.engine_tool) == (server, tool)


def test_a_removed_tool_cannot_receive_prompts(personas, manager):
    server = make_server(personas.org_a)
    tool = make_tool(server)
    tool.state = ToolState.REMOVED
    tool.save()
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.MCP_TOOL, server=server, engine_tool=tool)
    refused(error, "engine_tool", f"{server.name} no longer offers {tool.name}.")


def test_leaving_the_mcp_tool_engine_forgets_the_prompt_tool(personas, manager):
    server = make_server(personas.org_a)
    agent = create(manager, engine=Engine.MCP_TOOL, server=server, engine_tool=make_tool(server))
    agent = services.update_agent(manager, agent, engine=Engine.PLAN)
    assert (agent.engine, agent.engine_tool, agent.server) == (Engine.PLAN, None, server)


def test_the_llm_engine_needs_a_base_url_and_a_model(manager):
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.LLM, llm_model="m")
    refused(error, "llm_base_url", "The LLM engine needs a base URL.")


def test_the_llm_engine_is_configured_with_a_url_and_a_model(manager):
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.LLM, llm_base_url="http://127.0.0.1:11434/v1")
    refused(error, "llm_model", "The LLM engine needs a model name.")
    agent = create(
        manager, engine=Engine.LLM, llm_base_url="http://127.0.0.1:11434/v1", llm_model="llama3"
    )
    assert (agent.engine, agent.llm_model) == (Engine.LLM, "llama3")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://169.254.169.254/latest/", "link-local"),
        ("ftp://models.example/v1", "ftp"),
    ],
)
def test_the_llm_base_url_is_checked_for_ssrf(manager, url, words):
    with pytest.raises(ServiceError) as error:
        create(manager, engine=Engine.LLM, llm_base_url=url, llm_model="m")
    refused(error, "llm_base_url", words)
    assert not Agent.objects.exists()


# --- the LLM API key -----------------------------------------------------------------------------
def raw_key(agent) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT llm_api_key FROM agents_agent WHERE id = %s", [agent.pk])
        return cursor.fetchone()[0]


def test_the_api_key_is_encrypted_replaced_kept_and_removed(personas, manager):
    agent = create(manager, "Keyed", llm_api_key="sk-first-secret")
    assert "sk-first-secret" not in raw_key(agent)
    assert raw_key(agent)
    agent.refresh_from_db()
    assert agent.has_llm_api_key
    assert agent.decrypted_llm_api_key() == "sk-first-secret"
    agent = services.update_agent(manager, agent, description="kept", llm_api_key=UNSET)
    assert agent.decrypted_llm_api_key() == "sk-first-secret"
    agent = services.update_agent(manager, agent, llm_api_key=None)
    assert agent.decrypted_llm_api_key() == "sk-first-secret"
    agent = services.update_agent(manager, agent, llm_api_key="sk-second-secret")
    assert agent.decrypted_llm_api_key() == "sk-second-secret"
    assert "sk-second-secret" not in raw_key(agent)
    agent = services.update_agent(manager, agent, llm_api_key="")
    assert not agent.has_llm_api_key
    assert raw_key(agent) == ""
    audited = AuditEvent.objects.filter(target_id=str(agent.pk), action__startswith="agent.")
    assert [event.changes.get("llm_api_key") for event in audited.order_by("seq")] == [
        "set",
        None,
        "replaced",
        "removed",
    ]
    assert not any("secret" in str(event.changes) for event in audited)


@pytest.mark.parametrize(
    ("key", "words"),
    [(42, "The LLM API key must be text."), ("a\nb", "does not look like an API key")],
)
def test_bad_api_keys_are_refused(manager, key, words):
    with pytest.raises(ServiceError) as error:
        create(manager, llm_api_key=key)
    refused(error, "llm_api_key", words)


# --- plan limit and permissions ------------------------------------------------------------------
def test_the_plan_limits_agents(personas, manager):
    Organization.objects.filter(pk=personas.org_a.pk).update(plan=Plan.FREE)
    personas.org_a.refresh_from_db()
    for number in range(5):
        create(manager, f"agent {number}")
    with pytest.raises(LimitExceeded) as error:
        create(manager, "one too many")
    assert error.value.status == 409
    assert error.value.code == "plan_limit"
    assert "The Free plan allows at most 5 agents; this organization has 5." in str(error.value)
    assert Agent.objects.filter(organization=personas.org_a).count() == 5


def test_a_viewer_cannot_create_edit_suspend_or_approve(personas):
    viewer = personas.principal("VIEWER")
    agent = make_agent(personas.org_a)
    pending = create(personas.principal("MANAGER"), "Pending")
    request = ApprovalRequest.objects.get(agent=pending)
    with pytest.raises(PermissionDenied, match="not allowed to create"):
        create(viewer, "nope")
    with pytest.raises(PermissionDenied, match="not allowed to change this agent"):
        services.update_agent(viewer, agent, description="x")
    with pytest.raises(PermissionDenied, match="not allowed to change this agent"):
        services.update_agent(viewer, agent, status=AgentStatus.INACTIVE)
    with pytest.raises(PermissionDenied, match="not allowed to operate this agent"):
        services.suspend_agent(viewer, agent, "stop")
    with pytest.raises(PermissionDenied, match="not allowed to approve"):
        services.approve_request(viewer, request)
    with pytest.raises(PermissionDenied, match="not allowed to change this agent"):
        services.delete_agent(viewer, agent)
    agent.refresh_from_db()
    assert (agent.status, agent.description) == (AgentStatus.ACTIVE, "")


def test_an_operator_suspends_but_neither_creates_nor_resumes(personas):
    operator = personas.principal("OPERATOR")
    agent = make_agent(personas.org_a)
    with pytest.raises(PermissionDenied):
        create(operator, "nope")
    services.suspend_agent(operator, agent, "misbehaving")
    agent.refresh_from_db()
    assert (agent.status, agent.status_reason) == (AgentStatus.INACTIVE, "misbehaving")
    with pytest.raises(PermissionDenied, match="not allowed to change this agent"):
        services.resume_agent(operator, agent)
    services.resume_agent(personas.principal("MANAGER"), agent, "fixed")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_an_outsider_cannot_touch_the_agent(personas):
    agent = make_agent(personas.org_a)
    outsider = personas.principal("outsider")
    for call in (
        lambda: services.update_agent(outsider, agent, description="x"),
        lambda: services.suspend_agent(outsider, agent, "x"),
        lambda: services.delete_agent(outsider, agent),
    ):
        with pytest.raises(PermissionDenied):
            call()


def test_suspending_needs_a_reason(personas):
    agent = make_agent(personas.org_a)
    with pytest.raises(ServiceError) as error:
        services.suspend_agent(personas.principal("OPERATOR"), agent, "  ")
    refused(error, "reason", "Say why the agent is suspended.")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_recover_clears_an_error(personas):
    agent = make_agent(personas.org_a)
    services.fail_agent(agent, "crashed")
    agent.refresh_from_db()
    assert (agent.status, agent.status_reason) == (AgentStatus.ERROR, "crashed")
    services.recover_agent(personas.principal("OPERATOR"), agent, "restarted")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    with pytest.raises(PermissionDenied):
        services.recover_agent(personas.principal("VIEWER"), agent)


# --- transitions ---------------------------------------------------------------------------------
PAIRS = [(status, name) for status in AgentStatus.values for name in TRANSITIONS]


@pytest.mark.parametrize(("status", "name"), PAIRS, ids=[f"{s}-{n}" for s, n in PAIRS])
def test_every_transition_from_every_status(personas, status, name):
    agent = make_agent(personas.org_a, status=status, status_reason="before")
    sources, target = TRANSITIONS[name]
    if status in sources:
        moved = services.transition(personas.principal("ADMIN"), agent, name, "because")
        assert moved.status == target
        agent.refresh_from_db()
        assert (agent.status, agent.status_reason) == (target, "because")
        assert agent.status_changed_at is not None
        audit = AuditEvent.objects.get(action=f"agent.{name}", target_id=str(agent.pk))
        assert audit.changes == {"status": [status, target], "reason": "because"}
    else:
        with pytest.raises(InvalidTransition) as error:
            services.transition(personas.principal("ADMIN"), agent, name, "because")
        assert error.value.status == 409
        assert error.value.code == "invalid_transition"
        assert f"it is {AgentStatus(status).label.lower()}" in error.value.message
        agent.refresh_from_db()
        assert (agent.status, agent.status_reason) == (status, "before")
        assert not AuditEvent.objects.filter(action=f"agent.{name}").exists()


def test_the_transition_table_covers_every_transition():
    from agents.choices import Transition

    assert set(TRANSITIONS) == set(Transition.values)
    assert all(sources <= set(AgentStatus.values) for sources, _ in TRANSITIONS.values())


def test_a_transition_is_compare_and_swap(personas):
    """A stale object does not decide: the row's status does."""
    agent = make_agent(personas.org_a)
    stale = Agent.objects.get(pk=agent.pk)
    services.suspend_agent(personas.principal("OPERATOR"), agent, "first")
    with pytest.raises(InvalidTransition, match="it is inactive"):
        services.suspend_agent(personas.principal("OPERATOR"), stale, "second")
    agent.refresh_from_db()
    assert agent.status_reason == "first"


def test_a_transition_of_a_deleted_agent_is_a_conflict(personas):
    agent = make_agent(personas.org_a)
    Agent.objects.filter(pk=agent.pk).delete()
    with pytest.raises(Conflict, match="no longer exists"):
        services.start_work(agent)


def test_work_moves_between_active_and_busy(personas):
    agent = make_agent(personas.org_a)
    assert services.start_work(agent).status == AgentStatus.BUSY
    assert services.finish_work(agent).status == AgentStatus.ACTIVE
    audit = AuditEvent.objects.filter(action="agent.start_work", target_id=str(agent.pk)).get()
    assert audit.actor_label == "system"


def test_a_transition_is_audited_and_published(personas, django_capture_on_commit_callbacks):
    agent = make_agent(personas.org_a)
    with (
        published(personas.org_a) as on_org,
        published(personas.org_a, f"agent:{agent.pk}") as on_agent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.suspend_agent(personas.principal("OPERATOR"), agent, "too eager")
    for seen in (on_org, on_agent):
        [event] = seen
        assert event["type"] == "agent.status"
        assert event["data"] == {
            "agent": agent.pk,
            "name": agent.name,
            "status": AgentStatus.INACTIVE,
            "previous": AgentStatus.ACTIVE,
            "reason": "too eager",
        }
    audit = AuditEvent.objects.get(action="agent.suspend", target_id=str(agent.pk))
    assert audit.actor == personas.operator
    assert audit.changes == {"status": ["ACTIVE", "INACTIVE"], "reason": "too eager"}


def test_a_refused_transition_publishes_nothing(personas, django_capture_on_commit_callbacks):
    agent = make_agent(personas.org_a, status=AgentStatus.INACTIVE)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(InvalidTransition),
    ):
        services.suspend_agent(personas.principal("OPERATOR"), agent, "again")
    assert callbacks == []
