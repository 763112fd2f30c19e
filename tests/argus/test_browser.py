"""The console in a real browser: sign in, then watch a worker's event arrive live."""

import os

import pytest
from django.conf import settings

from tests.support import processes
from tests.support.celery_tasks import publish_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


# `browser` comes last: Playwright runs an event loop in this thread and the ORM refuses
# to run inside one, so the database fixtures must be set up before it starts.
def test_sign_in_and_see_a_worker_event_live(member, organization, tmp_path, browser):
    port = processes.free_port()
    env = processes.child_env()
    base = f"http://127.0.0.1:{port}"

    with (
        processes.web(port, env, tmp_path / "web.log"),
        processes.worker(env, tmp_path / "worker.log"),
    ):
        page = browser.new_page()
        page.goto(f"{base}/")
        assert page.url == f"{base}/accounts/login/?next=/"
        page.fill("input[name=login]", member.email)
        page.fill("input[name=password]", "wrong password")
        page.click("button[type=submit]")
        refused = "text=The email address and/or password you specified are not correct"
        assert page.locator(refused).is_visible()
        page.fill("input[name=password]", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        assert page.locator("h1").inner_text() == "Dashboard"

        page.wait_for_selector("[data-connection-state][data-state=live]", timeout=15000)
        publish_event.delay(organization.pk, "browser.probe", {"hello": "world"})
        item = page.wait_for_selector("[data-events] li:has-text('browser.probe')", timeout=20000)
        assert '{"hello":"world"}' in item.inner_text()
        assert page.locator("[data-empty]").is_hidden()
        page.screenshot(path=os.environ.get("ARGUS_SCREENSHOT", str(tmp_path / "dashboard.png")))
    assert settings.SESSION_COOKIE_NAME in {c["name"] for c in page.context.cookies()}
