"""Console pages of the agents app: agents (list, tree, form, detail, actions, delete,
access), tool grants, the permissions matrix, the approvals inbox and the kill switch."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import services
from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, ApprovalRequest, ToolGrant
from argus.diff import json_changes
from tests.agents.factories import (
    grant_down,
    make_agent,
    make_chain,
    make_grant,
    make_request,
    make_server,
    make_tool,
)
from tools.choices import ToolState

ROLES = ["ADMIN", "MANAGER", "OPERATOR", "VIEWER"]
API_KEY = "sk-console-SECRET-1234"


@pytest.fixture
def login(personas):
    """``login("MANAGER")`` → a client signed in as that role of organization A."""

    def sign_in(role: str) -> Client:
        client = Client()
        client.force_login(personas.outsider if role == "outsider" else personas.user(role))
        return client

    return sign_in


def html(response) -> str:
    return response.content.decode()


def agent_form(**overrides) -> dict:
    """The agent form filled in for a plan-engine master."""
    data = {
        "name": "Scout",
        "description": "Looks around",
        "role": "MASTER",
        "parent": "",
        "server": "",
        "engine": "plan",
        "engine_tool": "",
        "llm_base_url": "",
        "llm_model": "",
        "llm_api_key": "",
        "llm_system_prompt": "",
        "llm_max_steps": "10",
        "capabilities": "search, files",
        "max_concurrent_executions": "1",
        "max_tool_calls_per_execution": "100",
        "max_tool_calls_per_hour": "",
        "max_tool_calls_per_day": "",
    }
    data.update(overrides)
    return data


def snapshot(agent: Agent) -> dict:
    fresh = Agent.objects.filter(pk=agent.pk).values().get()
    fresh.pop("updated_at")
    return fresh


def options(page: str, name: str) -> str:
    """The HTML of the select named ``name``."""
    match = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert match, f"no select {name}"
    return match.group(1)


# --- the agent list and the tree ------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_agent_list_for_each_role(login, personas, role):
    empty = html(login(role).get("/agents/"))
    assert "No agents yet" in empty
    may_create = role in ("ADMIN", "MANAGER")
    assert ("Create an agent" in empty) is may_create
    server = make_server(personas.org_a, name="Files server")
    master = make_agent(personas.org_a, name="Atlas", server=server)
    make_agent(
        personas.org_a,
        name="Scout",
        role=AgentRole.SUPERVISOR,
        parent=master,
        engine=Engine.LLM,
        status=AgentStatus.PENDING_VALIDATION,
    )
    make_agent(personas.org_b, name="Bravo secret agent")
    page = html(login(role).get("/agents/"))
    assert "Atlas" in page and "Scout" in page and "Bravo secret agent" not in page
    assert f'href="/agents/{master.pk}/"' in page and "Files server" in page
    assert 'data-value="PENDING_VALIDATION">Pending validation<' in page
    assert 'data-value="SUPERVISOR">Supervisor<' in page and ">LLM<" in page
    assert ('href="/agents/new/"' in page) is may_create
    assert 'href="/agents/tree/"' in page and 'href="/agents/matrix/"' in page


def test_agent_list_filters_and_htmx_fragment(login, personas):
    server = make_server(personas.org_a)
    master = make_agent(personas.org_a, name="Atlas", server=server, capabilities=["files"])
    make_agent(personas.org_a, name="Zephyr", status=AgentStatus.INACTIVE)
    make_agent(personas.org_a, name="Worker one", role=AgentRole.WORKER, parent=master)
    client = login("VIEWER")
    page = html(client.get("/agents/?status=INACTIVE"))
    assert "Zephyr" in page and "Atlas" not in page
    assert "Atlas" in html(client.get(f"/agents/?server={server.pk}"))
    assert "Zephyr" not in html(client.get("/agents/?capability=files"))
    assert "Worker one" in html(client.get(f"/agents/?parent={master.pk}"))
    fragment = html(client.get("/agents/?q=zep", HTTP_HX_REQUEST="true"))
    assert fragment.lstrip().startswith('<div id="agent-table">')
    assert "<html" not in fragment and "Zephyr" in fragment and "Atlas" not in fragment
    assert "No agents match these filters" in html(client.get("/agents/?q=nothing"))
    bad = html(client.get("/agents/?role=KING"))
    assert "Select a valid choice" in bad and "Atlas" not in bad


def test_agent_list_shows_the_kill_switch_banner(login, personas):
    make_agent(personas.org_a, name="Atlas")
    services.pause_agents(personas.principal("ADMIN"), "incident 42")
    page = html(login("VIEWER").get("/agents/"))
    assert "data-agents-paused" in page and "incident 42" in page
    assert personas.admin.email in page and "Resume agents" not in page
    assert "Resume agents" in html(login("ADMIN").get("/agents/"))


def test_agent_list_query_count_is_constant(login, personas, django_assert_max_num_queries):
    client = login("VIEWER")
    master, _supervisor, _worker = make_chain(personas.org_a)
    master.server = make_server(personas.org_a)
    master.save()
    client.get("/agents/")  # warm the session and the content types
    with CaptureQueriesContext(connection) as few:
        assert client.get("/agents/").status_code == 200
    for _ in range(8):
        chain = make_chain(personas.org_a)
        server = make_server(personas.org_a)
        Agent.objects.filter(pk__in=[agent.pk for agent in chain]).update(server=server)
    with django_assert_max_num_queries(len(few)):
        page = html(client.get("/agents/"))
    assert page.count('<tr id="agent-') == 27


def test_agent_tree_nests_the_hierarchy(login, personas):
    master, supervisor, worker = make_chain(personas.org_a)
    Agent.objects.filter(pk=worker.pk).update(status=AgentStatus.ERROR)
    lone = make_agent(personas.org_a, name="Lone master")
    make_agent(personas.org_b, name="Bravo secret agent")
    page = html(login("VIEWER").get("/agents/tree/"))
    assert "Bravo secret agent" not in page and "Lone master" in page
    # The worker sits in the supervisor's list, which sits in the master's.
    master_at = page.index(f'data-agent="{master.pk}"')
    supervisor_at = page.index(f'data-agent="{supervisor.pk}"')
    worker_at = page.index(f'data-agent="{worker.pk}"')
    assert master_at < supervisor_at < worker_at
    assert re.search(rf'data-agent="{worker.pk}"[^>]*>', page)
    assert 'aria-level="3"' in page and 'data-value="ERROR"' in page
    assert f'data-agent="{lone.pk}"' in page


def test_agent_tree_empty_state_offers_creation_to_managers(login, personas):
    assert "Create an agent" in html(login("MANAGER").get("/agents/tree/"))
    viewer = html(login("VIEWER").get("/agents/tree/"))
    assert "No agents yet" in viewer and "Create an agent" not in viewer


def test_agent_tree_query_count_is_constant(login, personas, django_assert_max_num_queries):
    client = login("MANAGER")
    make_chain(personas.org_a)
    client.get("/agents/tree/")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/agents/tree/").status_code == 200
    for _ in range(10):
        master, _supervisor, _worker = make_chain(personas.org_a)
        make_agent(
            personas.org_a,
            role=AgentRole.WORKER,
            parent=master,
            server=make_server(personas.org_a),
        )
    with django_assert_max_num_queries(len(few)):
        page = html(client.get("/agents/tree/"))
    assert page.count('role="treeitem"') == 43


# --- create and edit ------------------------------------------------------------------------


def test_create_an_agent_through_the_form(login, personas):
    master, supervisor, _worker = make_chain(personas.org_a)
    client = login("MANAGER")
    form = html(client.get("/agents/new/"))
    parents = options(form, "parent")
    assert f'value="{master.pk}" data-role="MASTER"' in parents
    assert f'value="{supervisor.pk}" data-role="SUPERVISOR"' in parents
    assert 'data-parent-roles="{&quot;MASTER&quot;: []' in form
    assert 'name="status"' not in form and "agents/agents.js" in form
    created = client.post(
        "/agents/new/",
        agent_form(name="Helper", role="WORKER", parent=str(supervisor.pk), status="ACTIVE"),
    )
    agent = Agent.objects.get(name="Helper")
    assert created.status_code == 302 and created["Location"] == f"/agents/{agent.pk}/"
    assert agent.status == AgentStatus.PENDING_VALIDATION  # the posted status is ignored
    assert agent.parent == supervisor and agent.capabilities == ["search", "files"]
    assert agent.created_by == personas.manager
    request = ApprovalRequest.objects.get(agent=agent, status=ApprovalStatus.PENDING)
    page = html(client.get(created["Location"]))
    assert "pending validation until someone" in page
    assert f'href="/approvals/{request.pk}/"' in page


@pytest.mark.parametrize("role", ["OPERATOR", "VIEWER"])
def test_operators_and_viewers_cannot_create(login, personas, role):
    client = login(role)
    assert "New agent" not in html(client.get("/agents/"))
    assert client.get("/agents/new/").status_code == 403
    assert client.post("/agents/new/", agent_form()).status_code == 403
    assert not Agent.objects.filter(name="Scout").exists()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"role": "WORKER"}, "parent", "A worker agent needs a parent"),
        ({"name": ""}, "name", "This field is required"),
        ({"role": "EMPEROR"}, "role", "Select a valid choice"),
        ({"capabilities": "Bad Tag!"}, "capabilities", "is not a capability tag"),
        ({"max_concurrent_executions": "0"}, "max_concurrent_executions", "between 1 and 100"),
        ({"max_tool_calls_per_hour": "lots"}, "max_tool_calls_per_hour", "Enter a whole number"),
        ({"engine": "llm"}, "llm_base_url", "The LLM engine needs a base URL"),
        (
            {"engine": "llm", "llm_base_url": "ftp://models.example", "llm_model": "m"},
            "llm_base_url",
            "",
        ),
        ({"engine": "mcp_tool"}, "server", "The MCP tool engine needs a home server"),
    ],
)
def test_bad_input_shows_the_rule_on_its_field_and_loses_nothing(
    login, personas, changes, field, message
):
    data = agent_form(description="Keeps this text", **changes)
    response = login("MANAGER").post("/agents/new/", data)
    page = html(response)
    assert response.status_code == 200
    error = re.search(rf'id="id_{field}_error">(.*?)</ul>', page, re.S)
    assert error, page
    assert message in error.group(1)
    assert "Keeps this text" in page and f'value="{data["capabilities"]}"' in page
    assert not Agent.objects.exists()


def test_an_error_in_the_hidden_engine_settings_shows_them(login, personas):
    page = html(
        login("MANAGER").post(
            "/agents/new/", agent_form(engine="plan", llm_base_url="ftp://models.example")
        )
    )
    assert '<fieldset data-engine-group="llm" data-has-errors>' in page
    assert re.search(r'id="id_llm_base_url_error">', page)
    assert '<fieldset data-engine-group="mcp_tool">' in page


def test_blank_max_steps_keep_the_current_value(login, personas):
    agent = make_agent(personas.org_a, name="Atlas", llm_max_steps=25)
    client = login("MANAGER")
    saved = client.post(
        f"/agents/{agent.pk}/edit/", agent_form(name="Atlas", capabilities="", llm_max_steps="")
    )
    assert saved.status_code == 302
    agent.refresh_from_db()
    assert agent.llm_max_steps == 25
    assert client.post("/agents/new/", agent_form(llm_max_steps="")).status_code == 302
    assert Agent.objects.get(name="Scout").llm_max_steps == 10


def test_hierarchy_rules_name_the_parent(login, personas):
    master, _supervisor, worker = make_chain(personas.org_a)
    page = html(
        login("MANAGER").post("/agents/new/", agent_form(role="SUPERVISOR", parent=str(worker.pk)))
    )
    assert f"{worker.name} is a worker" in page
    assert re.search(
        rf'<option value="{worker.pk}" (selected data-role="WORKER"|data-role="WORKER" selected)>',
        page,
    )
    master_with_parent = html(
        login("MANAGER").post("/agents/new/", agent_form(role="MASTER", parent=str(master.pk)))
    )
    assert "A master agent has no parent" in master_with_parent
    taken = html(login("MANAGER").post("/agents/new/", agent_form(name=master.name.upper())))
    assert "already exists" in taken


def test_choices_are_narrowed_to_the_organization(login, personas):
    server = make_server(personas.org_a, name="Home")
    prompt = make_tool(server, "ask")
    gone = make_tool(server, "gone")
    gone.state = ToolState.REMOVED
    gone.save()
    other_server = make_server(personas.org_b, name="Bravo server")
    other_tool = make_tool(other_server, "bravo_tool")
    other_agent = make_agent(personas.org_b, name="Bravo master")
    client = login("MANAGER")
    form = html(client.get("/agents/new/"))
    assert "Home" in options(form, "server") and "Bravo server" not in form
    tools = options(form, "engine_tool")
    assert f'value="{prompt.pk}" data-server="{server.pk}"' in tools
    assert "gone" not in tools and "bravo_tool" not in form and "Bravo master" not in form
    for field, changes in [
        ("server", {"server": str(other_server.pk)}),
        (
            "engine_tool",
            {"engine": "mcp_tool", "server": str(server.pk), "engine_tool": str(other_tool.pk)},
        ),
        ("parent", {"role": "SUPERVISOR", "parent": str(other_agent.pk)}),
    ]:
        page = html(client.post("/agents/new/", agent_form(**changes)))
        error = re.search(rf'id="id_{field}_error">(.*?)</ul>', page, re.S)
        assert error and "Select a valid choice" in error.group(1), changes
    created = client.post(
        "/agents/new/",
        agent_form(engine="mcp_tool", server=str(server.pk), engine_tool=str(prompt.pk)),
    )
    assert created.status_code == 302
    assert Agent.objects.get(name="Scout").engine_tool == prompt


def test_llm_api_key_is_write_only(login, personas):
    client = login("MANAGER")
    created = client.post(
        "/agents/new/",
        agent_form(
            engine="llm",
            llm_base_url="http://127.0.0.1:11434/v1",
            llm_model="gpt-test",
            llm_api_key=API_KEY,
        ),
    )
    agent = Agent.objects.get(name="Scout")
    assert created.status_code == 302 and agent.decrypted_llm_api_key() == API_KEY
    assert API_KEY not in agent.llm_api_key  # stored encrypted
    detail = html(client.get(f"/agents/{agent.pk}/"))
    assert API_KEY not in detail and "Stored (encrypted, never shown)" in detail
    form = html(client.get(f"/agents/{agent.pk}/edit/"))
    assert API_KEY not in form and "A key is stored" in form
    assert 'name="llm_api_key_remove"' in form
    # An error elsewhere: the typed key is not sent back.
    failed = html(
        client.post(
            f"/agents/{agent.pk}/edit/",
            agent_form(
                engine="llm",
                llm_base_url="http://127.0.0.1:11434/v1",
                llm_model="",
                llm_api_key="sk-typed-NEW",
            ),
        )
    )
    assert "The LLM engine needs a model name" in failed
    assert "sk-typed-NEW" not in failed and "data-key-not-kept" in failed
    # Blank keeps, text replaces, "remove" clears.
    keep = agent_form(engine="llm", llm_base_url="http://127.0.0.1:11434/v1", llm_model="gpt-test")
    assert client.post(f"/agents/{agent.pk}/edit/", keep).status_code == 302
    agent.refresh_from_db()
    assert agent.decrypted_llm_api_key() == API_KEY
    client.post(f"/agents/{agent.pk}/edit/", {**keep, "llm_api_key": "sk-second"})
    agent.refresh_from_db()
    assert agent.decrypted_llm_api_key() == "sk-second"
    client.post(f"/agents/{agent.pk}/edit/", {**keep, "llm_api_key_remove": "on"})
    agent.refresh_from_db()
    assert not agent.has_llm_api_key
    assert 'name="llm_api_key_remove"' not in html(client.get(f"/agents/{agent.pk}/edit/"))


def test_edit_never_changes_the_status(login, personas):
    agent = make_agent(personas.org_a, name="Atlas", status=AgentStatus.INACTIVE)
    client = login("MANAGER")
    form = html(client.get(f"/agents/{agent.pk}/edit/"))
    assert 'value="Atlas"' in form and 'name="status"' not in form
    assert f'<option value="{agent.pk}"' not in options(form, "parent")  # not its own parent
    saved = client.post(
        f"/agents/{agent.pk}/edit/",
        agent_form(name="Atlas", description="Renamed nothing", status="ACTIVE"),
    )
    assert saved.status_code == 302
    agent.refresh_from_db()
    assert agent.status == AgentStatus.INACTIVE and agent.description == "Renamed nothing"


def test_an_edit_that_widens_the_scope_asks_for_approval_again(login, personas):
    agent = make_agent(personas.org_a, name="Atlas", max_tool_calls_per_hour=10)
    client = login("MANAGER")
    saved = client.post(
        f"/agents/{agent.pk}/edit/",
        agent_form(name="Atlas", capabilities="", max_tool_calls_per_hour="50"),
        follow=True,
    )
    assert "pending validation again" in html(saved)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION
    narrowed = client.post(
        f"/agents/{agent.pk}/edit/",
        agent_form(name="Atlas", capabilities="", max_tool_calls_per_hour="5"),
    )
    assert narrowed.status_code == 302
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


@pytest.mark.parametrize("role", ["OPERATOR", "VIEWER"])
def test_operators_and_viewers_cannot_edit(login, personas, role):
    agent = make_agent(personas.org_a, name="Atlas")
    before = snapshot(agent)
    client = login(role)
    assert client.get(f"/agents/{agent.pk}/edit/").status_code == 403
    assert client.post(f"/agents/{agent.pk}/edit/", agent_form(name="Hijacked")).status_code == 403
    assert snapshot(agent) == before


# --- the agent page and its actions -----------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_agent_detail_buttons_follow_the_role(login, personas, role):
    agent = make_agent(personas.org_a, name="Atlas")
    page = html(login(role).get(f"/agents/{agent.pk}/"))
    operate, change = role != "VIEWER", role in ("ADMIN", "MANAGER")
    assert "Atlas" in page and f'data-topic="agent:{agent.pk}"' in page
    assert (f'action="/agents/{agent.pk}/suspend/"' in page) is operate
    assert (f'href="/agents/{agent.pk}/edit/"' in page) is change
    assert (f'href="/agents/{agent.pk}/delete/"' in page) is change
    assert (f'href="/agents/{agent.pk}/grants/new/"' in page) is change
    assert (f'href="/agents/{agent.pk}/access/"' in page) is (role == "ADMIN")
    assert 'name="status"' not in page


def test_agent_detail_shows_grants_effective_tools_approvals_and_activity(
    login, personas, django_capture_on_commit_callbacks
):
    server = make_server(personas.org_a, name="Files")
    read, write, changed = (make_tool(server, name) for name in ("read", "write", "drifted"))
    changed.state = ToolState.CHANGED
    changed.save()
    master, supervisor, worker = make_chain(personas.org_a)
    grant_down(read, master, supervisor, worker, max_calls_per_hour=5)
    make_grant(master, write)
    make_grant(supervisor, write, requires_approval=True)
    grant_down(changed, master, supervisor, worker)
    own = make_grant(worker, write, reason="needs to write")
    make_request(worker, requested_by=personas.manager, status=ApprovalStatus.REJECTED)
    with django_capture_on_commit_callbacks(execute=True):
        services.suspend_agent(personas.principal("OPERATOR"), worker, "maintenance window")
    client = login("MANAGER")
    page = html(client.get(f"/agents/{worker.pk}/"))
    assert "maintenance window" in page and 'data-status="INACTIVE"' in page
    assert f'href="/grants/{own.pk}/edit/"' in page and f'action="/grants/{own.pk}/delete/"' in page
    assert "needs to write" in page
    # Effective: read allowed within the limits, write needs approval (the supervisor's),
    # the changed tool is suspended.
    assert re.search(r'data-effective="read" data-code="granted"', page)
    assert "Allowed, each call approved" in page
    assert 'data-effective="drifted" data-code="tool_changed"' in page and "Suspended" in page
    assert "Rejected" in page  # approval history
    assert "agent.status" in page  # recent activity
    assert "data-usage" in page and "Tool calls this hour" in page
    assert f'action="/agents/{worker.pk}/resume/"' in page
    viewer = html(login("VIEWER").get(f"/agents/{worker.pk}/"))
    assert f'href="/grants/{own.pk}/edit/"' not in viewer


def test_the_status_card_is_an_htmx_fragment(login, personas):
    agent = make_agent(personas.org_a, name="Atlas")
    fragment = html(login("VIEWER").get(f"/agents/{agent.pk}/", HTTP_HX_REQUEST="true"))
    assert '<section class="card" id="agent-status"' in fragment and "<html" not in fragment
    assert "argus:event[detail.topic=='agent:" in fragment


def test_operator_suspends_and_recovers_but_does_not_resume(login, personas):
    agent = make_agent(personas.org_a, name="Atlas")
    operator = login("OPERATOR")
    missing = html(operator.post(f"/agents/{agent.pk}/suspend/", {"reason": " "}, follow=True))
    assert "Say why the agent is suspended" in missing
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    done = html(operator.post(f"/agents/{agent.pk}/suspend/", {"reason": "noisy"}, follow=True))
    assert "Atlas is suspended" in done
    agent.refresh_from_db()
    assert agent.status == AgentStatus.INACTIVE and agent.status_reason == "noisy"
    assert f'action="/agents/{agent.pk}/resume/"' not in done
    assert operator.post(f"/agents/{agent.pk}/resume/").status_code == 403
    again = html(operator.post(f"/agents/{agent.pk}/suspend/", {"reason": "x"}, follow=True))
    assert "Cannot suspend Atlas: it is inactive" in again
    manager = login("MANAGER")
    assert "Atlas is active again" in html(manager.post(f"/agents/{agent.pk}/resume/", follow=True))
    services.fail_agent(agent, "crashed")
    page = html(operator.get(f"/agents/{agent.pk}/"))
    assert "crashed" in page and f'action="/agents/{agent.pk}/recover/"' in page
    operator.post(f"/agents/{agent.pk}/recover/")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_viewer_is_refused_every_action(login, personas):
    master, supervisor, _worker = make_chain(personas.org_a)
    grant = make_grant(master, make_tool(make_server(personas.org_a)))
    before = snapshot(master)
    viewer = login("VIEWER")
    for method, url in [
        ("post", f"/agents/{master.pk}/suspend/"),
        ("post", f"/agents/{master.pk}/resume/"),
        ("post", f"/agents/{master.pk}/recover/"),
        ("post", f"/agents/{master.pk}/request-approval/"),
        ("get", f"/agents/{master.pk}/delete/"),
        ("post", f"/agents/{master.pk}/delete/"),
        ("get", f"/agents/{master.pk}/access/"),
        ("get", f"/agents/{master.pk}/grants/new/"),
        ("post", f"/agents/{master.pk}/grants/new/"),
        ("get", f"/grants/{grant.pk}/edit/"),
        ("post", f"/grants/{grant.pk}/edit/"),
        ("post", f"/grants/{grant.pk}/delete/"),
    ]:
        response = getattr(viewer, method)(url, {"reason": "x", "reparent_to": supervisor.pk})
        assert response.status_code == 403, (method, url)
    assert snapshot(master) == before and ToolGrant.objects.filter(pk=grant.pk).exists()


def test_request_approval_again_after_a_rejection(login, personas):
    agent = services.create_agent(personas.principal("MANAGER"), name="Atlas", role="MASTER")
    request = ApprovalRequest.objects.get(agent=agent)
    services.reject_request(personas.principal("ADMIN"), request, "not yet")
    client = login("MANAGER")
    page = html(client.get(f"/agents/{agent.pk}/"))
    assert "Approval rejected: not yet" in page and "Request approval again" in page
    asked = client.post(f"/agents/{agent.pk}/request-approval/")
    newer = ApprovalRequest.objects.get(agent=agent, status=ApprovalStatus.PENDING)
    assert asked["Location"] == f"/approvals/{newer.pk}/"
    twice = html(client.post(f"/agents/{agent.pk}/request-approval/", follow=True))
    assert "already has a pending approval request" in twice


def test_delete_moves_the_children_first(login, personas):
    master, supervisor, worker = make_chain(personas.org_a)
    other_master = make_agent(personas.org_a, name="Other master")
    client = login("MANAGER")
    confirm = html(client.get(f"/agents/{supervisor.pk}/delete/"))
    assert f"Delete {supervisor.name}?" in confirm and worker.name in confirm
    choices = options(confirm, "reparent_to")
    # Only agents a worker can have as parent, never the agent itself.
    assert f'value="{master.pk}"' in choices and f'value="{other_master.pk}"' in choices
    assert f'value="{supervisor.pk}"' not in choices and f'value="{worker.pk}"' not in choices
    refused = html(client.post(f"/agents/{supervisor.pk}/delete/", {"reparent_to": ""}))
    assert "choose an agent to move them to" in refused
    assert Agent.objects.filter(pk=supervisor.pk).exists()
    deleted = client.post(
        f"/agents/{supervisor.pk}/delete/", {"reparent_to": str(master.pk)}, follow=True
    )
    assert f"Agent {supervisor.name} deleted" in html(deleted)
    worker.refresh_from_db()
    assert worker.parent == master and not Agent.objects.filter(pk=supervisor.pk).exists()
    lone = make_agent(personas.org_a, name="Lone")
    confirm = html(client.get(f"/agents/{lone.pk}/delete/"))
    assert 'name="reparent_to"' not in confirm
    assert client.post(f"/agents/{lone.pk}/delete/")["Location"] == "/agents/"


def test_access_page_is_for_admins(login, personas):
    agent = make_agent(personas.org_a, name="Atlas")
    client = login("ADMIN")
    page = html(client.get(f"/agents/{agent.pk}/access/"))
    assert "Access to Atlas" in page and f'href="/agents/{agent.pk}/"' in page
    client.post(
        f"/agents/{agent.pk}/access/",
        {"action": "change", "holder": f"user:{personas.operator.pk}"},
    )
    operator = login("OPERATOR")
    assert f'href="/agents/{agent.pk}/edit/"' in html(operator.get(f"/agents/{agent.pk}/"))
    assert operator.get(f"/agents/{agent.pk}/edit/").status_code == 200
    assert login("MANAGER").get(f"/agents/{agent.pk}/access/").status_code == 403


def test_another_organizations_objects_are_not_found(login, personas):
    agent = make_agent(personas.org_b)
    request = make_request(make_agent(personas.org_b, status=AgentStatus.PENDING_VALIDATION))
    client = login("ADMIN")
    assert client.get(f"/agents/{agent.pk}/").status_code == 404
    assert client.get(f"/approvals/{request.pk}/").status_code == 404
    assert "No agents match" in html(client.get(f"/agents/?parent={agent.pk}"))


# --- tool grants -----------------------------------------------------------------------------


def test_grant_a_tool_edit_and_revoke(login, personas):
    files = make_server(personas.org_a, name="Files")
    weather = make_server(personas.org_a, name="Weather")
    read = make_tool(files, "read")
    forecast = make_tool(weather, "forecast")
    removed = make_tool(files, "old_tool")
    removed.state = ToolState.REMOVED
    removed.save()
    make_tool(make_server(personas.org_b), "bravo_tool")
    master = make_agent(personas.org_a, name="Atlas")
    client = login("MANAGER")
    form = html(client.get(f"/agents/{master.pk}/grants/new/"))
    tools = options(form, "tool")
    assert '<optgroup label="Files">' in tools and '<optgroup label="Weather">' in tools
    assert f'value="{read.pk}"' in tools and f'value="{forecast.pk}"' in tools
    assert "old_tool" not in tools and "bravo_tool" not in form
    created = client.post(
        f"/agents/{master.pk}/grants/new/",
        {
            "tool": str(read.pk),
            "allowed": "on",
            "max_calls_per_hour": "20",
            "argument_schema": '{"type": "object", "required": ["path"]}',
            "reason": "reads reports",
        },
    )
    assert created.status_code == 302 and created["Location"] == f"/agents/{master.pk}/"
    page = html(client.get(created["Location"]))
    assert "Atlas may now use read" in page and "pending validation again" in page
    grant = ToolGrant.objects.get(agent=master, tool=read)
    assert grant.max_calls_per_hour == 20 and grant.argument_schema["required"] == ["path"]
    assert grant.granted_by == personas.manager
    # Already granted: no longer offered.
    assert f'value="{read.pk}"' not in options(
        html(client.get(f"/agents/{master.pk}/grants/new/")), "tool"
    )
    edit = html(client.get(f"/grants/{grant.pk}/edit/"))
    assert 'value="20"' in edit and "reads reports" in edit and 'name="tool"' not in edit
    saved = client.post(
        f"/grants/{grant.pk}/edit/",
        {"allowed": "on", "requires_approval": "on", "max_calls_per_hour": "10", "reason": "r"},
    )
    assert saved.status_code == 302
    grant.refresh_from_db()
    assert grant.requires_approval and grant.max_calls_per_hour == 10
    assert grant.argument_schema is None
    revoked = client.post(f"/grants/{grant.pk}/delete/", follow=True)
    assert "no longer holds read" in html(revoked)
    assert not ToolGrant.objects.filter(pk=grant.pk).exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Enter valid JSON"),
        ('{"type": "strange"}', "argument schema"),
    ],
)
def test_a_bad_argument_schema_is_a_clear_error(login, personas, text, message):
    tool = make_tool(make_server(personas.org_a))
    master = make_agent(personas.org_a)
    page = html(
        login("MANAGER").post(
            f"/agents/{master.pk}/grants/new/",
            {"tool": str(tool.pk), "allowed": "on", "argument_schema": text, "reason": "kept"},
        )
    )
    error = re.search(r'id="id_argument_schema_error">(.*?)</ul>', page, re.S)
    assert error and message in error.group(1)
    assert "kept" in page and f'<option value="{tool.pk}" selected>' in page
    assert not ToolGrant.objects.exists()


def test_a_grant_beyond_the_parent_names_it(login, personas):
    tool = make_tool(make_server(personas.org_a), "deploy")
    master, supervisor, _worker = make_chain(personas.org_a)
    client = login("MANAGER")
    page = html(
        client.post(f"/agents/{supervisor.pk}/grants/new/", {"tool": str(tool.pk), "allowed": "on"})
    )
    assert f"parent {master.name} may not use deploy" in page
    assert re.search(r'id="id_tool_error">.*parent', page, re.S)
    make_grant(master, tool, max_calls_per_hour=5)
    wider = html(
        client.post(
            f"/agents/{supervisor.pk}/grants/new/",
            {"tool": str(tool.pk), "allowed": "on", "max_calls_per_hour": "50"},
        )
    )
    assert re.search(r'id="id_max_calls_per_hour_error">.*can be at most 5', wider, re.S)
    assert not ToolGrant.objects.filter(agent=supervisor).exists()


@pytest.mark.parametrize("role", ["OPERATOR"])
def test_operators_cannot_grant(login, personas, role):
    tool = make_tool(make_server(personas.org_a))
    master = make_agent(personas.org_a)
    grant = make_grant(master, tool)
    client = login(role)
    assert client.get(f"/agents/{master.pk}/grants/new/").status_code == 403
    assert client.post(f"/grants/{grant.pk}/edit/", {"allowed": ""}).status_code == 403
    assert client.post(f"/grants/{grant.pk}/delete/").status_code == 403
    grant.refresh_from_db()
    assert grant.allowed


# --- the permissions matrix ------------------------------------------------------------------


def cell(page: str, agent, tool) -> str:
    match = re.search(rf'<td [^>]*data-cell="{agent.pk}-{tool.pk}"[^>]*>(.*?)</td>', page, re.S)
    assert match, f"no cell {agent.pk}-{tool.pk}"
    return match.group(0)


def test_matrix_shows_own_grant_effective_and_ceiling(login, personas):
    server = make_server(personas.org_a, name="Files")
    read, write = make_tool(server, "read"), make_tool(server, "write")
    other = make_server(personas.org_a, name="Weather")
    make_tool(other, "forecast")
    master, supervisor, worker = make_chain(personas.org_a)
    grant_down(read, master, supervisor, worker)
    make_grant(master, write, requires_approval=True)
    make_grant(supervisor, write, allowed=False)
    viewer = html(login("VIEWER").get(f"/agents/matrix/?server={server.pk}"))
    assert "forecast" not in viewer and '<select name="value"' not in viewer
    worker_read = cell(viewer, worker, read)
    assert 'data-value="allow"' in worker_read and 'data-effective="allowed"' in worker_read
    assert "parent: allowed" in worker_read
    supervisor_write = cell(viewer, supervisor, write)
    assert (
        'data-value="deny"' in supervisor_write and "parent: approval per call" in supervisor_write
    )
    worker_write = cell(viewer, worker, write)
    assert 'data-value="none"' in worker_write and "parent: refused" in worker_write
    assert "parent:" not in cell(viewer, master, read)  # a master has no ceiling
    # Rows follow the hierarchy.
    assert viewer.index(f"matrix-agent-{master.pk}") < viewer.index(f"matrix-agent-{worker.pk}")
    manager = html(login("MANAGER").get("/agents/matrix/"))  # the first server by name
    assert f'id="cell-{worker.pk}-{read.pk}"' in manager
    assert login("VIEWER").get("/agents/matrix/?server=abc").status_code == 404
    bravo = make_server(personas.org_b)
    assert login("ADMIN").get(f"/agents/matrix/?server={bravo.pk}").status_code == 404


def test_matrix_cell_edits_through_the_services(login, personas):
    server = make_server(personas.org_a)
    tool = make_tool(server, "read")
    master, supervisor, worker = make_chain(personas.org_a)
    client = login("MANAGER")

    def set_cell(agent, value):
        return client.post(
            "/agents/matrix/cell/",
            {"agent": agent.pk, "tool": tool.pk, "value": value},
            HTTP_HX_REQUEST="true",
        )

    response = set_cell(master, "allow")
    fragment = html(response)
    assert response.status_code == 200 and fragment.lstrip().startswith('<div id="matrix">')
    grant = ToolGrant.objects.get(agent=master, tool=tool)
    assert grant.allowed and not grant.requires_approval and grant.granted_by == personas.manager
    assert 'data-value="allow"' in cell(fragment, master, tool)
    assert "parent: allowed" in cell(fragment, supervisor, tool)
    set_cell(master, "approval")
    grant.refresh_from_db()
    assert grant.requires_approval
    # The supervisor cannot skip the approval its parent needs.
    refused = html(set_cell(supervisor, "allow"))
    assert "data-matrix-error" in refused and "must require approval too" in refused
    assert "has-error" in cell(refused, supervisor, tool)
    assert not ToolGrant.objects.filter(agent=supervisor).exists()
    assert 'data-value="approval"' in cell(html(set_cell(supervisor, "approval")), supervisor, tool)
    set_cell(master, "deny")
    grant.refresh_from_db()
    assert not grant.allowed
    set_cell(master, "none")
    assert not ToolGrant.objects.filter(agent=master).exists()
    # Without htmx: a redirect back to the matrix with a message.
    plain = client.post(
        "/agents/matrix/cell/", {"agent": worker.pk, "tool": tool.pk, "value": "allow"}
    )
    assert plain.status_code == 302 and plain["Location"] == f"/agents/matrix/?server={server.pk}"
    page = html(client.get(plain["Location"]))
    assert f"{worker.name}: {worker.name}&#x27;s parent {supervisor.name} may not use read" in page


def test_matrix_cell_refuses_bad_requests(login, personas):
    tool = make_tool(make_server(personas.org_a))
    agent = make_agent(personas.org_a)
    bravo_agent = make_agent(personas.org_b)
    post = login("MANAGER").post
    assert post("/agents/matrix/cell/", {"agent": agent.pk, "tool": tool.pk}).status_code == 400
    data = {"agent": bravo_agent.pk, "tool": tool.pk, "value": "allow"}
    assert post("/agents/matrix/cell/", data).status_code == 404
    assert post("/agents/matrix/cell/", {**data, "agent": "x"}).status_code == 404
    data = {"agent": agent.pk, "tool": tool.pk, "value": "allow"}
    assert login("OPERATOR").post("/agents/matrix/cell/", data).status_code == 403
    assert login("VIEWER").post("/agents/matrix/cell/", data).status_code == 403
    assert not ToolGrant.objects.exists()


def test_matrix_query_count_is_constant(login, personas, django_assert_max_num_queries):
    server = make_server(personas.org_a)
    first = make_tool(server)
    master, supervisor, worker = make_chain(personas.org_a)
    grant_down(first, master, supervisor, worker)
    url = f"/agents/matrix/?server={server.pk}"
    for role in ("MANAGER", "VIEWER"):
        client = login(role)
        client.get(url)
        with CaptureQueriesContext(connection) as few:
            assert client.get(url).status_code == 200
        for _ in range(5):
            tool = make_tool(server)
            chain = make_chain(personas.org_a)
            grant_down(tool, *chain, max_calls_per_hour=3)
        with django_assert_max_num_queries(len(few)):
            page = html(client.get(url))
        assert page.count("data-cell=") == Agent.objects.count() * server.tools.count()


# --- approvals -------------------------------------------------------------------------------


def create_pending(personas, name="Atlas", role="MANAGER") -> tuple[Agent, ApprovalRequest]:
    agent = services.create_agent(personas.principal(role), name=name, role="MASTER")
    return agent, ApprovalRequest.objects.get(agent=agent, status=ApprovalStatus.PENDING)


@pytest.mark.parametrize("role", ROLES)
def test_approval_inbox_for_each_role(login, personas, role):
    assert "Nothing waits for a decision" in html(login(role).get("/approvals/"))
    _agent, pending = create_pending(personas)
    _decided_agent, decided = create_pending(personas, name="Old one")
    services.reject_request(personas.principal("ADMIN"), decided, "no")
    page = html(login(role).get("/approvals/"))
    assert f'id="approval-{pending.pk}"' in page and f'id="approval-{decided.pk}"' not in page
    assert "Activate a new agent" in page and personas.manager.email in page
    assert "Agent activation" in page and " ago" in page and "in 6" in page
    history = html(login(role).get("/approvals/?view=history"))
    assert f'id="approval-{decided.pk}"' in history and f'id="approval-{pending.pk}"' not in history
    assert 'data-value="rejected"' in history


def test_approval_inbox_filters(login, personas):
    _agent, pending = create_pending(personas)
    _other_agent, other = create_pending(personas, name="Beta")
    services.withdraw_request(personas.principal("MANAGER"), other)
    client = login("VIEWER")
    assert f"approval-{other.pk}" in html(client.get("/approvals/?status=withdrawn"))
    assert f"approval-{pending.pk}" not in html(client.get("/approvals/?status=withdrawn"))
    assert "No requests match" in html(client.get("/approvals/?kind=tool_change"))
    fragment = html(client.get("/approvals/?kind=agent_activation", HTTP_HX_REQUEST="true"))
    assert fragment.lstrip().startswith('<div id="approval-table">')
    assert "Select a valid choice" in html(client.get("/approvals/?status=maybe"))


def test_approval_inbox_query_count_is_constant(login, personas, django_assert_max_num_queries):
    client = login("ADMIN")
    make_request(make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION))
    client.get("/approvals/")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/approvals/").status_code == 200
    for _ in range(8):
        agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
        make_request(agent, requested_by=personas.manager)
    with django_assert_max_num_queries(len(few)):
        page = html(client.get("/approvals/"))
    assert page.count('<tr id="approval-') == 9


def test_admin_approves_a_new_agent(login, personas):
    agent, request = create_pending(personas)
    client = login("ADMIN")
    page = html(client.get(f"/approvals/{request.pk}/"))
    assert "Scope to approve" in page and "data-scope" in page
    assert f'action="/approvals/{request.pk}/approve/"' in page
    assert f'action="/approvals/{request.pk}/reject/"' in page
    assert "Withdraw my request" not in page
    approved = client.post(f"/approvals/{request.pk}/approve/", {"approve-reason": "fine"})
    assert approved["Location"] == f"/approvals/{request.pk}/"
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE and agent.approved_by == personas.admin
    page = html(client.get(approved["Location"]))
    assert "This request is approved" in page and "data-decision-reason>fine<" in page
    assert 'data-value="ACTIVE"' in html(client.get(f"/agents/{agent.pk}/"))
    late = html(client.post(f"/approvals/{request.pk}/approve/", {}))
    assert "already approved" in late


def test_four_eyes_blocks_the_requester_and_says_why(login, personas):
    agent, request = create_pending(personas, role="MANAGER")
    client = login("MANAGER")
    page = html(client.get(f"/approvals/{request.pk}/"))
    assert "data-four-eyes" in page and f'action="/approvals/{request.pk}/approve/"' not in page
    assert "Withdraw my request" in page
    refused = client.post(f"/approvals/{request.pk}/approve/", {"approve-reason": "mine"})
    assert refused.status_code == 200
    assert "data-decision-error" in html(refused) and "Four-eyes approval is on" in html(refused)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION
    withdrawn = client.post(f"/approvals/{request.pk}/withdraw/", follow=True)
    assert "Request withdrawn" in html(withdrawn)
    request.refresh_from_db()
    assert request.status == ApprovalStatus.WITHDRAWN


@pytest.mark.parametrize("role", ["OPERATOR", "VIEWER"])
def test_operators_and_viewers_cannot_decide(login, personas, role):
    _agent, request = create_pending(personas)
    client = login(role)
    page = html(client.get(f"/approvals/{request.pk}/"))
    assert "Deciding needs the manager role" in page and "approve/" not in page
    assert client.post(f"/approvals/{request.pk}/approve/").status_code == 403
    assert (
        client.post(f"/approvals/{request.pk}/reject/", {"reject-reason": "x"}).status_code == 403
    )
    assert "Only the person who made a request" in html(
        client.post(f"/approvals/{request.pk}/withdraw/", follow=True)
    )
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_reject_needs_a_reason(login, personas):
    agent, request = create_pending(personas)
    client = login("ADMIN")
    page = html(client.post(f"/approvals/{request.pk}/reject/", {"reject-reason": "  "}))
    assert re.search(r'id="id_reject-reason_error">.*Say why the request is rejected', page, re.S)
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    client.post(f"/approvals/{request.pk}/reject/", {"reject-reason": "too wide"})
    request.refresh_from_db()
    agent.refresh_from_db()
    assert request.status == ApprovalStatus.REJECTED and request.decided_by == personas.admin
    assert agent.status == AgentStatus.PENDING_VALIDATION


def test_an_expired_request_cannot_be_decided(login, personas):
    _agent, request = create_pending(personas)
    ApprovalRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    client = login("ADMIN")
    assert "expired before anyone decided it" in html(client.get(f"/approvals/{request.pk}/"))
    page = html(client.post(f"/approvals/{request.pk}/approve/", {}))
    assert "This request expired" in page
    request.refresh_from_db()
    assert request.status == ApprovalStatus.EXPIRED  # the service's record is kept


def test_a_wider_scope_shows_what_changed(login, personas):
    tool = make_tool(make_server(personas.org_a, name="Files"), "read")
    agent = make_agent(personas.org_a, name="Atlas", max_tool_calls_per_hour=10)
    services.grant_tool(personas.principal("MANAGER"), agent, tool, max_calls_per_hour=7)
    request = ApprovalRequest.objects.get(agent=agent, status=ApprovalStatus.PENDING)
    page = html(login("ADMIN").get(f"/approvals/{request.pk}/"))
    assert "What changed" in page and 'data-change="Grants: read"' in page
    assert "Widens" in page and "&quot;max_calls_per_hour&quot;: 7" in page
    assert '<td class="mono">read</td>' in page  # the grant in the scope


def test_a_tool_change_request_shows_the_definition_diff(login, personas):
    server = make_server(personas.org_a, name="Files")
    tool = make_tool(server, "read")
    before = {"name": "read", "description": "Reads a file."}
    after = {"name": "read", "description": "Reads and DELETES a file."}
    request = ApprovalRequest.objects.create(
        organization=personas.org_a,
        kind=ApprovalKind.TOOL_CHANGE,
        tool=tool,
        target_label="Files / read",
        summary="read's definition changed",
        snapshot={"server": "Files", "tool": "read", "before": before, "after": after},
        snapshot_hash="f" * 64,
        changes=json_changes(before, after),
        expires_at=timezone.now() + timedelta(days=1),
    )
    page = html(login("MANAGER").get(f"/approvals/{request.pk}/"))
    assert 'data-change="/description"' in page and "Reads and DELETES a file." in page
    assert "diff-add" in page and "diff-del" in page
    assert f'href="/tools/{tool.pk}/"' in page and "Argus" in page


# --- the kill switch -------------------------------------------------------------------------


def test_kill_switch_card_for_admins(login, personas):
    admin = login("ADMIN")
    for url in ("/", "/settings/"):
        page = html(admin.get(url))
        assert 'data-kill-switch="running"' in page, url
        assert 'action="/agents/pause/"' in page
    missing = html(admin.post("/agents/pause/", {"reason": " ", "next": "/settings/"}, follow=True))
    assert "Say why every agent is paused" in missing
    paused = admin.post("/agents/pause/", {"reason": "incident 7", "next": "/settings/"})
    assert paused["Location"] == "/settings/"
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_by == personas.admin
    page = html(admin.get("/"))
    assert 'data-kill-switch="paused"' in page and "incident 7" in page
    assert personas.admin.email in page and 'action="/agents/resume/"' in page
    outside = admin.post("/agents/resume/", {"next": "https://evil.example/"})
    assert outside["Location"] == "/"
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_at is None


@pytest.mark.parametrize("role", ["MANAGER", "OPERATOR", "VIEWER"])
def test_kill_switch_is_for_admins_only(login, personas, role):
    client = login(role)
    page = html(client.get("/"))
    assert 'data-kill-switch="running"' in page and 'action="/agents/pause/"' not in page
    assert "Only admins can pause" in page
    assert client.post("/agents/pause/", {"reason": "mine"}).status_code == 403
    personas.org_a.refresh_from_db()
    assert personas.org_a.agents_paused_at is None
    services.pause_agents(personas.principal("ADMIN"), "admin did it")
    assert client.post("/agents/resume/").status_code == 403
    settings_page = html(client.get("/settings/"))
    assert "admin did it" in settings_page and 'action="/agents/resume/"' not in settings_page


def test_pages_need_a_member(client, personas):
    for url in ("/agents/", "/agents/tree/", "/agents/matrix/", "/approvals/", "/agents/new/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/")
    assert client.post("/agents/pause/", {"reason": "x"}).status_code == 302
    assert client.post("/agents/matrix/cell/", {}).status_code == 302
