"""Identity in a real browser: an invited person signs up and joins; an admin makes an
API key that then works against the API."""

import concurrent.futures
import json
import re
import urllib.request

import pytest

from orgs import services
from orgs.models import Membership
from tests.support import processes
from tests.support.personas import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def in_a_thread(function):
    """Run ORM code while Playwright's event loop owns this thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result()


@pytest.fixture
def token(personas):
    _invitation, token = services.invite(
        personas.principal("ADMIN"), "newcomer@example.test", "OPERATOR"
    )
    return token


def test_invited_person_signs_up_and_joins(token, tmp_path, browser):
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        page.goto(f"{base}/invitations/{token}/")
        assert "Join Alpha" in page.locator("h1").inner_text()
        page.click("a.btn:has-text('Create an account')")
        page.fill("input[name=email]", "newcomer@example.test")
        page.fill("input[name=password1]", PASSWORD)
        page.fill("input[name=password2]", PASSWORD)
        page.click("#main form button[type=submit]")
        # The invitation proved the address: straight back to accept it.
        page.wait_for_url(f"{base}/invitations/{token}/")
        page.click("button:has-text('Accept and join')")
        page.wait_for_url(f"{base}/")
        assert "Welcome to Alpha" in page.content()
        assert page.locator(".topbar .org-name").inner_text() == "Alpha"
    membership = in_a_thread(
        lambda: Membership.objects.select_related("organization").get(
            user__email="newcomer@example.test"
        )
    )
    assert (membership.organization.slug, membership.role) == ("alpha", "OPERATOR")


def test_admin_creates_an_api_key_that_works(personas, tmp_path, browser):
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        page.goto(f"{base}/settings/api-keys/")
        page.fill("input[name=login]", personas.admin.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/settings/api-keys/")
        assert "No API keys yet" in page.content()
        page.click(".page-actions >> text=New API key")
        page.fill("input[name=name]", "deploy bot")
        page.check("input[name=scopes][value=read]")
        page.click("#main form button[type=submit]")
        secret = page.input_value("[data-api-key-secret]")
        assert re.fullmatch(r"argus_sk_[A-Za-z0-9_-]{43,}", secret)
        page.click("a.btn:has-text('Done')")
        assert secret not in page.content()
        assert "deploy bot" in page.content()

        request = urllib.request.Request(  # noqa: S310 - the test's own server
            f"{base}/api/v1/me/", headers={"Authorization": f"Bearer {secret}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            me = json.load(response)
        assert (me["email"], me["organization"]["slug"]) == (personas.admin.email, "alpha")
        page.reload()
        assert re.search(r">\s*1\s*<", page.locator("#main table tbody tr").inner_html())
