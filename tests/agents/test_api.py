"""The agents REST API: agents (CRUD, hierarchy, status actions, tree, effective tools),
tool grants bounded by the parent, approval requests decided by people only; every bad
input a 400 naming the field, invalid transitions 409, constant query counts."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents import services
from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, ApprovalRequest, ToolGrant
from orgs import services as org_services
from orgs.models import AuditEvent
from orgs.permissions import Action, OrgQuerySet
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
from tools.models import Tool

API_KEY = "sk-llm-secret-value-0123456789"
AGENTS = "/api/v1/agents/"
GRANTS = "/api/v1/grants/"
APPROVALS = "/api/v1/approvals/"


def bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def post(client, url, data=None, **extra):
    return client.post(url, data or {}, content_type="application/json", **extra)


def patch(client, url, data, **extra):
    return client.patch(url, data, content_type="application/json", **extra)


def put(client, url, data, **extra):
    return client.put(url, data, content_type="application/json", **extra)


def field_error(response, field):
    """The first message for ``field`` of a 400, checking the error shape on the way."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["detail"], body
    assert field in body["errors"], body
    return body["errors"][field][0]


def bad(case, payload, field, message):
    """A bad-input case: the payload (from the test's rows), the field and its message."""
    return pytest.param(payload, field, message, id=case)


def pending_request(agent) -> ApprovalRequest:
    return ApprovalRequest.objects.get(
        agent=agent, kind=ApprovalKind.AGENT_ACTIVATION, status=ApprovalStatus.PENDING
    )


# --- agents: create, read, update, delete ------------------------------------------------


def test_an_agent_lifecycle_with_a_write_only_llm_key(client, personas):
    server = make_server(personas.org_a)
    client.force_login(personas.manager)
    created = post(
        client,
        AGENTS,
        {
            "name": "Planner",
            "description": "Plans.",
            "role": "MASTER",
            "server": server.pk,
            "llm_api_key": API_KEY,
            "capabilities": ["Plan", "research"],
            "max_tool_calls_per_hour": 50,
        },
    )
    assert created.status_code == 201, created.content
    body = created.json()
    agent = Agent.objects.get(pk=body["id"])
    assert body["status"] == AgentStatus.PENDING_VALIDATION
    assert body["pending_approval"] == pending_request(agent).pk
    assert body["has_llm_api_key"] is True
    assert "llm_api_key" not in body
    assert API_KEY not in created.content.decode()
    assert body["capabilities"] == ["plan", "research"]
    assert body["server"] == server.pk
    assert body["parent"] is None
    assert body["engine"] == Engine.PLAN
    assert body["created_by"] == personas.manager.email
    assert body["approved_by"] is None
    assert body["paused"] is False
    assert body["max_tool_calls_per_execution"] == 100
    assert body["max_tool_calls_per_hour"] == 50
    assert agent.decrypted_llm_api_key() == API_KEY

    url = f"{AGENTS}{agent.pk}/"
    for response in (client.get(url), client.get(AGENTS)):
        assert response.status_code == 200
        assert API_KEY not in response.content.decode()
        assert "llm_api_key" not in response.content.decode().replace("has_llm_api_key", "")

    changed = patch(client, url, {"description": "Plans carefully.", "llm_api_key": None})
    assert changed.status_code == 200, changed.content
    assert changed.json()["description"] == "Plans carefully."
    assert changed.json()["has_llm_api_key"] is True  # null keeps the key

    replaced = patch(client, url, {"llm_api_key": "another-secret-key"})
    assert replaced.json()["has_llm_api_key"] is True
    assert "another-secret-key" not in replaced.content.decode()
    agent.refresh_from_db()
    assert agent.decrypted_llm_api_key() == "another-secret-key"

    whole = put(client, url, {"name": "Planner", "role": "MASTER", "llm_api_key": ""})
    assert whole.status_code == 200, whole.content
    assert whole.json()["has_llm_api_key"] is False  # "" removes it
    assert whole.json()["description"] == "Plans carefully."  # left out: kept

    changes = json.dumps([event.changes for event in AuditEvent.objects.all()])
    assert API_KEY not in changes and "another-secret-key" not in changes

    assert client.delete(url).status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()


def test_an_llm_agent_through_the_api(client, personas):
    client.force_login(personas.manager)
    created = post(
        client,
        AGENTS,
        {
            "name": "Thinker",
            "role": "MASTER",
            "engine": "llm",
            "llm_base_url": "http://127.0.0.1:11434/v1",
            "llm_model": "llama3",
            "llm_api_key": API_KEY,
            "llm_system_prompt": "Be brief.",
            "llm_max_steps": 5,
        },
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["engine"], body["llm_model"], body["llm_max_steps"]) == ("llm", "llama3", 5)
    assert body["has_llm_api_key"] is True
    assert API_KEY not in created.content.decode()


def test_a_hierarchy_is_built_through_the_api(client, personas):
    client.force_login(personas.manager)
    master = post(client, AGENTS, {"name": "Boss", "role": "MASTER"}).json()
    supervisor = post(
        client, AGENTS, {"name": "Lead", "role": "SUPERVISOR", "parent": master["id"]}
    )
    assert supervisor.status_code == 201, supervisor.content
    worker = post(
        client, AGENTS, {"name": "Hand", "role": "WORKER", "parent": supervisor.json()["id"]}
    )
    assert worker.status_code == 201, worker.content
    direct = post(client, AGENTS, {"name": "Solo", "role": "WORKER", "parent": master["id"]})
    assert direct.status_code == 201, direct.content
    assert worker.json()["parent"] == supervisor.json()["id"]


def _mcp_tool_on_another_server(ctx):
    home, other = make_server(ctx["org"]), make_server(ctx["org"])
    return {"engine": "mcp_tool", "server": home.pk, "engine_tool": make_tool(other).pk}


BAD_AGENTS = [
    bad("unknown role", lambda ctx: {"role": "BOSS"}, "role", "not a valid choice"),
    bad("no role", lambda ctx: {"role": ""}, "role", "not a valid choice"),
    bad("no name", lambda ctx: {"name": ""}, "name", ""),
    bad("long name", lambda ctx: {"name": "n" * 101}, "name", "100"),
    bad("master with parent", lambda ctx: {"parent": ctx["master"].pk}, "parent", "has no parent"),
    bad(
        "worker without parent",
        lambda ctx: {"role": "WORKER"},
        "parent",
        "needs a parent: supervisor or master",
    ),
    bad(
        "supervisor under a worker",
        lambda ctx: {"role": "SUPERVISOR", "parent": ctx["worker"].pk},
        "parent",
        "parent must be a master",
    ),
    bad(
        "parent of another organization",
        lambda ctx: {"role": "WORKER", "parent": ctx["foreign_agent"].pk},
        "parent",
        "does not exist",
    ),
    bad(
        "parent that does not exist",
        lambda ctx: {"role": "WORKER", "parent": 987654},
        "parent",
        "does not exist",
    ),
    bad(
        "server of another organization",
        lambda ctx: {"server": ctx["foreign_server"].pk},
        "server",
        "does not exist",
    ),
    bad(
        "prompt tool of another organization",
        lambda ctx: {
            "engine": "mcp_tool",
            "server": ctx["server"].pk,
            "engine_tool": ctx["foreign_tool"].pk,
        },
        "engine_tool",
        "does not exist",
    ),
    bad("unknown engine", lambda ctx: {"engine": "quantum"}, "engine", "valid choice"),
    bad(
        "mcp_tool without a home server",
        lambda ctx: {"engine": "mcp_tool"},
        "server",
        "needs a home server",
    ),
    bad(
        "mcp_tool without its tool",
        lambda ctx: {"engine": "mcp_tool", "server": ctx["server"].pk},
        "engine_tool",
        "receives prompts",
    ),
    bad(
        "mcp_tool with a tool of another server",
        _mcp_tool_on_another_server,
        "engine_tool",
        "must be a tool of the home server",
    ),
    bad(
        "llm without base URL",
        lambda ctx: {"engine": "llm", "llm_model": "m"},
        "llm_base_url",
        "needs a base URL",
    ),
    bad(
        "llm without model",
        lambda ctx: {"engine": "llm", "llm_base_url": "http://127.0.0.1:11434/v1"},
        "llm_model",
        "needs a model",
    ),
    bad(
        "llm base URL not http",
        lambda ctx: {"engine": "llm", "llm_model": "m", "llm_base_url": "ftp://127.0.0.1/v1"},
        "llm_base_url",
        "ftp",
    ),
    bad("capability tag", lambda ctx: {"capabilities": ["Bad Tag!"]}, "capabilities", "not a"),
    bad("capabilities not a list", lambda ctx: {"capabilities": "x"}, "capabilities", "list"),
    bad(
        "too many capabilities",
        lambda ctx: {"capabilities": [f"t{i}" for i in range(21)]},
        "capabilities",
        "at most 20",
    ),
    bad("zero budget", lambda ctx: {"max_tool_calls_per_hour": 0}, "max_tool_calls_per_hour", "1"),
    bad(
        "huge budget",
        lambda ctx: {"max_tool_calls_per_day": 10**9},
        "max_tool_calls_per_day",
        "between 1 and 10000000",
    ),
    bad(
        "budget not a number",
        lambda ctx: {"max_tool_calls_per_execution": "many"},
        "max_tool_calls_per_execution",
        "integer",
    ),
    bad(
        "concurrency out of range",
        lambda ctx: {"max_concurrent_executions": 101},
        "max_concurrent_executions",
        "between 1 and 100",
    ),
    bad("max steps zero", lambda ctx: {"llm_max_steps": 0}, "llm_max_steps", "between 1 and 500"),
    bad("status", lambda ctx: {"status": "ACTIVE"}, "status", "only through its actions"),
    bad("duplicate name", lambda ctx: {"name": ctx["master"].name.upper()}, "name", "already"),
    bad("llm key not text", lambda ctx: {"llm_api_key": "a\nb"}, "llm_api_key", "API key"),
]


@pytest.mark.parametrize(("payload", "field", "message"), BAD_AGENTS)
def test_bad_agent_input_is_a_400_naming_the_field(client, personas, payload, field, message):
    master, _supervisor, worker = make_chain(personas.org_a)
    server = make_server(personas.org_a)
    foreign_server = make_server(personas.org_b)
    ctx = {
        "org": personas.org_a,
        "master": master,
        "worker": worker,
        "server": server,
        "foreign_agent": make_agent(personas.org_b),
        "foreign_server": foreign_server,
        "foreign_tool": make_tool(foreign_server),
    }
    before = Agent.objects.count()
    client.force_login(personas.manager)
    response = post(client, AGENTS, {"name": "New agent", "role": "MASTER", **payload(ctx)})
    assert message in field_error(response, field)
    assert Agent.objects.count() == before
    # Nothing about the other organization's rows leaks: the same words as a missing id.
    assert personas.org_b.name not in response.content.decode()


def test_writing_the_status_is_refused_and_changes_nothing(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    client.force_login(personas.admin)
    url = f"{AGENTS}{agent.pk}/"
    for response in (
        patch(client, url, {"status": "ACTIVE"}),
        patch(client, url, {"status": "ACTIVE", "description": "sneaky"}),
        put(client, url, {"name": agent.name, "role": "MASTER", "status": "ACTIVE"}),
    ):
        assert "only through its actions" in field_error(response, "status")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION
    assert agent.description == ""
    # Other read-only fields are ignored, as everywhere in the API.
    ignored = patch(client, url, {"approved_at": "2020-01-01T00:00:00Z"})
    assert ignored.status_code == 200
    assert ignored.json()["approved_at"] is None


def test_hierarchy_changes_are_checked(client, personas):
    master, supervisor, worker = make_chain(personas.org_a)
    other_master = make_agent(personas.org_a)
    client.force_login(personas.manager)

    def change(agent, data):
        return patch(client, f"{AGENTS}{agent.pk}/", data)

    assert "would create a cycle" in field_error(
        change(supervisor, {"parent": worker.pk}), "parent"
    )
    assert "its own parent" in field_error(
        change(supervisor, {"role": "WORKER", "parent": supervisor.pk}), "parent"
    )
    message = field_error(change(supervisor, {"role": "WORKER"}), "role")
    assert worker.name in message and "Re-parent" in message
    assert "has no parent" in field_error(change(master, {"parent": other_master.pk}), "parent")
    foreign = make_agent(personas.org_b)
    assert "does not exist" in field_error(change(worker, {"parent": foreign.pk}), "parent")
    assert "already exists" in field_error(change(worker, {"name": master.name}), "name")
    moved = change(worker, {"parent": master.pk})
    assert moved.status_code == 200, moved.content
    assert moved.json()["parent"] == master.pk
    worker.refresh_from_db()
    assert worker.parent_id == master.pk


def test_deleting_an_agent_with_children(client, personas):
    _master, supervisor, worker = make_chain(personas.org_a)
    other_master = make_agent(personas.org_a)
    foreign = make_agent(personas.org_b)
    client.force_login(personas.manager)
    url = f"{AGENTS}{supervisor.pk}/"

    refused = client.delete(url)
    assert refused.status_code == 409, refused.content
    assert worker.name in refused.json()["detail"]
    assert "no agent" in field_error(
        client.delete(f"{url}?reparent_to={foreign.pk}"), "reparent_to"
    )
    assert "no agent" in field_error(client.delete(f"{url}?reparent_to=987654"), "reparent_to")
    assert "id of an agent" in field_error(client.delete(f"{url}?reparent_to=x"), "reparent_to")
    assert "another agent" in field_error(
        client.delete(f"{url}?reparent_to={supervisor.pk}"), "reparent_to"
    )
    assert Agent.objects.filter(pk=supervisor.pk).exists()

    assert client.delete(f"{url}?reparent_to={other_master.pk}").status_code == 204
    worker.refresh_from_db()
    assert worker.parent_id == other_master.pk
    assert not Agent.objects.filter(pk=supervisor.pk).exists()


def test_roles_and_keys_on_agents(client, personas):
    agent = make_agent(personas.org_a)
    client.force_login(personas.operator)
    assert post(client, AGENTS, {"name": "x", "role": "MASTER"}).status_code == 403
    assert patch(client, f"{AGENTS}{agent.pk}/", {"description": "x"}).status_code == 403
    _key, reader = org_services.create_api_key(personas.principal("ADMIN"), "r", scopes=["read"])
    client.logout()
    assert client.get(AGENTS, **bearer(reader)).status_code == 200
    assert (
        post(client, AGENTS, {"name": "x", "role": "MASTER"}, **bearer(reader)).status_code == 403
    )
    _key, writer = org_services.create_api_key(
        personas.principal("MANAGER"), "w", scopes=["read", "write"]
    )
    created = post(client, AGENTS, {"name": "By key", "role": "MASTER"}, **bearer(writer))
    assert created.status_code == 201, created.content
    assert pending_request(Agent.objects.get(pk=created.json()["id"])).requested_via == "api"


# --- status actions --------------------------------------------------------------------------


def test_suspend_resume_and_recover(client, personas):
    agent = make_agent(personas.org_a)
    url = f"{AGENTS}{agent.pk}/"
    client.force_login(personas.operator)

    assert "Say why" in field_error(post(client, f"{url}suspend/", {"reason": " "}), "reason")
    suspended = post(client, f"{url}suspend/", {"reason": "Misbehaving"})
    assert suspended.status_code == 200, suspended.content
    assert suspended.json()["status"] == AgentStatus.INACTIVE
    assert suspended.json()["status_reason"] == "Misbehaving"
    again = post(client, f"{url}suspend/", {"reason": "Again"})
    assert again.status_code == 409
    assert "inactive" in again.json()["detail"]
    assert again.json()["code"] == "invalid_transition"

    # Resuming needs ``change``: not an operator's.
    assert post(client, f"{url}resume/").status_code == 403
    client.force_login(personas.manager)
    resumed = post(client, f"{url}resume/", {"reason": "Fixed"})
    assert resumed.status_code == 200, resumed.content
    assert resumed.json()["status"] == AgentStatus.ACTIVE
    assert post(client, f"{url}resume/").status_code == 409
    assert post(client, f"{url}recover/").status_code == 409

    broken = make_agent(personas.org_a, status=AgentStatus.ERROR)
    client.force_login(personas.operator)
    recovered = post(client, f"{AGENTS}{broken.pk}/recover/", {"reason": "Restarted"})
    assert recovered.status_code == 200, recovered.content
    assert recovered.json()["status"] == AgentStatus.ACTIVE

    client.force_login(personas.viewer)
    assert post(client, f"{url}suspend/", {"reason": "x"}).status_code == 403
    foreign = make_agent(personas.org_b)
    client.force_login(personas.admin)
    assert post(client, f"{AGENTS}{foreign.pk}/suspend/", {"reason": "x"}).status_code == 404
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_asking_for_approval_again(client, personas):
    client.force_login(personas.manager)
    agent_id = post(client, AGENTS, {"name": "Fresh", "role": "MASTER"}).json()["id"]
    url = f"{AGENTS}{agent_id}/request-approval/"
    assert post(client, url).status_code == 409  # one is pending already
    request = ApprovalRequest.objects.get(agent_id=agent_id)
    client.force_login(personas.admin)
    rejected = post(client, f"{APPROVALS}{request.pk}/reject/", {"reason": "Not yet"})
    assert rejected.status_code == 200, rejected.content
    assert client.get(f"{AGENTS}{agent_id}/").json()["pending_approval"] is None

    client.force_login(personas.manager)
    asked = post(client, url)
    assert asked.status_code == 201, asked.content
    assert asked.json()["status"] == ApprovalStatus.PENDING
    assert asked.json()["kind"] == ApprovalKind.AGENT_ACTIVATION
    assert client.get(f"{AGENTS}{agent_id}/").json()["pending_approval"] == asked.json()["id"]
    active = make_agent(personas.org_a)
    assert "not waiting" in post(client, f"{AGENTS}{active.pk}/request-approval/").json()["detail"]
    client.force_login(personas.operator)
    assert post(client, url).status_code == 403


def test_the_kill_switch_shows_on_every_agent(client, personas):
    agent = make_agent(personas.org_a)
    services.pause_agents(personas.principal("ADMIN"), "Incident")
    client.force_login(personas.viewer)
    assert client.get(f"{AGENTS}{agent.pk}/").json()["paused"] is True
    assert client.get(AGENTS).json()["results"][0]["paused"] is True
    other = make_agent(personas.org_b)
    client.force_login(personas.outsider)
    assert client.get(f"{AGENTS}{other.pk}/").json()["paused"] is False


# --- lists, tree, effective tools -------------------------------------------------------------


def test_the_agent_list_filters(client, personas):
    master, supervisor, worker = make_chain(personas.org_a)
    tagged = make_agent(
        personas.org_a,
        name="Tagged",
        description="finds things",
        capabilities=["search"],
        status=AgentStatus.INACTIVE,
    )
    client.force_login(personas.viewer)

    def names(query):
        response = client.get(f"{AGENTS}?{query}")
        assert response.status_code == 200, response.content
        return sorted(row["name"] for row in response.json()["results"])

    assert names("role=WORKER") == [worker.name]
    assert names("status=INACTIVE") == [tagged.name]
    assert names("q=finds") == [tagged.name]
    assert names("capability=search") == [tagged.name]
    assert names(f"parent={master.pk}") == [supervisor.name]
    assert client.get(f"{AGENTS}?role=BOSS").status_code == 400
    assert client.get(f"{AGENTS}?page_size=2").json()["count"] == 4


def test_agent_list_queries_stay_constant(client, personas, django_assert_max_num_queries):
    client.force_login(personas.admin)
    client.get(AGENTS)
    server = make_server(personas.org_a)

    def add(count):
        for _ in range(count):
            master, supervisor, _worker = make_chain(personas.org_a)
            Agent.objects.filter(pk=master.pk).update(
                created_by=personas.manager, approved_by=personas.admin, server=server
            )
            pending = make_agent(
                personas.org_a,
                role=AgentRole.WORKER,
                parent=supervisor,
                status="PENDING_VALIDATION",
            )
            make_request(pending, requested_by=personas.manager)

    add(2)
    with django_assert_max_num_queries(12) as few:
        response = client.get(AGENTS)
        assert response.status_code == 200
    assert any(row["pending_approval"] for row in response.json()["results"])
    add(10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(AGENTS).json()["count"] == 48


def _tree_names(nodes):
    return [(node["name"], _tree_names(node["children"])) for node in nodes]


def test_the_tree(client, personas, django_assert_max_num_queries):
    boss = make_agent(personas.org_a, name="A boss")
    lead = make_agent(personas.org_a, name="B lead", role=AgentRole.SUPERVISOR, parent=boss)
    make_agent(personas.org_a, name="D hand", role=AgentRole.WORKER, parent=lead)
    make_agent(personas.org_a, name="C hand", role=AgentRole.WORKER, parent=lead)
    make_agent(personas.org_a, name="E solo", role=AgentRole.WORKER, parent=boss)
    make_agent(personas.org_a, name="F alone", status=AgentStatus.INACTIVE)
    make_agent(personas.org_b, name="Z foreign")
    client.force_login(personas.viewer)

    response = client.get(f"{AGENTS}tree/")
    assert response.status_code == 200, response.content
    tree = response.json()
    assert _tree_names(tree) == [
        ("A boss", [("B lead", [("C hand", []), ("D hand", [])]), ("E solo", [])]),
        ("F alone", []),
    ]
    assert tree[1] == {
        "id": Agent.objects.get(name="F alone").pk,
        "name": "F alone",
        "role": AgentRole.MASTER,
        "status": AgentStatus.INACTIVE,
        "children": [],
    }
    # Filters are for lists: the tree is always whole.
    assert len(client.get(f"{AGENTS}tree/?role=WORKER").json()) == 2

    with django_assert_max_num_queries(12) as few:
        client.get(f"{AGENTS}tree/")
    for _ in range(10):
        make_chain(personas.org_a)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(client.get(f"{AGENTS}tree/").json()) == 12


def test_an_agent_whose_parent_is_hidden_is_a_root(client, personas, monkeypatch):
    boss = make_agent(personas.org_a, name="Hidden boss")
    make_agent(personas.org_a, name="Visible lead", role=AgentRole.SUPERVISOR, parent=boss)
    original = OrgQuerySet.for_user

    def hiding_the_boss(queryset, principal, action):
        visible = original(queryset, principal, action)
        return visible.exclude(pk=boss.pk) if queryset.model is Agent else visible

    monkeypatch.setattr(OrgQuerySet, "for_user", hiding_the_boss)
    client.force_login(personas.viewer)
    assert _tree_names(client.get(f"{AGENTS}tree/").json()) == [("Visible lead", [])]


def test_effective_tools(client, personas):
    master, supervisor, worker = make_chain(personas.org_a)
    server = make_server(personas.org_a, name="Home")
    shared = make_tool(server, "a_shared")
    master_only = make_tool(server, "b_master_only")
    drifted = make_tool(server, "c_drifted")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}}
    grant_down(shared, master, supervisor)
    own = make_grant(worker, shared, max_calls_per_hour=7, argument_schema=schema)
    make_grant(master, master_only)
    make_grant(worker, master_only)
    grant_down(drifted, master, supervisor, worker)
    Tool.objects.filter(pk=drifted.pk).update(state=ToolState.CHANGED)
    client.force_login(personas.viewer)

    response = client.get(f"{AGENTS}{worker.pk}/effective-tools/")
    assert response.status_code == 200, response.content
    rows = {row["tool"]["name"]: row for row in response.json()}
    assert set(rows) == {"a_shared", "b_master_only", "c_drifted"}
    assert rows["a_shared"] == {
        "tool": {"id": shared.pk, "name": "a_shared", "server": {"id": server.pk, "name": "Home"}},
        "allowed": True,
        "code": "granted",
        "reason": "granted (within the limits of its parents)",
        "requires_approval": False,
        "max_calls_per_execution": None,
        "max_calls_per_hour": 7,
        "argument_schemas": [schema],
        "own_grant": own.pk,
    }
    assert rows["b_master_only"]["allowed"] is False
    assert rows["b_master_only"]["code"] == "parent_lacks"
    assert supervisor.name in rows["b_master_only"]["reason"]
    assert rows["c_drifted"]["code"] == "tool_changed"
    master_rows = client.get(f"{AGENTS}{master.pk}/effective-tools/").json()
    assert all(row["allowed"] is (row["code"] == "granted") for row in master_rows)
    foreign = make_agent(personas.org_b)
    assert client.get(f"{AGENTS}{foreign.pk}/effective-tools/").status_code == 404


# --- tool grants ---------------------------------------------------------------------------------


def test_a_grant_lifecycle(client, personas):
    master, supervisor, _worker = make_chain(personas.org_a)
    server = make_server(personas.org_a)
    tool = make_tool(server, "lookup")
    make_grant(master, tool, max_calls_per_hour=100)
    client.force_login(personas.manager)

    created = post(
        client,
        GRANTS,
        {
            "agent": supervisor.pk,
            "tool": tool.pk,
            "max_calls_per_hour": 10,
            "argument_schema": {"type": "object"},
            "reason": "Needs it",
        },
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["tool_name"] == "lookup"
    assert body["server"] == server.pk
    assert body["granted_by"] == personas.manager.email
    assert body["allowed"] is True and body["requires_approval"] is False
    assert body["effective"] == {
        "allowed": True,
        "code": "granted",
        "reason": "granted (within the limits of its parents)",
    }
    # A grant grows an approved agent's scope: it waits for approval again.
    supervisor.refresh_from_db()
    assert supervisor.status == AgentStatus.PENDING_VALIDATION

    url = f"{GRANTS}{body['id']}/"
    narrowed = patch(client, url, {"max_calls_per_hour": 5, "reason": "Less"})
    assert narrowed.status_code == 200, narrowed.content
    assert narrowed.json()["max_calls_per_hour"] == 5
    same_agent = patch(client, url, {"agent": supervisor.pk, "allowed": False})
    assert same_agent.status_code == 200, same_agent.content
    assert same_agent.json()["effective"]["code"] == "denied"
    whole = put(client, url, {"agent": supervisor.pk, "tool": tool.pk, "allowed": True})
    assert whole.status_code == 200, whole.content
    assert whole.json()["max_calls_per_hour"] == 5  # left out: kept

    other_tool = make_tool(server)
    assert "cannot change" in field_error(patch(client, url, {"agent": master.pk}), "agent")
    assert "cannot change" in field_error(patch(client, url, {"tool": other_tool.pk}), "tool")
    assert client.delete(url).status_code == 204
    assert not ToolGrant.objects.filter(pk=body["id"]).exists()


BAD_GRANTS = [
    bad(
        "beyond the parent",
        lambda ctx: {"agent": ctx["supervisor"].pk, "tool": ctx["ungranted"].pk},
        "tool",
        "parent {master} may not use",
    ),
    bad(
        "wider limit than the parent",
        lambda ctx: {"agent": ctx["supervisor"].pk, "max_calls_per_hour": 500},
        "max_calls_per_hour",
        "at most 100, the limit of {supervisor}'s parent {master}",
    ),
    bad(
        "no limit under a limited parent",
        lambda ctx: {"agent": ctx["supervisor"].pk},
        "max_calls_per_hour",
        "parent {master}",
    ),
    bad(
        "parent needs approval",
        lambda ctx: {"agent": ctx["worker"].pk, "tool": ctx["guarded"].pk},
        "requires_approval",
        "parent {supervisor} needs approval",
    ),
    bad(
        "already granted",
        lambda ctx: {"agent": ctx["master"].pk},
        "tool",
        "already has a grant",
    ),
    bad(
        "agent of another organization",
        lambda ctx: {"agent": ctx["foreign_agent"].pk},
        "agent",
        "does not exist",
    ),
    bad(
        "tool of another organization",
        lambda ctx: {"tool": ctx["foreign_tool"].pk},
        "tool",
        "does not exist",
    ),
    bad("agent that does not exist", lambda ctx: {"agent": 987654}, "agent", "does not exist"),
    bad("no agent", lambda ctx: {"agent": None}, "agent", "null"),
    bad("removed tool", lambda ctx: {"tool": ctx["removed"].pk}, "tool", "no longer offers"),
    bad("allowed not a boolean", lambda ctx: {"allowed": "maybe"}, "allowed", "boolean"),
    bad(
        "zero calls",
        lambda ctx: {"max_calls_per_execution": 0},
        "max_calls_per_execution",
        "between 1",
    ),
    bad(
        "bad argument schema",
        lambda ctx: {"argument_schema": {"type": "nonsense"}},
        "argument_schema",
        "argument schema",
    ),
    bad("long reason", lambda ctx: {"reason": "r" * 501}, "reason", "500"),
]


@pytest.mark.parametrize(("payload", "field", "message"), BAD_GRANTS)
def test_bad_grant_input_is_a_400_naming_the_field(client, personas, payload, field, message):
    master, supervisor, worker = make_chain(personas.org_a)
    server = make_server(personas.org_a)
    tool, ungranted, guarded, removed = (make_tool(server) for _ in range(4))
    make_grant(master, tool, max_calls_per_hour=100)
    grant_down(guarded, master, supervisor, requires_approval=True)
    Tool.objects.filter(pk=removed.pk).update(state=ToolState.REMOVED)
    foreign_server = make_server(personas.org_b)
    ctx = {
        "master": master,
        "supervisor": supervisor,
        "worker": worker,
        "ungranted": ungranted,
        "guarded": guarded,
        "removed": removed,
        "foreign_agent": make_agent(personas.org_b),
        "foreign_tool": make_tool(foreign_server),
    }
    before = ToolGrant.objects.count()
    client.force_login(personas.manager)
    response = post(client, GRANTS, {"agent": master.pk, "tool": tool.pk, **payload(ctx)})
    expected = message.format(master=master.name, supervisor=supervisor.name, worker=worker.name)
    assert expected in field_error(response, field)
    assert ToolGrant.objects.count() == before


def test_a_per_object_change_grant_is_enough_to_grant_tools(client, personas):
    agent, other = make_agent(personas.org_a), make_agent(personas.org_a)
    tool = make_tool(make_server(personas.org_a))
    client.force_login(personas.viewer)
    assert post(client, GRANTS, {"agent": agent.pk, "tool": tool.pk}).status_code == 403

    org_services.grant(personas.principal("ADMIN"), Action.CHANGE, agent, user=personas.viewer)
    created = post(client, GRANTS, {"agent": agent.pk, "tool": tool.pk})
    assert created.status_code == 201, created.content
    url = f"{GRANTS}{created.json()['id']}/"
    assert patch(client, url, {"max_calls_per_hour": 3}).status_code == 200
    refused = post(client, GRANTS, {"agent": other.pk, "tool": tool.pk})
    assert refused.status_code == 403
    assert "not allowed to change this agent" in refused.json()["detail"]
    theirs = make_grant(other, make_tool(make_server(personas.org_a)))
    assert patch(client, f"{GRANTS}{theirs.pk}/", {"reason": "x"}).status_code == 403
    assert client.delete(url).status_code == 204


def test_the_grant_list_filters(client, personas):
    master, supervisor, _worker = make_chain(personas.org_a)
    first, second = make_server(personas.org_a), make_server(personas.org_a)
    one, two = make_tool(first), make_tool(second)
    grant_down(one, master, supervisor)
    make_grant(master, two, requires_approval=True)
    make_grant(make_agent(personas.org_b), make_tool(make_server(personas.org_b)))
    client.force_login(personas.viewer)

    def pairs(query):
        response = client.get(f"{GRANTS}?{query}")
        assert response.status_code == 200, response.content
        return sorted((row["agent"], row["tool"]) for row in response.json()["results"])

    assert len(pairs("")) == 3
    assert pairs(f"agent={supervisor.pk}") == [(supervisor.pk, one.pk)]
    assert pairs(f"server={second.pk}") == [(master.pk, two.pk)]
    assert pairs("requires_approval=true") == [(master.pk, two.pk)]
    assert pairs(f"tool={one.pk}") == [(master.pk, one.pk), (supervisor.pk, one.pk)]


def test_grant_list_queries_stay_constant(client, personas, django_assert_max_num_queries):
    client.force_login(personas.admin)
    client.get(GRANTS)
    server = make_server(personas.org_a)

    def add(count):
        for _ in range(count):
            chain = make_chain(personas.org_a)
            for tool in (make_tool(server), make_tool(server)):
                for grant in grant_down(tool, *chain):
                    ToolGrant.objects.filter(pk=grant.pk).update(granted_by=personas.manager)

    add(1)
    with django_assert_max_num_queries(12) as few:
        response = client.get(GRANTS)
    assert all(row["effective"]["allowed"] for row in response.json()["results"])
    add(8)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(GRANTS).json()["count"] == 54


# --- approvals -----------------------------------------------------------------------------------


def test_approval_by_session_with_four_eyes(client, personas):
    assert personas.org_a.four_eyes_approval
    client.force_login(personas.manager)
    agent_id = post(client, AGENTS, {"name": "Needs a yes", "role": "MASTER"}).json()["id"]
    request = pending_request(Agent.objects.get(pk=agent_id))
    url = f"{APPROVALS}{request.pk}/"

    own = post(client, f"{url}approve/")
    assert own.status_code == 403
    assert "Four-eyes" in own.json()["detail"]

    client.force_login(personas.admin)
    approved = post(client, f"{url}approve/", {"reason": "Looks right"})
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["status"] == ApprovalStatus.APPROVED
    assert body["decided_by"] == personas.admin.email
    assert body["reason"] == "Looks right"
    agent = client.get(f"{AGENTS}{agent_id}/").json()
    assert agent["status"] == AgentStatus.ACTIVE
    assert agent["approved_by"] == personas.admin.email
    assert agent["pending_approval"] is None
    assert post(client, f"{url}approve/").status_code == 409
    assert post(client, f"{url}reject/", {"reason": "Too late"}).status_code == 409


def test_an_api_key_never_decides(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(agent, requested_by=personas.manager)
    _key, secret = org_services.create_api_key(
        personas.principal("ADMIN"), "all", scopes=["read", "write", "execute", "admin"]
    )
    url = f"{APPROVALS}{request.pk}/"
    assert client.get(url, **bearer(secret)).status_code == 200
    for verb, body in (("approve", {}), ("reject", {"reason": "No"})):
        refused = post(client, f"{url}{verb}/", body, **bearer(secret))
        assert refused.status_code == 403, refused.content
        assert "not possible with an API key; use the console" in refused.json()["detail"]
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    foreign = make_request(make_agent(personas.org_b, status=AgentStatus.PENDING_VALIDATION))
    assert post(client, f"{APPROVALS}{foreign.pk}/approve/", **bearer(secret)).status_code == 404


def test_only_approvers_decide(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(agent, requested_by=personas.admin)
    url = f"{APPROVALS}{request.pk}/approve/"
    for user in (personas.viewer, personas.operator):
        client.force_login(user)
        assert post(client, url).status_code == 403
    client.force_login(personas.manager)
    assert post(client, url).status_code == 200
    client.force_login(personas.outsider)
    assert post(client, url).status_code == 404


def test_reject_needs_a_reason(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(agent, requested_by=personas.manager)
    client.force_login(personas.admin)
    url = f"{APPROVALS}{request.pk}/reject/"
    for body in ({}, {"reason": "   "}):
        assert "Say why" in field_error(post(client, url, body), "reason")
    rejected = post(client, url, {"reason": "Too wide"})
    assert rejected.status_code == 200, rejected.content
    assert rejected.json()["status"] == ApprovalStatus.REJECTED
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION
    assert "Too wide" in agent.status_reason


def test_an_expired_request_cannot_be_decided(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(
        agent, requested_by=personas.manager, expires_at=timezone.now() - timedelta(minutes=1)
    )
    client.force_login(personas.admin)
    refused = post(client, f"{APPROVALS}{request.pk}/approve/")
    assert refused.status_code == 409
    assert "expired" in refused.json()["detail"]
    request.refresh_from_db()
    assert request.status == ApprovalStatus.EXPIRED  # recorded, not rolled back
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PENDING_VALIDATION


def test_only_the_requester_withdraws(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(agent, requested_by=personas.operator)
    url = f"{APPROVALS}{request.pk}/withdraw/"
    client.force_login(personas.admin)
    refused = post(client, url)
    assert refused.status_code == 403
    assert "Only the person who made a request" in refused.json()["detail"]
    client.force_login(personas.operator)
    withdrawn = post(client, url, {"reason": "Changed my mind"})
    assert withdrawn.status_code == 200, withdrawn.content
    assert withdrawn.json()["status"] == ApprovalStatus.WITHDRAWN
    assert withdrawn.json()["reason"] == "Changed my mind"
    assert post(client, url).status_code == 409


def test_a_tool_change_is_approved_through_its_request(client, personas):
    server = make_server(personas.org_a)
    tool = make_tool(server, "shifty")
    Tool.objects.filter(pk=tool.pk).update(state=ToolState.CHANGED, definition_hash="0" * 64)
    services.sync_tool_change_requests(server)
    request = ApprovalRequest.objects.get(tool=tool, kind=ApprovalKind.TOOL_CHANGE)
    client.force_login(personas.manager)
    detail = client.get(f"{APPROVALS}{request.pk}/").json()
    assert detail["tool"] == tool.pk and detail["agent"] is None
    assert detail["requested_by"] is None and detail["requested_via"] == "system"
    approved = post(client, f"{APPROVALS}{request.pk}/approve/")
    assert approved.status_code == 200, approved.content
    tool.refresh_from_db()
    assert tool.state == ToolState.ACTIVE


def test_approval_list_and_detail(client, personas, django_assert_max_num_queries):
    pending = make_request(
        make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION),
        requested_by=personas.manager,
        summary="Activate a new agent",
    )
    decided = make_request(
        make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION),
        status=ApprovalStatus.REJECTED,
        decided_by=personas.admin,
    )
    server = make_server(personas.org_a)
    tool = make_tool(server)
    Tool.objects.filter(pk=tool.pk).update(state=ToolState.CHANGED, definition_hash="1" * 64)
    services.sync_tool_change_requests(server)
    make_request(make_agent(personas.org_b, status=AgentStatus.PENDING_VALIDATION))
    client.force_login(personas.viewer)

    def ids(query):
        response = client.get(f"{APPROVALS}?{query}")
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert len(ids("")) == 3
    assert ids("status=rejected") == [decided.pk]
    assert ids(f"status=pending&kind={ApprovalKind.AGENT_ACTIVATION}") == [pending.pk]
    assert len(ids(f"kind={ApprovalKind.TOOL_CHANGE}")) == 1
    assert ids(f"agent={pending.agent_id}") == [pending.pk]
    assert client.get(f"{APPROVALS}?status=maybe").status_code == 400
    listed = client.get(APPROVALS).json()["results"][0]
    assert "snapshot" not in listed and "changes" in listed

    detail = client.get(f"{APPROVALS}{pending.pk}/").json()
    assert detail["snapshot"] == pending.snapshot
    assert detail["snapshot_hash"] == pending.snapshot_hash
    assert detail["requested_by"] == personas.manager.email
    assert detail["agent"] == pending.agent_id
    assert detail["target_label"] == pending.agent.name
    assert detail["summary"] == "Activate a new agent"
    assert detail["expires_at"] and detail["changes"] == []
    assert client.get(f"{APPROVALS}{decided.pk}/").json()["decided_by"] == personas.admin.email

    with django_assert_max_num_queries(12) as few:
        client.get(APPROVALS)
    for _ in range(10):
        make_request(
            make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION),
            requested_by=personas.manager,
            decided_by=personas.admin,
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(APPROVALS).json()["count"] == 13


def test_openapi_schema_is_still_valid():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_a_read_only_key_cannot_withdraw_its_creators_request(client, personas):
    agent = make_agent(personas.org_a, status=AgentStatus.PENDING_VALIDATION)
    request = make_request(agent, requested_by=personas.manager)
    url = f"{APPROVALS}{request.pk}/withdraw/"
    manager = personas.principal("MANAGER")
    _key, reader = org_services.create_api_key(manager, "reader", scopes=["read"])
    refused = client.post(url, {}, content_type="application/json", **bearer(reader))
    assert refused.status_code == 403
    assert "scopes" in refused.json()["detail"]
    _key, writer = org_services.create_api_key(manager, "writer", scopes=["write"])
    withdrawn = client.post(url, {}, content_type="application/json", **bearer(writer))
    assert withdrawn.status_code == 200, withdrawn.content
    assert withdrawn.json()["status"] == ApprovalStatus.WITHDRAWN
