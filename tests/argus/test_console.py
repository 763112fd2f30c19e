"""The console shell: login, dashboard, navigation, badges, error pages, static files."""

import re

import pytest
from django.db import models

from argus import events
from argus.choices import badge, register_colors
from orgs.services import SESSION_ORGANIZATION_KEY

pytestmark = pytest.mark.django_db


def test_console_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_login_page_and_bad_credentials(client, member):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content
    refused = client.post(
        "/accounts/login/", {"login": "ada@acme.test", "password": "wrong password"}
    )
    assert refused.status_code == 200
    assert b"The email address and/or password you specified are not correct" in refused.content
    assert "_auth_user_id" not in client.session


def test_login_then_dashboard(client, member, organization):
    response = client.post(
        "/accounts/login/",
        {"login": "ADA@acme.test", "password": "correct horse battery"},
        follow=True,
    )
    assert response.redirect_chain == [("/", 302)]
    html = response.content.decode()
    assert "Acme" in html
    assert re.search(r'class="badge badge-blue"[^>]*>Operator<', html)


def test_navigation_links_only_to_pages_that_exist(client, member):
    client.force_login(member)
    html = client.get("/").content.decode()
    assert re.search(r'<a[^>]+href="/"[^>]+aria-current="page"', html)
    for section in ("Tasks", "Recordings"):
        assert re.search(rf'title="Not available yet"[^>]*>\s*(<[^>]+>\s*)*{section}', html), (
            section
        )
    assert re.search(r'<a class="nav-link" href="/settings/">Settings</a>', html)
    assert re.search(r'<a class="nav-link" href="/agents/">Agents</a>', html)
    assert re.search(r'<a class="nav-link" href="/approvals/">Approvals</a>', html)
    assert re.search(r'<a class="nav-link" href="/servers/">Servers</a>', html)
    assert re.search(r'<a class="nav-link" href="/tools/">Tools</a>', html)


def test_dashboard_renders_recent_events_without_a_socket(client, member, organization):
    stream = events.Stream(organization.pk, "org")
    sent = [events.send_event(stream, "demo.tick", {"n": n}) for n in range(3)]
    client.force_login(member)
    html = client.get("/").content.decode()
    assert f'data-last-id="{sent[-1]["id"]}"' in html
    ids = [int(i) for i in re.findall(r'data-event-id="(\d+)"', html)]
    assert ids[:3] == [sent[2]["id"], sent[1]["id"], sent[0]["id"]]
    assert "{&quot;n&quot;:2}" in html


def test_dashboard_without_organization(client, django_user_model):
    lonely = django_user_model.objects.create_user("lonely@example.test", "pw-pw-pw-pw-pw")
    client.force_login(lonely)
    html = client.get("/").content.decode()
    assert "You are not a member of any organization yet" in html
    assert 'data-topic="org"' not in html


def test_session_cannot_pick_a_foreign_organization(client, outsider, organization):
    client.force_login(outsider)
    session = client.session
    session[SESSION_ORGANIZATION_KEY] = organization.pk
    session.save()
    html = client.get("/").content.decode()
    assert "Other" in html
    assert "Acme" not in html


def test_dashboard_query_count_is_constant(
    client, member, organization, django_assert_max_num_queries
):
    client.force_login(member)
    stream = events.Stream(organization.pk, "org")
    for n in range(30):
        events.send_event(stream, "demo.tick", {"n": n})
    with django_assert_max_num_queries(5):
        assert client.get("/").status_code == 200


def test_not_found_page(client, member):
    client.force_login(member)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"/no/such/page/" in response.content


def test_static_assets_are_served_locally(client):
    for path in (
        "/static/vendor/htmx.min.js",
        "/static/argus/argus.css",
        "/static/argus/realtime.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
    assert client.get("/favicon.ico")["Location"] == "/static/argus/favicon.svg"


def test_admin_for_staff_only(client, member, admin_client):
    assert admin_client.get("/admin/").status_code == 200
    client.force_login(member)
    assert client.get("/admin/").status_code == 302


def test_badge_colours():
    assert badge("MANAGER", "orgs.Role") == ("Manager", "orange")
    assert badge("UNHEARD_OF", "orgs.Role") == ("UNHEARD_OF", "gray")
    with pytest.raises(LookupError, match=r"no badge colours registered for 'nope\.Thing'"):
        badge("X", "nope.Thing")


def test_register_colors_refuses_gaps_and_unknown_colours():
    class Light(models.TextChoices):
        ON = "ON", "On"
        OFF = "OFF", "Off"

    with pytest.raises(ValueError, match=r"no badge colour for \['OFF'\]"):
        register_colors(Light, {Light.ON: "green"})
    with pytest.raises(ValueError, match="unknown colours"):
        register_colors(Light, {Light.ON: "green", Light.OFF: "chartreuse"})


def test_server_error_page_needs_no_context(django_assert_num_queries):
    from django.template.loader import render_to_string

    with django_assert_num_queries(0):
        html = render_to_string("500.html")
    assert "Server error" in html and "/static/argus/argus.css" in html


def test_event_text_is_escaped_on_the_dashboard(client, member, organization):
    stream = events.Stream(organization.pk, "org")
    events.send_event(stream, "<img src=x onerror=alert(1)>", {"html": "<script>x</script>"})
    client.force_login(member)
    html = client.get("/").content.decode()
    assert "<img src=x" not in html and "<script>x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
