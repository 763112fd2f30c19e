"""The gate every tool call of an agent passes (agents.services.authorize_call) and the
runaway guards under it (agents.guards): budgets, loop detection, the kill switch."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from agents import guards, services
from agents.choices import AgentStatus, Refusal
from agents.models import Agent
from agents.services import CallRefused
from argus import events
from argus.errors import Conflict, ServiceError
from orgs.models import AuditEvent
from tests.agents.factories import grant_down, make_agent, make_chain, make_grant
from tests.support.personas import make_personas
from tests.tools.factories import make_server, make_tool


@pytest.fixture
def admin(personas):
    return personas.principal("ADMIN")


@pytest.fixture
def server(personas):
    return make_server(personas.org_a)


@pytest.fixture
def tool(server):
    return make_tool(server, "lookup")


def granted_agent(organization, tool, grant=None, **budgets) -> Agent:
    agent = make_agent(organization, name="Runner", **budgets)
    make_grant(agent, tool, **(grant or {}))
    return agent


def call(agent, tool, n=0, execution="e1", **arguments):
    """One call; ``n`` makes its arguments differ from the previous one (no loop)."""
    return services.authorize_call(agent, tool, {"n": n, **arguments}, execution=execution)


def refusal(agent, tool, n=0, execution="e1", **arguments) -> CallRefused:
    with pytest.raises(CallRefused) as error:
        call(agent, tool, n, execution, **arguments)
    assert error.value.status == 409
    return error.value


@pytest.fixture
def fixed_hour(monkeypatch):
    """Every call falls in the same hour and day bucket, whenever the test runs."""
    monkeypatch.setattr(guards, "hour_bucket", lambda now=None: 1_000)
    monkeypatch.setattr(guards, "day_bucket", lambda now=None: 40)


# --- budgets -------------------------------------------------------------------------------------
def test_the_agents_budget_per_execution(personas, tool):
    agent = granted_agent(personas.org_a, tool, max_tool_calls_per_execution=3)
    for n in range(3):
        clearance = call(agent, tool, n)
        assert clearance.permission.allowed
        assert clearance.requires_approval is False
    error = refusal(agent, tool, 3)
    assert error.code == Refusal.BUDGET_EXCEEDED
    assert error.message == "Runner reached its limit of tool calls per execution (3)."
    # Another execution has a budget of its own.
    assert call(agent, tool, 4, execution="e2")


def test_the_tools_budget_per_execution(personas, server, tool):
    other = make_tool(server, "other")
    agent = granted_agent(personas.org_a, tool, grant={"max_calls_per_execution": 2})
    make_grant(agent, other)
    call(agent, tool, 0)
    call(agent, tool, 1)
    error = refusal(agent, tool, 2)
    assert error.code == Refusal.BUDGET_EXCEEDED
    assert error.message == "Runner reached its limit of calls of this tool per execution (2)."
    assert call(agent, other, 3)
    assert call(agent, tool, 4, execution="e2")


def test_the_parents_limit_is_the_tools_budget(personas, tool):
    master, supervisor, worker = make_chain(personas.org_a)
    make_grant(master, tool, max_calls_per_execution=1)
    grant_down(tool, supervisor, worker)
    call(worker, tool, 0)
    assert refusal(worker, tool, 1).message.endswith("calls of this tool per execution (1).")


def test_the_agents_budget_per_hour(personas, tool, fixed_hour):
    agent = granted_agent(personas.org_a, tool, max_tool_calls_per_hour=2)
    call(agent, tool, 0, execution="e1")
    call(agent, tool, 1, execution="e2")
    error = refusal(agent, tool, 2, execution="e3")
    assert error.code == Refusal.BUDGET_EXCEEDED
    assert error.message == "Runner reached its limit of tool calls per hour (2)."


def test_the_tools_budget_per_hour(personas, server, tool, fixed_hour):
    agent = granted_agent(personas.org_a, tool, grant={"max_calls_per_hour": 1})
    call(agent, tool, 0, execution="e1")
    error = refusal(agent, tool, 1, execution="e2")
    assert error.code == Refusal.BUDGET_EXCEEDED
    assert error.message == "Runner reached its limit of calls of this tool per hour (1)."


def test_the_agents_budget_per_day(personas, tool, fixed_hour):
    agent = granted_agent(personas.org_a, tool, max_tool_calls_per_day=2)
    call(agent, tool, 0, execution="e1")
    call(agent, tool, 1, execution="e2")
    error = refusal(agent, tool, 2, execution="e3")
    assert error.code == Refusal.BUDGET_EXCEEDED
    assert error.message == "Runner reached its limit of tool calls per day (2)."


def budgets(now, **caps):
    values = {
        "per_execution": None,
        "per_hour": None,
        "per_day": None,
        "tool_per_execution": None,
        "tool_per_hour": None,
        **caps,
    }
    return guards.agent_budgets(7, 3, "exec", now=now, **values)


def test_an_hour_budget_starts_again_in_the_next_hour():
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert guards.take(budgets(start, per_hour=2)) is None
    assert guards.take(budgets(start + timedelta(minutes=59), per_hour=2)) is None
    exhausted = guards.take(budgets(start + timedelta(minutes=59), per_hour=2))
    assert (exhausted.label, exhausted.cap) == ("tool calls per hour", 2)
    assert guards.take(budgets(start + timedelta(hours=1), per_hour=2)) is None


def test_a_tool_hour_budget_starts_again_in_the_next_hour():
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert guards.take(budgets(start, tool_per_hour=1)) is None
    assert guards.take(budgets(start, tool_per_hour=1)).label == "calls of this tool per hour"
    assert guards.take(budgets(start + timedelta(hours=1), tool_per_hour=1)) is None


def test_a_day_budget_starts_again_the_next_day():
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert guards.take(budgets(start, per_day=1)) is None
    exhausted = guards.take(budgets(start + timedelta(hours=23), per_day=1))
    assert (exhausted.label, exhausted.cap) == ("tool calls per day", 1)
    assert guards.take(budgets(start + timedelta(days=1), per_day=1)) is None


def test_counters_expire_after_their_window():
    now = timezone.now()
    listed = budgets(now, per_execution=5)
    guards.take(listed)
    ttls = [guards._redis().ttl(budget.key) for budget in listed]
    assert ttls[0] == guards.EXECUTION_TTL
    assert ttls[1] == 2 * guards.HOUR
    assert ttls[2] == 2 * guards.DAY


def test_a_refused_take_counts_nothing():
    now = timezone.now()
    listed = budgets(now, per_execution=10, tool_per_execution=1)
    assert guards.take(listed) is None
    assert guards.take(listed).label == "calls of this tool per execution"
    assert guards.used([budget.key for budget in listed]) == [1, 1, 1, 1, 1]


def test_a_refused_call_consumes_nothing(personas, tool, fixed_hour):
    agent = granted_agent(
        personas.org_a, tool, grant={"max_calls_per_execution": 2}, max_tool_calls_per_hour=10
    )
    call(agent, tool, 0)
    call(agent, tool, 1)
    for n in range(2, 5):
        assert refusal(agent, tool, n).code == Refusal.BUDGET_EXCEEDED
    assert services.call_usage(agent) == {"hour": 2, "day": 2}
    execution_key = f"{guards.PREFIX}agent:{agent.pk}:exec:e1"
    assert guards.used([execution_key]) == [2]
    # Refusals for other reasons count nothing either.
    with pytest.raises(CallRefused):
        services.authorize_call(agent, tool, ["not", "an", "object"], execution="e2")
    assert services.call_usage(agent) == {"hour": 2, "day": 2}


def test_a_lifted_budget_does_not_count_against_a_cap(personas, tool, fixed_hour):
    agent = granted_agent(personas.org_a, tool, max_tool_calls_per_execution=None)
    for n in range(120):
        call(agent, tool, n)
    assert services.call_usage(agent)["hour"] == 120


# --- loop detection ------------------------------------------------------------------------------
@override_settings(ARGUS_LOOP_DETECTION_REPEATS=3)
def test_the_same_call_repeated_is_a_loop(personas, tool):
    agent = granted_agent(personas.org_a, tool)
    call(agent, tool, 0, q="same")
    call(agent, tool, 0, q="same")
    error = refusal(agent, tool, 0, q="same")
    assert error.code == Refusal.LOOP_DETECTED
    assert error.message == (
        "Runner called lookup with the same arguments 3 times in a row; the execution is "
        "stopped as a loop."
    )
    # The refused call counted nothing.
    assert guards.used([f"{guards.PREFIX}agent:{agent.pk}:exec:e1"]) == [2]
    # Another execution is not in that loop.
    assert call(agent, tool, 0, execution="e2", q="same")


@override_settings(ARGUS_LOOP_DETECTION_REPEATS=3)
def test_a_different_call_in_between_resets_the_loop(personas, tool):
    agent = granted_agent(personas.org_a, tool)
    for n in (0, 0, 1, 0, 0, 1, 1, 0, 0):
        call(agent, tool, n)
    assert refusal(agent, tool, 0).code == Refusal.LOOP_DETECTED


@override_settings(ARGUS_LOOP_DETECTION_REPEATS=2)
def test_argument_order_does_not_hide_a_loop(personas, tool):
    agent = granted_agent(personas.org_a, tool)
    services.authorize_call(agent, tool, {"a": 1, "b": 2}, execution="e1")
    with pytest.raises(CallRefused) as error:
        services.authorize_call(agent, tool, {"b": 2, "a": 1}, execution="e1")
    assert error.value.code == Refusal.LOOP_DETECTED


def test_the_default_loop_threshold(personas, tool, settings):
    agent = granted_agent(personas.org_a, tool)
    for _ in range(settings.ARGUS_LOOP_DETECTION_REPEATS - 1):
        call(agent, tool)
    assert refusal(agent, tool).code == Refusal.LOOP_DETECTED


# --- the kill switch -----------------------------------------------------------------------------
def test_the_kill_switch_stops_every_call_until_resumed(
    personas, admin, tool, django_capture_on_commit_callbacks
):
    agent = granted_agent(personas.org_a, tool)
    other = make_agent(personas.org_a, status=AgentStatus.INACTIVE)
    stream = events.Stream(personas.org_a.pk, "org")
    before = events.last_id(stream)
    with django_capture_on_commit_callbacks(execute=True):
        organization = services.pause_agents(admin, "  incident 42 ")
    assert organization.agents_paused_at is not None
    assert organization.agents_paused_by == personas.admin
    assert organization.agents_paused_reason == "incident 42"
    for who in (agent, other):
        error = refusal(who, tool)
        assert error.code == Refusal.ORGANIZATION_PAUSED
        assert "kill switch" in error.message
    published = events.events_between(stream, before)
    assert [event["type"] for event in published] == ["agents.paused"]
    assert published[0]["data"] == {"paused": True, "reason": "incident 42"}
    agent_stream = events.Stream(personas.org_a.pk, f"agent:{agent.pk}")
    [status_event] = events.events_between(agent_stream, 0)[-1:]
    assert status_event["data"]["paused"] is True
    assert AuditEvent.objects.filter(action="organization.pause_agents").get().changes == {
        "reason": "incident 42"
    }

    services.resume_agents(admin)
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_at is None
    assert personas.org_a.agents_paused_reason == ""
    assert call(agent, tool)
    assert refusal(other, tool).code == Refusal.AGENT_NOT_ACTIVE
    assert AuditEvent.objects.filter(action="organization.resume_agents").exists()


def test_only_an_admin_pauses_and_resumes(personas, admin):
    for role in ("MANAGER", "OPERATOR", "VIEWER"):
        with pytest.raises(PermissionDenied):
            services.pause_agents(personas.principal(role), "incident")
    services.pause_agents(admin, "incident")
    with pytest.raises(PermissionDenied):
        services.resume_agents(personas.principal("MANAGER"))
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_at is not None


def test_pausing_needs_a_reason(personas, admin):
    with pytest.raises(ServiceError) as error:
        services.pause_agents(admin, "   ")
    assert (error.value.field, error.value.message) == ("reason", "Say why every agent is paused.")
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_at is None


def test_pausing_twice_or_resuming_unpaused_is_a_conflict(personas, admin):
    with pytest.raises(Conflict, match="are not paused"):
        services.resume_agents(admin)
    services.pause_agents(admin, "first")
    with pytest.raises(Conflict, match="already paused") as error:
        services.pause_agents(personas.principal("ADMIN"), "second")
    assert error.value.status == 409
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_reason == "first"


def test_the_kill_switch_stays_in_its_organization(personas, tool):
    services.pause_agents(personas.principal("outsider"), "their incident")
    agent = granted_agent(personas.org_a, tool)
    assert call(agent, tool)


# --- status, permission, arguments ---------------------------------------------------------------
@pytest.mark.parametrize(
    "status", [AgentStatus.PENDING_VALIDATION, AgentStatus.INACTIVE, AgentStatus.ERROR]
)
def test_only_a_runnable_agent_calls_tools(personas, tool, status):
    agent = granted_agent(personas.org_a, tool)
    Agent.objects.filter(pk=agent.pk).update(status=status)
    error = refusal(agent, tool)
    assert error.code == Refusal.AGENT_NOT_ACTIVE
    assert error.message == (
        f"Runner is {AgentStatus(status).label.lower()}; only an active agent calls tools."
    )
    assert services.call_usage(agent) == {"hour": 0, "day": 0}


def test_a_busy_agent_calls_tools(personas, tool):
    agent = granted_agent(personas.org_a, tool)
    services.start_work(agent)
    assert call(agent, tool)


def test_a_deleted_agent_calls_nothing(personas, tool):
    agent = granted_agent(personas.org_a, tool)
    Agent.objects.filter(pk=agent.pk).delete()
    error = refusal(agent, tool)
    assert (error.code, error.message) == (Refusal.AGENT_NOT_ACTIVE, "Runner no longer exists.")


def test_a_tool_without_a_grant_is_not_permitted(personas, server, tool):
    agent = granted_agent(personas.org_a, tool)
    error = refusal(agent, make_tool(server, "secret"))
    assert error.code == Refusal.NOT_PERMITTED
    assert error.message == "Runner may not call secret: Runner has no grant for secret."
    foreign = make_tool(make_server(personas.org_b))
    assert refusal(agent, foreign).code == Refusal.NOT_PERMITTED


def test_a_call_needing_approval_is_cleared_as_such(personas, tool):
    agent = granted_agent(personas.org_a, tool, grant={"requires_approval": True})
    assert call(agent, tool).requires_approval is True


def test_arguments_are_checked(personas, server):
    strict = make_tool(
        server,
        "strict",
        inputSchema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "additionalProperties": False,
        },
    )
    agent = granted_agent(
        personas.org_a,
        strict,
        grant={"argument_schema": {"type": "object", "properties": {"n": {"maximum": 5}}}},
    )
    assert call(agent, strict, 5)
    for arguments, words in [
        ([1, 2], "Arguments must be a JSON object."),
        ({"n": 1, "x": 2}, "do not match the input schema"),
        ({"n": "one"}, "do not match the input schema"),
        ({"n": 6}, "do not match the argument schema of a grant"),
    ]:
        with pytest.raises(CallRefused) as error:
            services.authorize_call(agent, strict, arguments, execution="e1")
        assert error.value.code == Refusal.INVALID_ARGUMENTS
        assert words in error.value.message
    assert guards.used([f"{guards.PREFIX}agent:{agent.pk}:exec:e1"]) == [1]


# --- concurrency ---------------------------------------------------------------------------------
THREADS, CAP = 20, 7


def run_at_once(target) -> list:
    """Run ``target`` in THREADS threads released together; their results, in any order."""
    start = threading.Barrier(THREADS)
    results: list = []

    def worker():
        try:
            start.wait(10)
            results.append(target())
        except Exception as exc:  # collected and asserted by the caller
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_takes_never_overshoot_a_cap():
    listed = budgets(timezone.now(), per_execution=CAP)
    results = run_at_once(lambda: guards.take(listed))
    assert len(results) == THREADS
    assert results.count(None) == CAP
    assert all(result.label == "tool calls per execution" for result in results if result)
    assert guards.used([listed[0].key]) == [CAP]


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_never_overshoot_a_budget():
    personas = make_personas()
    tool = make_tool(make_server(personas.org_a), "lookup")
    agent = granted_agent(personas.org_a, tool, max_tool_calls_per_execution=CAP)
    serial = iter(range(THREADS))
    lock = threading.Lock()

    def one_call():
        with lock:
            n = next(serial)
        try:
            return call(agent, tool, n, execution="shared")
        except CallRefused as exc:
            return exc.code

    results = run_at_once(one_call)
    cleared = [result for result in results if isinstance(result, services.Clearance)]
    assert len(cleared) == CAP, results
    assert results.count(Refusal.BUDGET_EXCEEDED) == THREADS - CAP, results
    assert guards.used([f"{guards.PREFIX}agent:{agent.pk}:exec:shared"]) == [CAP]


def test_a_suspended_ancestor_stops_the_agents_below_it(personas, tool):
    master, supervisor, worker = make_chain(personas.org_a)
    grant_down(tool, master, supervisor, worker)
    call(worker, tool, 0)
    services.suspend_agent(personas.principal("OPERATOR"), supervisor, "misbehaving")
    refused = refusal(worker, tool, 1)
    assert refused.code == Refusal.AGENT_NOT_ACTIVE
    assert supervisor.name in refused.message and "suspended" in refused.message
    services.resume_agent(personas.principal("MANAGER"), supervisor)
    call(worker, tool, 2)


def test_a_grant_schema_enforces_formats(personas, tool):
    schema = {"properties": {"to": {"type": "string", "format": "email"}}}
    agent = granted_agent(personas.org_a, tool, grant={"argument_schema": schema})
    call(agent, tool, 0, to="ops@example.com")
    refused = refusal(agent, tool, 1, to="not an email; rm -rf /")
    assert refused.code == Refusal.INVALID_ARGUMENTS
    assert "is not a 'email'" in refused.message
