"""Tool grants bounded by the parent, and the one resolver of what an agent may do."""

import pytest
from django.core.exceptions import PermissionDenied

from agents import services
from agents.choices import Refusal
from agents.models import ToolGrant
from agents.services import CallRefused
from argus.errors import ServiceError
from orgs.models import AuditEvent
from tests.agents.factories import grant_down, make_agent, make_chain, make_grant, make_tool
from tests.tools.factories import make_server
from tools.choices import ToolState


@pytest.fixture
def manager(personas):
    return personas.principal("MANAGER")


@pytest.fixture
def chain(personas):
    return make_chain(personas.org_a)


@pytest.fixture
def server(personas):
    return make_server(personas.org_a, name="files")


@pytest.fixture
def tool(server):
    return make_tool(server, "read_file")


def refused(exc_info, field, *words):
    error = exc_info.value
    assert error.field == field, (error.field, error.message)
    for word in words:
        assert word in error.message, (word, error.message)


# --- granting within the parent ------------------------------------------------------------------
def test_a_master_is_granted_anything_of_its_organization(personas, manager, chain, tool):
    master = chain[0]
    grant = services.grant_tool(
        manager, master, tool, max_calls_per_execution=3, reason="reads the docs"
    )
    assert (grant.allowed, grant.requires_approval) == (True, False)
    assert (grant.max_calls_per_execution, grant.max_calls_per_hour) == (3, None)
    assert grant.granted_by == personas.manager
    assert grant.organization == personas.org_a
    audit = AuditEvent.objects.get(action="grant.create", target_id=str(grant.pk))
    assert audit.target_label == f"{master.name} → read_file"
    assert audit.changes["max_calls_per_execution"] == [None, 3]


def test_a_tool_the_parent_does_not_hold_is_refused_naming_the_parent(manager, chain, tool):
    master, supervisor, worker = chain
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, supervisor, tool)
    refused(
        error,
        "tool",
        f"{supervisor.name}'s parent {master.name} may not use read_file",
        "a child can only be granted tools its parent holds",
    )
    make_grant(master, tool)
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, worker, tool)
    refused(error, "tool", f"{worker.name}'s parent {supervisor.name} may not use read_file")
    assert not ToolGrant.objects.filter(agent__in=[supervisor, worker]).exists()


def test_a_tool_refused_to_the_parent_is_refused(manager, chain, tool):
    master, supervisor, _worker = chain
    make_grant(master, tool, allowed=False)
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, supervisor, tool)
    refused(error, "tool", f"parent {master.name} may not use read_file", "refuses it")


@pytest.mark.parametrize("limit", ["max_calls_per_execution", "max_calls_per_hour"])
def test_a_limit_wider_than_the_parents_is_refused(manager, chain, tool, limit):
    master, supervisor, _worker = chain
    make_grant(master, tool, **{limit: 5})
    for wider in (6, None):
        with pytest.raises(ServiceError) as error:
            services.grant_tool(manager, supervisor, tool, **{limit: wider})
        refused(
            error,
            limit,
            "can be at most 5",
            f"the limit of {supervisor.name}'s parent {master.name} on read_file",
        )
    grant = services.grant_tool(manager, supervisor, tool, **{limit: 5})
    assert getattr(grant, limit) == 5


def test_the_ceiling_is_the_parents_effective_limit(manager, chain, tool):
    """The master's limit binds the worker even when the supervisor set none."""
    master, supervisor, worker = chain
    make_grant(master, tool, max_calls_per_hour=4)
    make_grant(supervisor, tool)  # written directly: wider than its parent allows
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, worker, tool, max_calls_per_hour=10)
    refused(error, "max_calls_per_hour", "at most 4", f"parent {supervisor.name}")


def test_the_parents_approval_requirement_is_inherited(manager, chain, tool):
    master, supervisor, _worker = chain
    make_grant(master, tool, requires_approval=True)
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, supervisor, tool)
    refused(
        error,
        "requires_approval",
        f"parent {master.name} needs approval for each call of read_file",
        "must require approval too",
    )
    assert services.grant_tool(manager, supervisor, tool, requires_approval=True).pk


def test_a_refusing_grant_never_exceeds_the_parent(manager, chain, tool):
    _master, supervisor, _worker = chain
    grant = services.grant_tool(manager, supervisor, tool, allowed=False, reason="never")
    assert grant.allowed is False


def test_an_edit_beyond_the_parent_is_refused_and_keeps_the_grant(manager, chain, tool):
    master, supervisor, _worker = chain
    make_grant(master, tool, max_calls_per_execution=5)
    grant = services.grant_tool(manager, supervisor, tool, max_calls_per_execution=2)
    with pytest.raises(ServiceError) as error:
        services.update_tool_grant(manager, grant, max_calls_per_execution=9)
    refused(error, "max_calls_per_execution", "at most 5", master.name)
    grant.refresh_from_db()
    assert grant.max_calls_per_execution == 2
    assert services.update_tool_grant(manager, grant, max_calls_per_execution=5).pk


def test_a_removed_tool_cannot_be_granted(personas, manager, chain, server):
    gone = make_tool(server, "gone")
    gone.state = ToolState.REMOVED
    gone.save()
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, chain[0], gone)
    refused(error, "tool", "files no longer offers gone.")


def test_a_tool_of_another_organization_cannot_be_granted(personas, manager, chain):
    foreign = make_tool(make_server(personas.org_b))
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, chain[0], foreign)
    refused(error, "tool", "The tool must belong to this organization.")


def test_one_grant_per_tool(manager, chain, tool):
    master = chain[0]
    services.grant_tool(manager, master, tool)
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, master, tool)
    refused(error, "tool", f"{master.name} already has a grant for read_file; change that one.")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"argument_schema": {"type": "nonsense"}}, "argument_schema", "schema is invalid"),
        ({"argument_schema": [1, 2]}, "argument_schema", "is not a JSON object"),
        ({"argument_schema": "text"}, "argument_schema", "is not a JSON object"),
        (
            {"argument_schema": {"description": "x" * 20_001}},
            "argument_schema",
            "longer than 20000 characters",
        ),
        ({"allowed": "yes"}, "allowed", "Must be true or false."),
        ({"requires_approval": 1}, "requires_approval", "Must be true or false."),
        ({"max_calls_per_execution": 0}, "max_calls_per_execution", "between 1 and"),
        ({"max_calls_per_hour": "3"}, "max_calls_per_hour", "whole number"),
        ({"reason": "x" * 501}, "reason", "longer than 500 characters"),
    ],
)
def test_bad_grants_are_refused(manager, chain, tool, fields, field, words):
    with pytest.raises(ServiceError) as error:
        services.grant_tool(manager, chain[0], tool, **fields)
    refused(error, field, words)
    assert not ToolGrant.objects.exists()


def test_bad_edits_are_refused(manager, chain, tool):
    grant = services.grant_tool(manager, chain[0], tool)
    with pytest.raises(ServiceError) as error:
        services.update_tool_grant(manager, grant, argument_schema={"type": 12})
    refused(error, "argument_schema", "schema is invalid")
    with pytest.raises(ServiceError, match=r"Unknown grant fields: tool\."):
        services.update_tool_grant(manager, grant, tool=tool)
    grant.refresh_from_db()
    assert grant.argument_schema is None


def test_an_empty_schema_is_no_schema(manager, chain, tool):
    grant = services.grant_tool(manager, chain[0], tool, argument_schema={})
    assert grant.argument_schema is None


def test_only_change_holders_grant(personas, chain, tool):
    master = chain[0]
    for role in ("VIEWER", "OPERATOR"):
        with pytest.raises(PermissionDenied, match="not allowed to change this agent"):
            services.grant_tool(personas.principal(role), master, tool)
    grant = make_grant(master, tool)
    with pytest.raises(PermissionDenied):
        services.update_tool_grant(personas.principal("OPERATOR"), grant, allowed=False)
    with pytest.raises(PermissionDenied):
        services.revoke_tool_grant(personas.principal("VIEWER"), grant)
    with pytest.raises(PermissionDenied):
        services.grant_tool(personas.principal("outsider"), master, tool)
    assert ToolGrant.objects.filter(pk=grant.pk, allowed=True).exists()


# --- the resolver along the chain ----------------------------------------------------------------
def test_revoking_the_parents_grant_removes_it_from_every_descendant(manager, chain, tool):
    master, supervisor, worker = chain
    master_grant, supervisor_grant, _ = grant_down(tool, master, supervisor, worker)
    assert services.resolve(worker, tool).allowed
    services.revoke_tool_grant(manager, supervisor_grant)
    permission = services.resolve(worker, tool)
    assert (permission.allowed, permission.code) == (False, "parent_lacks")
    assert (
        permission.reason == f"{supervisor.name}, above {worker.name}, has no grant for read_file"
    )
    assert permission.grant is not None  # the worker's own grant is still there
    services.revoke_tool_grant(manager, master_grant)
    permission = services.resolve(supervisor, tool)
    assert permission.code == "no_grant"
    assert services.resolve(worker, tool).reason.startswith(f"{supervisor.name}, above")


def test_refusing_the_masters_grant_refuses_every_descendant(manager, chain, tool):
    master, _supervisor, worker = chain
    master_grant, *_ = grant_down(tool, *chain)
    services.update_tool_grant(manager, master_grant, allowed=False)
    permission = services.resolve(worker, tool)
    assert (permission.allowed, permission.code) == (False, "parent_lacks")
    assert permission.reason == f"{master.name}, above {worker.name}, is refused read_file"
    assert services.resolve(master, tool).code == "denied"
    assert (
        services.resolve(master, tool).reason == f"{master.name}'s grant for read_file refuses it"
    )


def test_narrowing_the_parent_narrows_every_descendant(manager, chain, tool):
    master, supervisor, worker = chain
    master_grant = make_grant(master, tool, max_calls_per_execution=10)
    make_grant(supervisor, tool, max_calls_per_execution=8)
    make_grant(worker, tool, max_calls_per_execution=8)
    services.update_tool_grant(manager, master_grant, max_calls_per_execution=3)
    for agent in chain:
        assert services.resolve(agent, tool).max_calls_per_execution == 3
    services.update_tool_grant(manager, master_grant, requires_approval=True)
    assert services.resolve(worker, tool).requires_approval is True


def test_effective_limits_are_the_tightest_along_the_chain(chain, tool):
    master, supervisor, worker = chain
    make_grant(master, tool, max_calls_per_execution=3)
    make_grant(supervisor, tool, max_calls_per_hour=30)
    make_grant(worker, tool, max_calls_per_execution=9, max_calls_per_hour=60)
    permission = services.resolve(worker, tool)
    assert permission.allowed
    assert (permission.max_calls_per_execution, permission.max_calls_per_hour) == (3, 30)
    assert permission.reason == "granted (within the limits of its parents)"
    assert permission.code == "granted"
    master_permission = services.resolve(master, tool)
    assert (master_permission.max_calls_per_execution, master_permission.max_calls_per_hour) == (
        3,
        None,
    )
    assert master_permission.reason == "granted"


@pytest.mark.parametrize("holder", [0, 1, 2])
def test_requiring_approval_anywhere_in_the_chain_requires_it(chain, tool, holder):
    for position, agent in enumerate(chain):
        make_grant(agent, tool, requires_approval=position == holder)
    assert services.resolve(chain[2], tool).requires_approval is True
    assert services.resolve(chain[0], tool).requires_approval is (holder == 0)


def test_every_argument_schema_along_the_chain_is_enforced(personas, chain, tool):
    worker = chain[2]
    schemas = [
        {"type": "object", "required": ["path"]},
        {"type": "object", "properties": {"path": {"pattern": "^/docs/"}}},
        {"type": "object", "properties": {"path": {"maxLength": 20}}},
    ]
    for agent, schema in zip(chain, schemas, strict=True):
        make_grant(agent, tool, argument_schema=schema)
    assert services.resolve(worker, tool).argument_schemas == tuple(reversed(schemas))
    assert services.authorize_call(worker, tool, {"path": "/docs/a.md"}, execution="e1")
    for arguments, words in [
        ({}, "'path' is a required property"),
        ({"path": "/etc/passwd"}, "does not match '^/docs/'"),
        ({"path": "/docs/" + "x" * 30}, "is too long"),
    ]:
        with pytest.raises(CallRefused) as error:
            services.authorize_call(worker, tool, arguments, execution="e1")
        assert error.value.code == Refusal.INVALID_ARGUMENTS
        assert "argument schema of a grant" in error.value.message
        assert words in error.value.message


def test_a_tool_of_another_organization_resolves_to_nothing(personas, chain):
    foreign = make_tool(make_server(personas.org_b))
    permission = services.resolve(chain[0], foreign)
    assert (permission.allowed, permission.code) == (False, "no_grant")
    assert permission.reason == "the tool is in another organization"


# --- what an agent may use -----------------------------------------------------------------------
def test_effective_and_permitted_tools_with_their_reasons(personas, chain, server):
    master, supervisor, worker = chain
    names = ("a_usable", "b_gap", "c_refused", "d_chg", "e_rm", "f_master")
    usable, gap, refused_tool, changed, removed, master_only = (
        make_tool(server, name) for name in names
    )
    grant_down(usable, master, supervisor, worker)
    grant_down(gap, master, worker)  # the supervisor between them holds nothing
    grant_down(refused_tool, master, supervisor)
    make_grant(worker, refused_tool, allowed=False)
    grant_down(changed, master, supervisor, worker)
    grant_down(removed, master, supervisor, worker)
    make_grant(master, master_only)
    changed.state = ToolState.CHANGED
    changed.save()
    removed.state = ToolState.REMOVED
    removed.save()
    make_tool(server, "g_nobody")
    outside = make_agent(personas.org_a)
    make_grant(outside, make_tool(server, "h_other_master"))

    effective = {p.tool.name: p for p in services.effective_tools(worker)}
    assert {name: p.code for name, p in effective.items()} == {
        "a_usable": "granted",
        "b_gap": "parent_lacks",
        "c_refused": "denied",
        "d_chg": "tool_changed",
        "e_rm": "tool_removed",
        "f_master": "no_grant",
    }
    assert list(effective) == sorted(effective)
    assert effective["a_usable"].reason == "granted (within the limits of its parents)"
    assert effective["b_gap"].reason == (
        f"{supervisor.name}, above {worker.name}, has no grant for b_gap"
    )
    assert effective["c_refused"].reason == f"{worker.name}'s grant for c_refused refuses it"
    assert "accepts the change" in effective["d_chg"].reason
    assert effective["d_chg"].suspended
    assert effective["e_rm"].reason == "e_rm is no longer offered"
    assert effective["f_master"].reason == f"{worker.name} has no grant for f_master"
    assert [tool.name for tool in services.permitted_tools(worker)] == ["a_usable"]
    assert [tool.name for tool in services.permitted_tools(master)] == [
        "a_usable",
        "b_gap",
        "c_refused",
        "f_master",
    ]


def test_the_permission_matrix_shows_grant_effective_and_ceiling(chain, tool):
    master, supervisor, worker = chain
    make_grant(master, tool, max_calls_per_hour=5)
    own = make_grant(supervisor, tool)
    cells = services.permission_matrix(list(chain), [tool])
    assert cells[(master.pk, tool.pk)]["ceiling"] is None
    assert cells[(supervisor.pk, tool.pk)]["grant"] == own
    assert cells[(supervisor.pk, tool.pk)]["effective"].max_calls_per_hour == 5
    assert cells[(supervisor.pk, tool.pk)]["ceiling"].max_calls_per_hour == 5
    assert cells[(worker.pk, tool.pk)]["grant"] is None
    assert cells[(worker.pk, tool.pk)]["effective"].code == "no_grant"
    assert services.permission_matrix([], [tool]) == {}


@pytest.mark.parametrize("size", [1, 6])
def test_resolving_many_cells_takes_constant_queries(
    personas, server, django_assert_num_queries, size
):
    agents, tools = [], []
    for _ in range(size):
        master, supervisor, worker = make_chain(personas.org_a)
        tool = make_tool(server)
        grant_down(tool, master, supervisor, worker)
        agents += [master, supervisor, worker]
        tools.append(tool)
    with django_assert_num_queries(2):
        services.permission_matrix(agents, tools)
    with django_assert_num_queries(3):
        services.effective_tools(agents[-1])
