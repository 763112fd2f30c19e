"""Agents in a real browser: a manager creates an agent (the parent choices follow the
role), an admin approves it in the inbox, and the agent page follows status changes
made elsewhere without reloading."""

import threading

import pytest

from tests.support import processes
from tests.support.personas import PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ENABLED_PARENTS = "options => options.filter(o => o.value && !o.disabled).map(o => o.textContent)"


def sign_in(page, base: str, path: str, email: str) -> None:
    page.goto(f"{base}{path}")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")


@pytest.fixture
def chain(personas):
    from agents.choices import AgentRole
    from tests.agents.factories import make_agent

    master = make_agent(personas.org_a, name="Atlas")
    supervisor = make_agent(personas.org_a, name="Beacon", role=AgentRole.SUPERVISOR, parent=master)
    worker = make_agent(personas.org_a, name="Cinder", role=AgentRole.WORKER, parent=supervisor)
    return master, supervisor, worker


def test_manager_creates_an_agent_and_an_admin_approves_it(personas, chain, tmp_path, browser):
    _master, supervisor, _worker = chain
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        sign_in(page, base, "/agents/new/", personas.manager.email)
        page.fill("input[name=name]", "Helper")

        page.select_option("select[name=role]", "MASTER")
        assert page.is_disabled("select[name=parent]")
        assert page.is_visible("[data-parent-hint]")
        page.select_option("select[name=role]", "SUPERVISOR")
        assert not page.is_disabled("select[name=parent]")
        enabled = page.eval_on_selector_all("select[name=parent] option", ENABLED_PARENTS)
        assert enabled == ["Atlas"]
        page.select_option("select[name=role]", "WORKER")
        enabled = page.eval_on_selector_all("select[name=parent] option", ENABLED_PARENTS)
        assert enabled == ["Atlas", "Beacon"]
        page.select_option("select[name=parent]", str(supervisor.pk))
        # The LLM settings show for the LLM engine only.
        assert not page.is_visible("input[name=llm_model]")
        page.select_option("select[name=engine]", "llm")
        assert page.is_visible("input[name=llm_model]")
        page.select_option("select[name=engine]", "plan")

        page.click("button:has-text('Create agent')")
        page.wait_for_url(f"{base}/agents/*/")
        assert "Agent Helper created" in page.content()
        assert page.get_attribute("#agent-status", "data-status") == "PENDING_VALIDATION"
        agent_url = page.url

        admin = browser.new_page()  # a context of its own: another person
        sign_in(admin, base, "/approvals/", personas.admin.email)
        admin.click("#approval-table a:has-text('Activate a new agent')")
        admin.wait_for_selector("h1:has-text('Helper')")
        assert "Beacon" in admin.inner_text("[data-scope]")
        admin.fill("textarea[name=approve-reason]", "Looks right")
        admin.click("button:has-text('Approve')")
        admin.wait_for_selector(".message-success:has-text('Approved: Helper is active')")
        admin.click("[aria-labelledby=request-title] a:has-text('Helper')")
        admin.wait_for_url(agent_url)
        assert admin.get_attribute("#agent-status", "data-status") == "ACTIVE"
        assert admin.inner_text("[data-status-label]") == "Active"


def test_the_agent_page_follows_status_changes_live(personas, chain, tmp_path, browser):
    """Without reloading: an operator suspends the agent elsewhere, the page shows it."""
    from django.db import connection

    from agents import services

    _master, _supervisor, worker = chain
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        sign_in(page, base, f"/agents/{worker.pk}/", personas.viewer.email)
        assert page.get_attribute("#agent-status", "data-status") == "ACTIVE"
        page.wait_for_function("window.Argus && window.Argus.realtime.state === 'live'")

        # The ORM refuses to run on Playwright's event loop: another person, another thread.
        def suspend():
            try:
                services.suspend_agent(
                    personas.principal("OPERATOR"), worker, "suspended elsewhere"
                )
            finally:
                connection.close()  # this thread's own connection

        elsewhere = threading.Thread(target=suspend)
        elsewhere.start()
        elsewhere.join(15)
        page.wait_for_selector("#agent-status[data-status='INACTIVE']", timeout=15_000)
        assert "suspended elsewhere" in page.inner_text("#agent-status")
        assert "agent.status" in page.inner_text("[data-events]")


@pytest.fixture
def tool(personas):
    from tests.agents.factories import make_server, make_tool

    return make_tool(make_server(personas.org_a, name="Files"), "read_file")


def test_the_matrix_edits_cells_in_place(personas, chain, tool, tmp_path, browser):
    master, _supervisor, worker = chain
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    with processes.web(port, processes.child_env(), tmp_path / "web.log"):
        page = browser.new_page()
        sign_in(page, base, "/agents/matrix/", personas.manager.email)
        master_cell = f"[data-cell='{master.pk}-{tool.pk}']"
        page.select_option(f"{master_cell} select", "allow")
        page.wait_for_selector(f"{master_cell}[data-value='allow'][data-effective='allowed']")
        worker_cell = f"[data-cell='{worker.pk}-{tool.pk}']"
        page.select_option(f"{worker_cell} select", "allow")
        error = page.wait_for_selector("[data-matrix-error]")
        assert "Beacon may not use read_file" in error.inner_text()
        assert page.get_attribute(worker_cell, "data-value") == "none"
        assert page.url == f"{base}/agents/matrix/"  # swapped in place
