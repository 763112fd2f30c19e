"""The Django admin of the agents app: agents and grants written through the services
with the LLM API key write-only and the status out of reach of the form, approval
requests decided by actions under the console's rules, and the kill switch."""

import json
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents import services
from agents.admin import OrganizationAdmin as KillSwitchOrganizationAdmin
from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, AgentTeamGrant, AgentUserGrant, ApprovalRequest, ToolGrant
from orgs import services as org_services
from orgs.admin import OrganizationAdmin as BaseOrganizationAdmin
from orgs.choices import Role
from orgs.models import AuditEvent, Membership, Organization
from orgs.permissions import Principal
from tests.agents.factories import (
    grant_down,
    make_agent,
    make_chain,
    make_grant,
    make_request,
    make_server,
    make_tool,
)

pytestmark = pytest.mark.django_db

AGENTS_MODELS = list(apps.get_app_config("agents").get_models())
SECRET = "sk-live-walnut-harbour-compass-93"
ROOT = "root@argus.test"


def url(model, view: str, *args) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def last_event(organization) -> AuditEvent:
    return AuditEvent.objects.filter(organization=organization).latest("seq")


def act(client, model, action: str, *objs, follow=True):
    """Run a changelist action on ``objs``; the page it lands on."""
    return client.post(
        url(model, "changelist"),
        {"action": action, "_selected_action": [obj.pk for obj in objs]},
        follow=follow,
    )


def html_of(response) -> str:
    return response.content.decode()


@pytest.fixture
def world(personas):
    """In Alpha: a server with two tools, a master → supervisor → worker chain granted
    the first tool down the chain, and an agent with a stored LLM API key, created by
    the manager and waiting for approval; per-object grants on the master."""
    organization = personas.org_a
    server = make_server(organization, name="local")
    echo, shell = make_tool(server, "echo"), make_tool(server, "shell")
    master, supervisor, worker = make_chain(organization)
    master_grant, supervisor_grant, _ = grant_down(
        echo, master, supervisor, worker, max_calls_per_hour=10
    )
    for agent in (master, supervisor, worker):  # approved with their grants
        Agent.objects.filter(pk=agent.pk).update(approved_scope=services.agent_scope(agent))
        agent.refresh_from_db()
    writer = services.create_agent(
        personas.principal("MANAGER"),
        name="Writer",
        role=AgentRole.MASTER,
        llm_model="small",
        llm_api_key=SECRET,
    )
    boss = personas.principal("ADMIN")
    org_services.grant(boss, "operate", master, user=personas.operator)
    org_services.grant(boss, "view", master, team=personas.team_a)
    return SimpleNamespace(
        organization=organization,
        personas=personas,
        server=server,
        echo=echo,
        shell=shell,
        master=master,
        supervisor=supervisor,
        worker=worker,
        master_grant=master_grant,
        supervisor_grant=supervisor_grant,
        writer=writer,
        request=ApprovalRequest.objects.get(agent=writer),
    )


@pytest.fixture
def root_is_admin(root, world):
    """The superuser is also an ADMIN of Alpha, so the admin acts as that member."""
    Membership.objects.create(user=root, organization=world.organization, role=Role.ADMIN)
    return root


def every_page(client):
    """(url, html) of each agents changelist and each agents row's change page."""
    for model in AGENTS_MODELS:
        pks = model._default_manager.values_list("pk", flat=True)
        for page in [url(model, "changelist")] + [url(model, "change", pk) for pk in pks]:
            response = client.get(page)
            assert response.status_code == 200, page
            yield page, html_of(response)


def agent_add_data(organization, **changes) -> dict:
    """What the add page posts for a plain master agent."""
    data = {
        "organization": organization.pk,
        "name": "Planner",
        "description": "",
        "role": AgentRole.MASTER,
        "parent": "",
        "server": "",
        "capabilities": "",
        "engine": Engine.PLAN,
        "engine_tool": "",
        "llm_base_url": "",
        "llm_model": "",
        "new_llm_api_key": "",
        "llm_system_prompt": "",
        "llm_max_steps": "10",
        "max_concurrent_executions": "1",
        "max_tool_calls_per_execution": "100",
        "max_tool_calls_per_hour": "",
        "max_tool_calls_per_day": "",
    }
    data.update(changes)
    return data


def change_form_data(response, **changes) -> dict:
    """What the browser would post back from a change page, with ``changes``."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None and value is not False:
                data[form.add_prefix(name)] = value
    data.update(changes)
    return data


def post_change(client, obj, **changes):
    page = client.get(url(type(obj), "change", obj.pk))
    return client.post(url(type(obj), "change", obj.pk), change_form_data(page, **changes))


# --- registration and pages ----------------------------------------------------------------------


def test_every_agents_model_is_registered_and_the_organization_admin_has_the_kill_switch():
    registered = {model for model in admin.site._registry if model._meta.app_label == "agents"}
    assert registered == set(AGENTS_MODELS)
    organization_admin = admin.site._registry[Organization]
    assert isinstance(organization_admin, KillSwitchOrganizationAdmin)
    assert isinstance(organization_admin, BaseOrganizationAdmin)
    for model in AGENTS_MODELS:
        assert admin.site._registry[model].search_fields, model


def test_every_page_renders_and_none_shows_the_llm_api_key(staff_client, world):
    token = Agent.objects.get(pk=world.writer.pk).llm_api_key
    assert token.startswith("v1:")
    pages = dict(every_page(staff_client))
    pages["organization"] = html_of(
        staff_client.get(url(Organization, "change", world.organization.pk))
    )
    for name in ("history", "delete"):
        pages[name] = html_of(staff_client.get(url(Agent, name, world.writer.pk)))

    assert len(pages) > 2 * len(AGENTS_MODELS) + 3
    writer_page = pages[url(Agent, "change", world.writer.pk)]
    assert "stored (never shown)" in writer_page
    assert 'name="remove_llm_api_key"' in writer_page
    assert 'name="status"' not in writer_page
    assert "Pending validation" in writer_page
    assert "1 pending" in pages[url(Agent, "change", world.writer.pk)]
    request_page = pages[url(ApprovalRequest, "change", world.request.pk)]
    assert "<pre>" in request_page and "max_concurrent_executions" in request_page
    assert "Agents kill switch" in pages["organization"]
    for page, html in pages.items():
        assert SECRET not in html, f"{page} shows the LLM API key"
        assert token not in html, f"{page} shows the encrypted key"


def grow(world, rows: int) -> None:
    """More of every agents row: agents with grants, requests and per-object grants."""
    boss = world.personas.principal("ADMIN")
    for _ in range(rows):
        agent = make_agent(world.organization, role=AgentRole.WORKER, parent=world.master)
        make_grant(agent, world.echo, max_calls_per_hour=5)
        make_request(agent, requested_by=world.personas.manager)
        org_services.grant(boss, "operate", agent, user=world.personas.operator)
        org_services.grant(boss, "view", agent, team=world.personas.team_a)


def count_queries(client, page: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(page).status_code == 200
    return len(queries)


@pytest.mark.parametrize("model", AGENTS_MODELS, ids=lambda model: model.__name__)
def test_changelists_take_as_many_queries_for_many_rows(
    staff_client, world, model, django_assert_max_num_queries
):
    page = url(model, "changelist")
    few = count_queries(staff_client, page)
    grow(world, 6)

    with django_assert_max_num_queries(few):
        response = staff_client.get(page)

    assert response.context["cl"].result_count >= 5


def test_change_pages_take_as_many_queries_for_many_rows(
    staff_client, world, django_assert_max_num_queries
):
    pages = [
        url(Agent, "change", world.master.pk),
        url(ToolGrant, "change", world.supervisor_grant.pk),
        url(ApprovalRequest, "change", world.request.pk),
        url(Organization, "change", world.organization.pk),
    ]
    few = {page: count_queries(staff_client, page) for page in pages}
    grow(world, 6)

    for page in pages:
        with django_assert_max_num_queries(few[page]):
            staff_client.get(page)


@pytest.mark.parametrize(
    ("model", "term", "expected"),
    [
        (Agent, "writer", 1),
        (Agent, "alpha", 4),
        (Agent, "nothing-by-that-name", 0),
        (ToolGrant, "echo", 3),
        (ToolGrant, "shell", 0),
        (ApprovalRequest, "writer", 1),
        (ApprovalRequest, "manager@alpha", 1),
        (AgentUserGrant, "operator@alpha", 1),
        (AgentTeamGrant, "readers", 1),
    ],
)
def test_changelists_search(staff_client, world, model, term, expected):
    response = staff_client.get(url(model, "changelist"), {"q": term})
    assert response.context["cl"].result_count == expected


def test_changelists_filter(staff_client, world):
    agents = url(Agent, "changelist")
    pending = {"status__exact": AgentStatus.PENDING_VALIDATION}
    assert staff_client.get(agents, pending).context["cl"].result_count == 1
    assert staff_client.get(agents, {"role__exact": "WORKER"}).context["cl"].result_count == 1
    assert staff_client.get(agents, {"engine__exact": "llm"}).context["cl"].result_count == 0
    requests = url(ApprovalRequest, "changelist")
    assert staff_client.get(requests, {"status__exact": "pending"}).context["cl"].result_count == 1
    assert staff_client.get(requests, {"status__exact": "approved"}).context["cl"].result_count == 0
    by_kind = {"kind__exact": ApprovalKind.TOOL_CHANGE}
    assert staff_client.get(requests, by_kind).context["cl"].result_count == 0
    by_org = {"organization__id__exact": world.personas.org_b.pk}
    assert staff_client.get(requests, by_org).context["cl"].result_count == 0
    grants = url(ToolGrant, "changelist")
    assert staff_client.get(grants, {"allowed__exact": "1"}).context["cl"].result_count == 3


def test_staff_who_are_not_superusers_see_no_agents_model(client, world):
    clerk = world.personas.admin
    clerk.is_staff = True
    clerk.save(update_fields=["is_staff"])
    client.force_login(clerk)
    for model in AGENTS_MODELS:
        assert client.get(url(model, "changelist")).status_code == 403
    response = client.post(
        url(Agent, "changelist"),
        {"action": "suspend_selected", "_selected_action": [world.master.pk]},
    )
    assert response.status_code == 403
    world.master.refresh_from_db()
    assert world.master.status == AgentStatus.ACTIVE


# --- agents through the services -----------------------------------------------------------------


def test_an_agent_added_here_goes_through_the_service_and_keeps_its_key_secret(
    staff_client, root, world
):
    response = staff_client.post(
        url(Agent, "add"),
        agent_add_data(
            world.organization,
            capabilities="Research, web.search",
            server=world.server.pk,
            new_llm_api_key=SECRET,
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = Agent.objects.get(organization=world.organization, name="Planner")
    assert agent.status == AgentStatus.PENDING_VALIDATION
    assert agent.capabilities == ["research", "web.search"]
    assert agent.created_by == root
    assert agent.decrypted_llm_api_key() == SECRET
    assert SECRET not in agent.llm_api_key
    request = ApprovalRequest.objects.get(agent=agent, status=ApprovalStatus.PENDING)
    assert (request.requested_by, request.requested_via) == (root, "admin")
    created = AuditEvent.objects.get(action="agent.create", target_id=str(agent.pk))
    assert (created.channel, created.actor) == ("admin", root)
    assert created.changes["llm_api_key"] == "set"
    assert SECRET not in json.dumps(created.changes)
    for view in ("change", "history"):
        page = html_of(staff_client.get(url(Agent, view, agent.pk)))
        assert SECRET not in page and agent.llm_api_key not in page


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "  "}, "name", "This field is required."),
        ({"name": "writer"}, "name", "An agent named 'writer' already exists."),
        (
            {"role": AgentRole.WORKER},
            "parent",
            "A worker agent needs a parent: supervisor or master.",
        ),
        ({"role": "BOSS"}, "role", None),
        ({"capabilities": "Bad Tag!"}, "capabilities", None),
        ({"engine": Engine.LLM}, "llm_base_url", "The LLM engine needs a base URL."),
        ({"engine": Engine.MCP_TOOL}, "server", "The MCP tool engine needs a home server."),
        ({"llm_max_steps": "0"}, "llm_max_steps", "Max steps must be between 1 and 500."),
        ({"max_tool_calls_per_day": "-3"}, "max_tool_calls_per_day", None),
        ({"max_concurrent_executions": "many"}, "max_concurrent_executions", None),
    ],
)
def test_bad_agents_are_form_errors_and_create_nothing(
    staff_client, world, changes, field, message
):
    agents = Agent.objects.count()
    seq = last_event(world.organization).seq

    response = staff_client.post(
        url(Agent, "add"),
        agent_add_data(world.organization, new_llm_api_key=SECRET, **changes),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    if message:
        assert errors[field] == [message]
    assert SECRET not in html_of(response)
    assert Agent.objects.count() == agents
    assert last_event(world.organization).seq == seq


def test_an_llm_agent_is_configured_here_and_a_bad_base_url_is_a_form_error(staff_client, world):
    llm = {"engine": Engine.LLM, "llm_model": "llama3"}
    bad = staff_client.post(
        url(Agent, "add"),
        agent_add_data(world.organization, llm_base_url="ftp://127.0.0.1/v1", **llm),
    )
    assert "llm_base_url" in bad.context["adminform"].form.errors

    response = staff_client.post(
        url(Agent, "add"),
        agent_add_data(world.organization, llm_base_url="http://127.0.0.1:11434/v1", **llm),
    )
    assert response.status_code == 302
    assert Agent.objects.get(name="Planner").engine == Engine.LLM


def test_a_parent_in_another_organization_is_refused(staff_client, world):
    stranger = make_agent(world.personas.org_b)

    response = staff_client.post(
        url(Agent, "add"),
        agent_add_data(world.organization, role=AgentRole.SUPERVISOR, parent=stranger.pk),
    )

    errors = response.context["adminform"].form.errors
    assert errors["parent"] == ["The parent must be an agent of this organization."]
    assert not Agent.objects.filter(name="Planner").exists()


def test_a_refusal_by_the_service_is_shown_and_rolls_back(staff_client, world):
    world.organization.plan = "FREE"  # at most 5 agents: Alpha has 4
    world.organization.save(update_fields=["plan"])
    make_agent(world.organization)
    seq = last_event(world.organization).seq

    response = staff_client.post(url(Agent, "add"), agent_add_data(world.organization), follow=True)

    assert "The Free plan allows at most 5 agents" in html_of(response)
    assert not Agent.objects.filter(name="Planner").exists()
    assert last_event(world.organization).seq == seq


def test_the_status_cannot_be_edited_here(staff_client, root, world):
    response = post_change(
        staff_client,
        world.writer,
        description="Writes reports",
        status=AgentStatus.ACTIVE,
        status_reason="typed in",
        approved_scope="{}",
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    writer = Agent.objects.get(pk=world.writer.pk)
    assert writer.description == "Writes reports"
    assert writer.status == AgentStatus.PENDING_VALIDATION
    assert writer.status_reason == ""
    assert writer.approved_scope is None
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("agent.update", "admin", root)
    assert event.changes == {"description": ["", "Writes reports"]}


def test_saving_an_unchanged_agent_writes_nothing(staff_client, world):
    seq = last_event(world.organization).seq
    token = Agent.objects.get(pk=world.writer.pk).llm_api_key

    response = post_change(staff_client, world.writer)

    assert response.status_code == 302
    assert Agent.objects.get(pk=world.writer.pk).llm_api_key == token
    assert last_event(world.organization).seq == seq


def test_the_llm_api_key_is_replaced_and_removed_and_never_echoed(staff_client, world):
    writer = world.writer

    response = post_change(staff_client, writer, new_llm_api_key="sk-second-key-77")
    assert response.status_code == 302
    writer.refresh_from_db()
    assert writer.decrypted_llm_api_key() == "sk-second-key-77"
    assert last_event(world.organization).changes == {"llm_api_key": "replaced"}

    both = post_change(
        staff_client, writer, new_llm_api_key="sk-third-key-88", remove_llm_api_key="on"
    )
    assert both.status_code == 200
    assert both.context["adminform"].form.errors["remove_llm_api_key"] == [
        "Set a new key or remove the stored one, not both."
    ]
    assert "sk-third-key-88" not in html_of(both)

    response = post_change(staff_client, writer, remove_llm_api_key="on")
    assert response.status_code == 302
    writer.refresh_from_db()
    assert (writer.llm_api_key, writer.has_llm_api_key) == ("", False)
    assert last_event(world.organization).changes == {"llm_api_key": "removed"}
    page = html_of(staff_client.get(url(Agent, "change", writer.pk)))
    assert 'name="remove_llm_api_key"' not in page


def test_a_wider_scope_asks_for_approval_again_and_a_narrower_one_does_not(staff_client, world):
    master = world.master

    narrower = post_change(staff_client, master, max_tool_calls_per_execution="50")
    assert narrower.status_code == 302
    master.refresh_from_db()
    assert master.status == AgentStatus.ACTIVE
    assert not ApprovalRequest.objects.filter(agent=master).exists()

    wider = post_change(staff_client, master, max_tool_calls_per_execution="500")
    assert wider.status_code == 302
    master.refresh_from_db()
    assert master.status == AgentStatus.PENDING_VALIDATION
    request = ApprovalRequest.objects.get(agent=master, status=ApprovalStatus.PENDING)
    assert request.changes == [
        {
            "field": "limits.max_tool_calls_per_execution",
            "before": 50,
            "after": 500,
            "grows": True,
        }
    ]


def test_agents_are_deleted_through_the_service_unless_they_have_children(
    staff_client, root, world
):
    seq = last_event(world.organization).seq

    page = staff_client.get(url(Agent, "delete", world.master.pk))
    assert page.status_code == 200
    assert "permission to delete" not in html_of(page)
    refused = staff_client.post(url(Agent, "delete", world.master.pk), {"post": "yes"}, follow=True)

    assert "has children (agent" in html_of(refused)
    assert Agent.objects.filter(pk=world.master.pk).exists()
    assert last_event(world.organization).seq == seq

    response = staff_client.post(url(Agent, "delete", world.worker.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=world.worker.pk).exists()
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("agent.delete", "admin", root)
    request = staff_client.get(url(Agent, "changelist")).wsgi_request
    assert "delete_selected" not in admin.site._registry[Agent].get_actions(request)


# --- agent actions -------------------------------------------------------------------------------


def test_agents_are_suspended_and_resumed_through_the_services(staff_client, root, world):
    response = act(staff_client, Agent, "suspend_selected", world.master, world.writer)

    html = html_of(response)
    assert "Suspended: 1." in html
    assert "Skipped Writer: Cannot suspend Writer: it is pending validation" in html
    world.master.refresh_from_db()
    assert world.master.status == AgentStatus.INACTIVE
    assert world.master.status_reason == f"Suspended from the admin by {ROOT}."
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("agent.suspend", "admin", root)

    response = act(staff_client, Agent, "resume_selected", world.master)
    assert "Resumed: 1." in html_of(response)
    world.master.refresh_from_db()
    assert world.master.status == AgentStatus.ACTIVE
    assert last_event(world.organization).action == "agent.resume"


def test_an_agent_in_error_is_recovered(staff_client, world):
    services.fail_agent(world.worker, "The model timed out.")

    response = act(staff_client, Agent, "recover_selected", world.worker, world.master)

    html = html_of(response)
    assert "Recovered: 1." in html and "Skipped" in html
    world.worker.refresh_from_db()
    assert world.worker.status == AgentStatus.ACTIVE


# --- approval requests ---------------------------------------------------------------------------


def test_approval_requests_are_read_only(staff_client, world):
    request = world.request
    before = list(ApprovalRequest.objects.values())

    page = staff_client.get(url(ApprovalRequest, "change", request.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in html_of(page)
    assert staff_client.get(url(ApprovalRequest, "add")).status_code == 403
    data = {"status": "approved", "reason": "x"}
    assert staff_client.post(url(ApprovalRequest, "change", request.pk), data).status_code == 403
    delete = url(ApprovalRequest, "delete", request.pk)
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert list(ApprovalRequest.objects.values()) == before


@pytest.mark.parametrize("model", [AgentUserGrant, AgentTeamGrant], ids=lambda m: m.__name__)
def test_per_object_grants_are_read_only(staff_client, world, model):
    grant = model.objects.get()
    assert 'name="_save"' not in html_of(staff_client.get(url(model, "change", grant.pk)))
    assert staff_client.post(url(model, "delete", grant.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=grant.pk).exists()


def test_a_member_who_may_approve_approves_from_the_admin(staff_client, root_is_admin, world):
    response = act(staff_client, ApprovalRequest, "approve_selected", world.request)

    assert "Approved: 1." in html_of(response)
    request = ApprovalRequest.objects.get(pk=world.request.pk)
    assert (request.status, request.decided_by) == (ApprovalStatus.APPROVED, root_is_admin)
    assert request.reason == f"Approved from the admin by {ROOT}."
    writer = Agent.objects.get(pk=world.writer.pk)
    assert (writer.status, writer.approved_by) == (AgentStatus.ACTIVE, root_is_admin)
    decided = AuditEvent.objects.get(organization=world.organization, action="approval.approved")
    assert (decided.channel, decided.actor) == ("admin", root_is_admin)

    again = act(staff_client, ApprovalRequest, "approve_selected", world.request)
    assert "This request is already approved." in html_of(again)


def test_a_member_rejects_from_the_admin_with_a_fixed_reason(staff_client, root_is_admin, world):
    response = act(staff_client, ApprovalRequest, "reject_selected", world.request)

    assert "Rejected: 1." in html_of(response)
    request = ApprovalRequest.objects.get(pk=world.request.pk)
    assert request.status == ApprovalStatus.REJECTED
    assert request.reason == f"Rejected from the admin by {ROOT}."
    writer = Agent.objects.get(pk=world.writer.pk)
    assert writer.status == AgentStatus.PENDING_VALIDATION
    assert writer.status_reason == f"Approval rejected: Rejected from the admin by {ROOT}."
    event = last_event(world.organization)
    assert (event.action, event.channel) == ("approval.rejected", "admin")


def test_four_eyes_stops_staff_deciding_what_they_requested(staff_client, root_is_admin, world):
    staff_client.post(url(Agent, "add"), agent_add_data(world.organization))
    mine = ApprovalRequest.objects.get(agent__name="Planner")
    assert mine.requested_by == root_is_admin

    approved = html_of(act(staff_client, ApprovalRequest, "approve_selected", mine, world.request))
    rejected = html_of(act(staff_client, ApprovalRequest, "reject_selected", mine))

    for html in (approved, rejected):
        assert "Skipped Agent activation: Planner: Four-eyes approval is on" in html
    assert "Approved: 1." in approved  # the manager's request, not the staff member's
    mine.refresh_from_db()
    assert mine.status == ApprovalStatus.PENDING
    assert Agent.objects.get(name="Planner").status == AgentStatus.PENDING_VALIDATION

    Organization.objects.filter(pk=world.organization.pk).update(four_eyes_approval=False)
    response = act(staff_client, ApprovalRequest, "approve_selected", mine)
    assert "Approved: 1." in html_of(response)
    assert Agent.objects.get(name="Planner").status == AgentStatus.ACTIVE


def test_a_superuser_outside_the_organization_cannot_decide(staff_client, world):
    response = act(staff_client, ApprovalRequest, "approve_selected", world.request)

    assert "Only a person decides an approval request." in html_of(response)
    assert ApprovalRequest.objects.get(pk=world.request.pk).status == ApprovalStatus.PENDING


def test_a_member_who_may_not_approve_is_refused(staff_client, root, world):
    Membership.objects.create(user=root, organization=world.organization, role=Role.VIEWER)
    # The admin falls back to acting as the system, which never decides.
    response = act(staff_client, ApprovalRequest, "reject_selected", world.request)

    assert "Only a person decides an approval request." in html_of(response)
    assert ApprovalRequest.objects.get(pk=world.request.pk).status == ApprovalStatus.PENDING


# --- tool grants ---------------------------------------------------------------------------------


def grant_add_data(for_agent, of_tool, **changes) -> dict:
    data = {
        "agent": for_agent.pk,
        "tool": of_tool.pk,
        "allowed": "on",
        "max_calls_per_execution": "",
        "max_calls_per_hour": "",
        "argument_schema": "null",
        "reason": "Needed for reports",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_a_grant_added_here_goes_through_the_service(staff_client, root, world):
    response = staff_client.post(
        url(ToolGrant, "add"),
        grant_add_data(world.master, world.shell, argument_schema='{"type": "object"}'),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    grant = ToolGrant.objects.get(agent=world.master, tool=world.shell)
    assert (grant.granted_by, grant.argument_schema) == (root, {"type": "object"})
    assert grant.organization == world.organization
    event = AuditEvent.objects.get(action="grant.create", target_id=str(grant.pk))
    assert (event.channel, event.actor) == ("admin", root)
    # A new tool widens the approved master's scope: it asks again.
    world.master.refresh_from_db()
    assert world.master.status == AgentStatus.PENDING_VALIDATION


def test_a_grant_beyond_the_parent_is_refused_with_a_message(staff_client, world):
    seq = last_event(world.organization).seq

    shell = staff_client.post(
        url(ToolGrant, "add"), grant_add_data(world.supervisor, world.shell), follow=True
    )
    looser = staff_client.post(
        url(ToolGrant, "add"),
        grant_add_data(world.worker, world.shell),
        follow=True,
    )
    wider = post_change(staff_client, world.supervisor_grant, max_calls_per_hour="50")

    parent = world.master.name
    assert f"parent {parent} may not use shell" in html_of(shell)
    assert f"parent {world.supervisor.name} may not use shell" in html_of(looser)
    assert wider.status_code == 302
    wider_page = html_of(staff_client.get(wider.url))
    assert f"at most 10, the limit of {world.supervisor.name}&#x27;s parent {parent}" in wider_page
    assert not ToolGrant.objects.filter(tool=world.shell).exists()
    world.supervisor_grant.refresh_from_db()
    assert world.supervisor_grant.max_calls_per_hour == 10
    assert last_event(world.organization).seq == seq


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"argument_schema": '{"type": "nonsense"}'}, "argument_schema"),
        ({"argument_schema": "{not json"}, "argument_schema"),
        ({"max_calls_per_hour": "-1"}, "max_calls_per_hour"),
        ({"tool": "999999"}, "tool"),
    ],
)
def test_bad_grants_are_form_errors(staff_client, world, changes, field):
    response = staff_client.post(
        url(ToolGrant, "add"), grant_add_data(world.master, world.shell, **changes)
    )

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not ToolGrant.objects.filter(tool=world.shell).exists()


def test_a_tool_of_another_organization_or_a_second_grant_is_a_form_error(staff_client, world):
    foreign = make_tool(make_server(world.personas.org_b), "echo")

    response = staff_client.post(url(ToolGrant, "add"), grant_add_data(world.master, foreign))
    assert response.context["adminform"].form.errors["tool"] == [
        "The tool must belong to the agent's organization."
    ]
    twice = staff_client.post(url(ToolGrant, "add"), grant_add_data(world.master, world.echo))
    assert "This agent already has a grant for this tool." in str(
        twice.context["adminform"].form.errors
    )
    assert ToolGrant.objects.filter(agent=world.master).count() == 1


def test_grants_change_through_the_service_with_agent_and_tool_fixed(staff_client, root, world):
    grant = world.supervisor_grant

    response = post_change(
        staff_client,
        grant,
        max_calls_per_hour="5",
        requires_approval="on",
        agent=world.worker.pk,
        tool=world.shell.pk,
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    grant.refresh_from_db()
    assert (grant.agent, grant.tool) == (world.supervisor, world.echo)
    assert (grant.max_calls_per_hour, grant.requires_approval) == (5, True)
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("grant.update", "admin", root)
    assert event.changes["max_calls_per_hour"] == [10, 5]
    page = html_of(staff_client.get(url(ToolGrant, "change", grant.pk)))
    assert "allowed: granted (within the limits of its parents)" in page


def test_grants_are_revoked_through_the_service(staff_client, root, world):
    response = act(staff_client, ToolGrant, "revoke_selected", world.supervisor_grant)

    assert "Revoked: 1." in html_of(response)
    assert not ToolGrant.objects.filter(pk=world.supervisor_grant.pk).exists()
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("grant.delete", "admin", root)

    response = staff_client.post(url(ToolGrant, "delete", world.master_grant.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not ToolGrant.objects.filter(pk=world.master_grant.pk).exists()
    assert last_event(world.organization).action == "grant.delete"


# --- the kill switch -----------------------------------------------------------------------------


def test_the_kill_switch_is_pulled_and_lifted_with_actions(staff_client, root, world):
    organization = world.organization

    response = act(staff_client, Organization, "pause_agents", organization)

    assert "Agents paused: 1." in html_of(response)
    organization.refresh_from_db()
    assert organization.agents_paused_by == root
    assert organization.agents_paused_reason == f"Paused from the admin by {ROOT}."
    event = last_event(organization)
    assert (event.action, event.channel, event.actor) == (
        "organization.pause_agents",
        "admin",
        root,
    )
    with pytest.raises(services.CallRefused):
        services.authorize_call(world.master, world.echo, {}, execution="x")
    page = html_of(staff_client.get(url(Organization, "change", organization.pk)))
    assert f"Paused from the admin by {ROOT}." in page
    assert 'name="agents_paused_reason"' not in page

    again = act(staff_client, Organization, "pause_agents", organization)
    assert "already paused" in html_of(again)

    response = act(staff_client, Organization, "resume_agents", organization)
    assert "Agents resumed: 1." in html_of(response)
    organization.refresh_from_db()
    assert organization.agents_paused_at is None
    assert last_event(organization).action == "organization.resume_agents"


def test_saving_the_organization_leaves_the_kill_switch_alone(staff_client, world):
    services.pause_agents(Principal.system(world.organization), "Incident 42")
    page = staff_client.get(url(Organization, "change", world.organization.pk))
    data = change_form_data(
        page, name="Alpha Corp", agents_paused_at="", agents_paused_reason="nothing"
    )

    response = staff_client.post(url(Organization, "change", world.organization.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    world.organization.refresh_from_db()
    assert world.organization.name == "Alpha Corp"
    assert world.organization.agents_paused_at is not None
    assert world.organization.agents_paused_reason == "Incident 42"
