"""Servers in a real browser: register the demo server, test it before saving, sync it,
and call one of its tools with "Try it"."""

import threading

import pytest

from tests.support import processes
from tests.support.mcp import ROOT, demo_command
from tests.support.personas import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_admin_registers_tests_syncs_and_tries_a_server(personas, tmp_path, browser):
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    command, *args = demo_command()
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        page.goto(f"{base}/servers/")
        page.fill("input[name=login]", personas.admin.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/servers/")
        assert "No servers yet" in page.content()
        page.click(".page-actions >> text=Register a server")
        page.wait_for_url(f"{base}/servers/new/")

        page.fill("input[name=name]", "demo")
        page.select_option("select[name=transport]", "streamable_http")
        assert page.is_visible("input[name=url]") and not page.is_visible("input[name=command]")
        page.select_option("select[name=transport]", "stdio")
        assert page.is_visible("input[name=command]") and not page.is_visible("input[name=url]")
        page.fill("input[name=command]", command)
        page.fill("textarea[name=args]", "\n".join(args))
        page.fill("input[name=cwd]", str(ROOT))
        page.fill("textarea[name=secrets]", "API_TOKEN=browser-secret-value")

        page.click("button:has-text('Test connection')")
        result = page.wait_for_selector("#test-result [data-test-result]", timeout=30_000)
        assert result.get_attribute("data-test-result") == "ok", result.inner_text()
        assert "argus-demo" in result.inner_text()
        assert page.url == f"{base}/servers/new/"  # tested, not saved

        page.click("button:has-text('Register server')")
        page.wait_for_url(f"{base}/servers/*/")
        assert "Server demo registered" in page.content()
        assert "API_TOKEN" in page.content() and "browser-secret-value" not in page.content()

        page.click(".page-actions button:has-text('Sync')")
        page.wait_for_selector(".message-success:has-text('Synced demo')", timeout=30_000)
        page.get_by_role("link", name="echo", exact=True).click()
        page.wait_for_selector("h1:has-text('echo')")

        page.fill("input[name=arguments-text]", "hello from the browser")
        page.click("button:has-text('Call echo')")
        call = page.wait_for_selector("[data-call-result]", timeout=30_000)
        assert call.get_attribute("data-call-result") == "ok"
        assert "hello from the browser" in call.inner_text()
        # The panel was swapped in place by htmx: still the tool's page.
        assert "/try/" not in page.url


@pytest.fixture
def watched(personas):
    from tests.tools.factories import make_server

    return make_server(personas.org_a, name="watched")


def test_the_server_list_follows_status_changes_live(personas, watched, tmp_path, browser):
    """Without reloading: another person puts a server in maintenance, the list shows it."""
    from tools import services

    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        page.goto(f"{base}/servers/")
        page.fill("input[name=login]", personas.viewer.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/servers/")
        page.wait_for_selector("#server-table :text('Unknown')")
        page.wait_for_function("window.Argus && window.Argus.realtime.state === 'live'")

        # The ORM refuses to run on Playwright's event loop: another person, another thread.
        def maintain():
            services.set_maintenance(personas.principal("MANAGER"), watched, True, "upgrade")

        elsewhere = threading.Thread(target=maintain)
        elsewhere.start()
        elsewhere.join(15)
        page.wait_for_selector("#server-table :text('Maintenance')", timeout=15_000)
