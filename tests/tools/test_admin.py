"""The Django admin of the tools app: servers written through the services with secrets
write-only, the catalog and the health history read-only, drift accepted by an action."""

import json
import sys
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from orgs import services as org_services
from orgs.choices import Role
from orgs.models import AuditEvent, Membership, User
from orgs.permissions import Principal
from tests.support.mcp import demo_command
from tools import services
from tools.choices import ServerStatus, ToolState, Transport
from tools.models import MCPServer, Prompt, Resource, ServerCheck, Tool

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
TOOLS_MODELS = list(apps.get_app_config("tools").get_models())
SECRET = "sk-live-plum-orchard-lantern-42"
HARMLESS = {"command": sys.executable, "args": ["-c", "pass"]}


def url(model, view: str, *args) -> str:
    return reverse(f"admin:tools_{model._meta.model_name}_{view}", args=args)


def last_event(organization) -> AuditEvent:
    return AuditEvent.objects.filter(organization=organization).latest("seq")


@pytest.fixture
def world(organization, member):
    """A server with a secret and a row of every other tools model, made in Acme."""
    boss = User.objects.create_user("ann@acme.test", PASSWORD)
    Membership.objects.create(user=boss, organization=organization, role=Role.ADMIN)
    principal = Principal.member(boss, organization)
    server = services.create_server(
        principal,
        name="local",
        transport=Transport.STDIO,
        env={"API_TOKEN": "${API_TOKEN}"},
        secrets={"API_TOKEN": SECRET},
        **HARMLESS,
    )
    org_services.grant(principal, "operate", server, user=member)
    team = org_services.create_team(principal, "Ops")
    org_services.grant(principal, "view", server, team=team)
    now = timezone.now()
    ServerCheck.objects.create(
        server=server, checked_at=now, ok=True, status=ServerStatus.ONLINE, latency_ms=12.5
    )
    tool = changed_tool(server)
    Resource.objects.create(
        organization=organization,
        server=server,
        uri="file:///readme.md",
        name="readme",
        first_seen_at=now,
        last_seen_at=now,
    )
    Prompt.objects.create(
        organization=organization, server=server, name="greet", first_seen_at=now, last_seen_at=now
    )
    return SimpleNamespace(organization=organization, server=server, tool=tool)


def changed_tool(server: MCPServer, name: str = "echo") -> Tool:
    """A tool whose definition drifted from the accepted one since the last sync."""
    now = timezone.now()
    accepted = {"name": name, "description": "Echo", "inputSchema": {"type": "object"}}
    return Tool.objects.create(
        organization=server.organization,
        server=server,
        name=name,
        description="Echo, and also delete everything",
        input_schema={"type": "object"},
        definition_hash="b" * 64,
        pinned_hash="a" * 64,
        pinned_definition=accepted,
        pinned_at=now,
        state=ToolState.CHANGED,
        changed_at=now,
        first_seen_at=now,
        last_seen_at=now,
    )


def every_page(client):
    """(url, html) of each tools changelist and of each tools row's change page."""
    for model in TOOLS_MODELS:
        for page in [url(model, "changelist")] + [
            url(model, "change", pk) for pk in model._default_manager.values_list("pk", flat=True)
        ]:
            response = client.get(page)
            assert response.status_code == 200, page
            yield page, response.content.decode()


def add_form_data(organization, **changes) -> dict:
    """What the add page posts for a harmless stdio server."""
    data = {
        "organization": organization.pk,
        "name": "local",
        "description": "",
        "enabled": "on",
        "transport": Transport.STDIO,
        "command": HARMLESS["command"],
        "args": json.dumps(HARMLESS["args"]),
        "env": "{}",
        "cwd": "",
        "url": "",
        "headers": "{}",
        "check_interval_s": "60",
        "timeout_s": "10",
        "new_secrets": "",
    }
    data.update(changes)
    return data


def change_form_data(response, **changes) -> dict:
    """What the browser would post back from a server's change page, with ``changes``."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is not None and value is not False:
            data[name] = value
    data.update(changes)
    return data


# --- registration and pages ----------------------------------------------------------------------


def test_every_tools_model_is_registered():
    registered = {model for model in admin.site._registry if model._meta.app_label == "tools"}
    assert registered == set(TOOLS_MODELS)


def test_every_page_renders_and_none_shows_a_secret_or_its_token(staff_client, world):
    token = world.server.secrets
    assert token.startswith("v1:")
    pages = dict(every_page(staff_client))

    assert len(pages) == 2 * len(TOOLS_MODELS)
    server_page = pages[url(MCPServer, "change", world.server.pk)]
    assert "API_TOKEN" in server_page  # the name is shown
    assert "12 ms" in server_page  # the recent checks
    assert ">1 tool</a>" in server_page
    for page, html in pages.items():
        assert SECRET not in html, f"{page} shows a secret value"
        assert token not in html, f"{page} shows the encrypted token"
    assert admin.site._registry[MCPServer].search_fields


@pytest.mark.parametrize(
    ("model", "term", "expected"),
    [
        (MCPServer, "local", 1),
        (MCPServer, "acme", 1),
        (MCPServer, "nothing-by-that-name", 0),
        (Tool, "echo", 1),
        (Resource, "readme", 1),
        (Prompt, "greet", 1),
        (ServerCheck, "local", 1),
    ],
)
def test_changelists_search(staff_client, world, model, term, expected):
    response = staff_client.get(url(model, "changelist"), {"q": term})
    assert response.context["cl"].result_count == expected


def test_changelists_filter(staff_client, world):
    servers = url(MCPServer, "changelist")
    assert staff_client.get(servers, {"transport": "stdio"}).context["cl"].result_count == 1
    assert staff_client.get(servers, {"transport": "sse"}).context["cl"].result_count == 0
    tools = url(Tool, "changelist")
    assert staff_client.get(tools, {"state": "changed"}).context["cl"].result_count == 1
    by_server = {"server__id__exact": world.server.pk}
    assert staff_client.get(tools, by_server).context["cl"].result_count == 1


def test_staff_who_are_not_superusers_see_no_tools_model(client, world):
    clerk = User.objects.create_user("clerk@argus.test", PASSWORD, is_staff=True)
    client.force_login(clerk)
    for model in TOOLS_MODELS:
        assert client.get(url(model, "changelist")).status_code == 403
    response = client.post(
        url(MCPServer, "changelist"),
        {"action": "maintenance_on", "_selected_action": [world.server.pk]},
    )
    assert response.status_code == 403
    world.server.refresh_from_db()
    assert world.server.status != ServerStatus.MAINTENANCE


# --- servers through the services, secrets write-only -------------------------------------------


def test_a_server_added_here_keeps_its_secret_encrypted_and_never_shows_it(
    staff_client, root, organization
):
    response = staff_client.post(
        url(MCPServer, "add"),
        add_form_data(
            organization, env='{"API_TOKEN": "${API_TOKEN}"}', new_secrets=f"API_TOKEN={SECRET}\n"
        ),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    server = MCPServer.objects.get(organization=organization, name="local")
    assert server.decrypted_secrets() == {"API_TOKEN": SECRET}
    assert server.secrets.startswith("v1:") and SECRET not in server.secrets
    assert server.secret_names == ["API_TOKEN"]
    assert server.created_by == root
    event = last_event(organization)
    assert (event.action, event.channel, event.actor) == ("server.create", "admin", root)
    assert event.changes["secrets"] == {"added": ["API_TOKEN"]}
    assert SECRET not in json.dumps(event.changes)

    pages = [
        url(MCPServer, "change", server.pk),
        url(MCPServer, "changelist"),
        url(MCPServer, "history", server.pk),
        url(MCPServer, "delete", server.pk),
        reverse("admin:orgs_auditevent_change", args=[event.pk]),
    ]
    for page in pages:
        html = staff_client.get(page).content.decode()
        assert SECRET not in html and server.secrets not in html, page
    assert "API_TOKEN" in staff_client.get(pages[0]).content.decode()


def test_secrets_change_here_and_the_audit_names_them_without_values(staff_client, root, world):
    server = world.server
    page = staff_client.get(url(MCPServer, "change", server.pk))
    data = change_form_data(
        page,
        env='{"API_TOKEN": "${NEW_TOKEN}"}',
        new_secrets="NEW_TOKEN = fresh-secret-value-7\n\n",
        remove_secrets=["API_TOKEN"],
    )

    response = staff_client.post(url(MCPServer, "change", server.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    server.refresh_from_db()
    assert server.decrypted_secrets() == {"NEW_TOKEN": "fresh-secret-value-7"}
    assert server.secret_names == ["NEW_TOKEN"]
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("server.update", "admin", root)
    assert event.changes["secrets"] == {"added": ["NEW_TOKEN"], "removed": ["API_TOKEN"]}
    assert event.changes["env"] == [{"API_TOKEN": "${API_TOKEN}"}, {"API_TOKEN": "${NEW_TOKEN}"}]
    stored = json.dumps(event.changes)
    assert "fresh-secret-value-7" not in stored and SECRET not in stored
    history = staff_client.get(url(MCPServer, "history", server.pk)).content.decode()
    assert "fresh-secret-value-7" not in history and server.secrets not in history


def test_saving_an_unchanged_server_writes_nothing(staff_client, world):
    seq = last_event(world.organization).seq
    token = world.server.secrets
    page = staff_client.get(url(MCPServer, "change", world.server.pk))

    response = staff_client.post(url(MCPServer, "change", world.server.pk), change_form_data(page))

    assert response.status_code == 302
    world.server.refresh_from_db()
    assert world.server.secrets == token
    assert last_event(world.organization).seq == seq


def test_a_stdio_server_without_a_command_is_a_form_error(staff_client, organization):
    response = staff_client.post(
        url(MCPServer, "add"), add_form_data(organization, command="  ", new_secrets="A=b")
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["command"] == ["A stdio server needs a command to run."]
    assert not MCPServer.objects.exists()
    assert not AuditEvent.objects.filter(organization=organization).exists()


def test_bad_changes_are_form_errors_and_change_nothing(staff_client, world):
    server = world.server
    before = MCPServer.objects.filter(pk=server.pk).values().get()
    seq = last_event(world.organization).seq
    page = staff_client.get(url(MCPServer, "change", server.pk))

    cases = [
        ({"command": ""}, "command", "A stdio server needs a command to run."),
        ({"new_secrets": SECRET}, "new_secrets", "Line 1 is not NAME=value."),
        ({"new_secrets": f"bad-name={SECRET}"}, "new_secrets", None),
        ({"remove_secrets": ["API_TOKEN"]}, "env", None),  # env still refers to it
        ({"transport": Transport.SSE, "url": "ftp://example.com"}, "url", None),
    ]
    for changes, field, message in cases:
        response = staff_client.post(
            url(MCPServer, "change", server.pk), change_form_data(page, **changes)
        )
        assert response.status_code == 200, changes
        errors = response.context["adminform"].form.errors
        assert field in errors, (changes, errors)
        if message:
            assert errors[field] == [message]
        assert SECRET not in response.content.decode()

    assert MCPServer.objects.filter(pk=server.pk).values().get() == before
    assert last_event(world.organization).seq == seq


def test_a_refusal_by_the_service_is_shown_and_rolls_back(staff_client, organization):
    system = Principal.system(organization)
    for name in ("one", "two", "three"):  # the Free plan's limit
        services.create_server(system, name=name, transport=Transport.STDIO, **HARMLESS)
    seq = last_event(organization).seq

    response = staff_client.post(
        url(MCPServer, "add"), add_form_data(organization, new_secrets=f"A={SECRET}"), follow=True
    )

    html = response.content.decode()
    assert "The Free plan allows at most 3 MCP servers" in html
    assert SECRET not in html
    assert MCPServer.objects.count() == 3
    assert last_event(organization).seq == seq


def test_servers_are_deleted_through_the_service(staff_client, root, world):
    other = services.create_server(
        Principal.system(world.organization), name="other", transport=Transport.STDIO, **HARMLESS
    )

    page = staff_client.get(url(MCPServer, "delete", world.server.pk))
    assert page.status_code == 200
    assert "permission to delete" not in page.content.decode()
    response = staff_client.post(url(MCPServer, "delete", world.server.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not MCPServer.objects.filter(pk=world.server.pk).exists()
    assert not Tool.objects.filter(pk=world.tool.pk).exists()
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("server.delete", "admin", root)

    response = staff_client.post(
        url(MCPServer, "changelist"),
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not MCPServer.objects.exists()
    event = last_event(world.organization)
    assert (event.action, event.channel, event.target_id) == (
        "server.delete",
        "admin",
        str(other.pk),
    )


# --- server actions ----------------------------------------------------------------------------


def test_maintenance_goes_on_and_off_through_the_service(staff_client, root, world):
    changelist = url(MCPServer, "changelist")
    selected = {"_selected_action": [world.server.pk]}

    response = staff_client.post(changelist, {"action": "maintenance_on", **selected}, follow=True)
    assert "Put in maintenance: 1." in response.content.decode()
    world.server.refresh_from_db()
    assert world.server.status == ServerStatus.MAINTENANCE
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("server.maintenance", "admin", root)

    again = staff_client.post(changelist, {"action": "maintenance_on", **selected}, follow=True)
    assert "The server is already in maintenance." in again.content.decode()

    staff_client.post(changelist, {"action": "maintenance_off", **selected})
    world.server.refresh_from_db()
    assert world.server.status == ServerStatus.UNKNOWN
    assert last_event(world.organization).changes["status"] == ["MAINTENANCE", "UNKNOWN"]


def test_syncing_the_catalog_reports_what_it_found(staff_client, world):
    argv = demo_command()
    MCPServer.objects.filter(pk=world.server.pk).update(command=argv[0], args=argv[1:])

    response = staff_client.post(
        url(MCPServer, "changelist"),
        {"action": "sync_catalog", "_selected_action": [world.server.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert "Synced local:" in html
    assert Tool.objects.get(server=world.server, name="calculate").state == ToolState.ACTIVE
    # The world's "echo" was accepted with another definition: still awaiting review.
    assert Tool.objects.get(pk=world.tool.pk).state == ToolState.CHANGED


def test_a_failed_sync_is_shown_as_an_error(staff_client, world):
    MCPServer.objects.filter(pk=world.server.pk).update(command="argus-no-such-command", args=[])

    response = staff_client.post(
        url(MCPServer, "changelist"),
        {"action": "sync_catalog", "_selected_action": [world.server.pk]},
        follow=True,
    )

    assert "Could not sync local:" in response.content.decode()
    assert "argus-no-such-command" in response.content.decode()
    world.server.refresh_from_db()
    assert "command not found" in world.server.sync_error


# --- the catalog -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [Tool, Resource, Prompt, ServerCheck], ids=lambda model: model.__name__
)
def test_the_catalog_and_the_health_history_are_read_only(staff_client, world, model):
    obj = model.objects.first()
    before = list(model.objects.values())

    page = staff_client.get(url(model, "change", obj.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert staff_client.get(url(model, "add")).status_code == 403
    assert staff_client.post(url(model, "add"), {"name": "x"}).status_code == 403
    assert staff_client.post(url(model, "change", obj.pk), {"name": "x"}).status_code == 403
    assert staff_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert list(model.objects.values()) == before


def test_tools_cannot_be_added(staff_client, world):
    request = staff_client.get(url(Tool, "changelist")).wsgi_request
    assert admin.site._registry[Tool].has_add_permission(request) is False


def test_accepting_a_changed_definition_pins_it(staff_client, root, world):
    tool = world.tool
    steady = Tool.objects.create(
        **{
            field.attname: getattr(tool, field.attname)
            for field in Tool._meta.concrete_fields
            if field.name != "id"
        }
        | {"name": "steady", "state": ToolState.ACTIVE, "pinned_hash": "b" * 64}
    )

    response = staff_client.post(
        url(Tool, "changelist"),
        {"action": "accept_changed_definitions", "_selected_action": [tool.pk, steady.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert "Accepted: 1." in html and "Skipped 1 with no pending definition change." in html
    tool.refresh_from_db()
    assert (tool.state, tool.pinned_hash, tool.pinned_by) == (ToolState.ACTIVE, "b" * 64, root)
    assert tool.pinned_definition["description"] == "Echo, and also delete everything"
    event = last_event(world.organization)
    assert (event.action, event.channel, event.actor) == ("tool.accept_change", "admin", root)
    assert event.changes == {"pinned_hash": ["a" * 64, "b" * 64]}
