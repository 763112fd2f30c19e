"""A changed tool definition suspends the grants on it until a person accepts the change,
through a ``tool_change`` approval request or the tool catalog."""

import pytest
from django.core.exceptions import PermissionDenied

from agents import services
from agents.choices import ApprovalKind, ApprovalStatus, Refusal
from agents.models import ApprovalRequest
from agents.services import CallRefused
from argus.errors import Conflict
from orgs import services as org_services
from orgs.models import AuditEvent
from orgs.permissions import Principal
from tests.agents.factories import grant_down, make_chain
from tests.tools.factories import make_server
from tools import services as tool_services
from tools.choices import ToolState
from tools.mcp.operations import Catalog, ServerInfo
from tools.models import Tool


def listed(description: str, **schema) -> dict:
    return {
        "name": "search",
        "description": description,
        "inputSchema": {"type": "object", **schema},
    }


def catalog(*tools) -> Catalog:
    return Catalog(server=ServerInfo(name="s"), tools=list(tools), resources=[], prompts=[])


@pytest.fixture
def system(personas):
    return Principal.system(personas.org_a)


@pytest.fixture
def manager(personas):
    return personas.principal("MANAGER")


@pytest.fixture
def setup(personas, system):
    """A tool listed at v1, granted down a master → supervisor → worker chain."""
    server = make_server(personas.org_a, name="search server")
    tool_services.apply_catalog(system, server, catalog(listed("v1")))
    tool = Tool.objects.get(server=server, name="search")
    chain = make_chain(personas.org_a)
    grant_down(tool, *chain)
    return server, tool, chain


def change(system, server, description="v2 exfiltrates", **schema) -> Tool:
    tool_services.apply_catalog(system, server, catalog(listed(description, **schema)))
    return Tool.objects.get(server=server, name="search")


def requests_of(tool):
    return ApprovalRequest.objects.filter(tool=tool, kind=ApprovalKind.TOOL_CHANGE)


def test_a_changed_tool_suspends_its_grants(system, setup):
    server, tool, (_master, _supervisor, worker) = setup
    assert services.authorize_call(worker, tool, {}, execution="before")
    tool = change(system, server)
    assert tool.state == ToolState.CHANGED
    permission = services.resolve(worker, tool)
    assert (permission.allowed, permission.code) == (False, "tool_changed")
    assert permission.suspended
    assert "the grant is suspended until a person accepts the change" in permission.reason
    assert services.permitted_tools(worker) == []
    with pytest.raises(CallRefused) as error:
        services.authorize_call(worker, tool, {}, execution="after")
    assert error.value.code == Refusal.TOOL_UNAVAILABLE
    assert error.value.status == 409
    assert "definition changed" in error.value.message


def test_the_gate_reads_the_tools_current_state(system, setup):
    server, tool, (_master, _supervisor, worker) = setup
    held = Tool.objects.get(pk=tool.pk)  # loaded when the execution started
    change(system, server)
    with pytest.raises(CallRefused) as error:
        services.authorize_call(worker, held, {}, execution="running")
    assert error.value.code == Refusal.TOOL_UNAVAILABLE


def test_a_change_opens_a_request_with_the_diff(personas, system, setup):
    server, tool, _chain = setup
    pinned = tool.definition()
    tool = change(system, server)
    [request] = requests_of(tool)
    assert request.status == ApprovalStatus.PENDING
    assert request.agent is None
    assert request.organization == personas.org_a
    assert request.target_label == "search server / search"
    assert request.requested_via == "system"
    assert request.snapshot == {
        "server": "search server",
        "tool": "search",
        "before": pinned,
        "after": tool.definition(),
    }
    assert request.snapshot_hash == tool.definition_hash
    assert request.changes == [{"path": "/description", "before": "v1", "after": "v2 exfiltrates"}]
    assert AuditEvent.objects.filter(action="approval.request", target_id=str(request.pk)).exists()
    # Syncing the same definition again keeps the one request.
    change(system, server)
    assert requests_of(tool).count() == 1


def test_approving_the_request_accepts_the_change(personas, system, manager, setup):
    server, tool, (_master, _supervisor, worker) = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    services.approve_request(manager, request, "reviewed")
    tool.refresh_from_db()
    assert tool.state == ToolState.ACTIVE
    assert tool.pinned_hash == tool.definition_hash == request.snapshot_hash
    assert tool.pinned_definition["description"] == "v2 exfiltrates"
    assert tool.pinned_by == personas.manager
    request.refresh_from_db()
    assert (request.status, request.decided_by, request.reason) == (
        ApprovalStatus.APPROVED,
        personas.manager,
        "reviewed",
    )
    assert services.resolve(worker, tool).allowed
    assert services.authorize_call(worker, tool, {}, execution="again")
    assert AuditEvent.objects.filter(action="tool.accept_change", target_id=str(tool.pk)).exists()


def test_accepting_in_the_catalog_closes_the_request(personas, system, manager, setup):
    server, tool, (_master, _supervisor, worker) = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    tool = tool_services.accept_tool_change(manager, tool)
    request.refresh_from_db()
    assert (request.status, request.decided_by, request.reason) == (
        ApprovalStatus.APPROVED,
        personas.manager,
        "Accepted in the tool catalog.",
    )
    assert services.resolve(worker, tool).allowed


def test_rejecting_keeps_the_grants_suspended(personas, system, manager, setup):
    server, tool, (_master, _supervisor, worker) = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    services.reject_request(manager, request, "looks like exfiltration")
    tool.refresh_from_db()
    assert tool.state == ToolState.CHANGED
    assert services.resolve(worker, tool).code == "tool_changed"


def test_a_rejected_definition_is_not_asked_again(system, manager, setup):
    server, tool, _chain = setup
    tool = change(system, server)
    services.reject_request(manager, requests_of(tool).get(), "no")
    change(system, server)
    assert not requests_of(tool).filter(status=ApprovalStatus.PENDING).exists()
    # A different definition is a new question.
    change(system, server, "v3")
    assert requests_of(tool).filter(status=ApprovalStatus.PENDING).count() == 1


def test_a_second_change_supersedes_the_request(system, manager, setup):
    server, tool, _chain = setup
    tool = change(system, server, "v2")
    first = requests_of(tool).get()
    tool = change(system, server, "v3", required=["q"])
    first.refresh_from_db()
    assert first.status == ApprovalStatus.WITHDRAWN
    assert "changed again" in first.reason
    second = requests_of(tool).get(status=ApprovalStatus.PENDING)
    assert second.snapshot_hash == tool.definition_hash
    assert {item["path"] for item in second.changes} == {"/description", "/inputSchema/required"}
    with pytest.raises(Conflict, match="already withdrawn"):
        services.approve_request(manager, first)
    tool.refresh_from_db()
    assert tool.state == ToolState.CHANGED


def test_reverting_to_the_pinned_definition_withdraws_the_request(system, setup):
    server, tool, (_master, _supervisor, worker) = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    tool = change(system, server, "v1")
    assert tool.state == ToolState.ACTIVE
    request.refresh_from_db()
    assert (request.status, request.reason) == (
        ApprovalStatus.WITHDRAWN,
        "The tool is no longer changed.",
    )
    assert services.resolve(worker, tool).allowed


def test_a_tool_that_disappears_withdraws_its_request(system, setup):
    server, tool, (_master, _supervisor, worker) = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    tool_services.apply_catalog(system, server, catalog())
    request.refresh_from_db()
    assert request.status == ApprovalStatus.WITHDRAWN
    tool.refresh_from_db()
    assert services.resolve(worker, tool).code == "tool_removed"
    with pytest.raises(CallRefused) as error:
        services.authorize_call(worker, tool, {}, execution="gone")
    assert error.value.code == Refusal.TOOL_UNAVAILABLE


def test_an_api_key_cannot_accept_a_change(personas, system, setup):
    server, tool, _chain = setup
    tool = change(system, server)
    key, _secret = org_services.create_api_key(
        personas.principal("MANAGER"), "ci", scopes=["write"]
    )
    with_key = Principal.for_api_key(key)
    with pytest.raises(PermissionDenied, match="not possible with an API key"):
        tool_services.accept_tool_change(with_key, tool)
    with pytest.raises(PermissionDenied, match="not possible with an API key"):
        services.approve_request(with_key, requests_of(tool).get())
    tool.refresh_from_db()
    assert tool.state == ToolState.CHANGED
    assert requests_of(tool).get().status == ApprovalStatus.PENDING


def test_only_approvers_decide_a_tool_change(personas, system, setup):
    server, tool, _chain = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    for role in ("VIEWER", "OPERATOR"):
        with pytest.raises(PermissionDenied):
            services.approve_request(personas.principal(role), request)
    with pytest.raises(PermissionDenied):
        services.approve_request(personas.principal("outsider"), request)
    assert requests_of(tool).get().status == ApprovalStatus.PENDING


def test_a_request_that_changed_again_since_review_is_not_accepted(
    personas, system, manager, setup
):
    """The definition is reviewed through the request's snapshot: a newer one (written
    behind the catalog's back, so no newer request) is not accepted by it."""
    server, tool, _chain = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    Tool.objects.filter(pk=tool.pk).update(definition_hash="0" * 64)
    with pytest.raises(Conflict, match="changed again since this definition was reviewed"):
        services.approve_request(manager, request)
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_an_expired_tool_change_is_asked_again_on_the_next_sync(system, setup):
    server, tool, _chain = setup
    tool = change(system, server)
    request = requests_of(tool).get()
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=request.created_at)
    assert services.expire_requests() == 1
    change(system, server)
    assert requests_of(tool).filter(status=ApprovalStatus.PENDING).count() == 1
