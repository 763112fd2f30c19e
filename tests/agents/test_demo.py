"""The demo organization's agents (seeded by ``argus up``)."""

import pytest

from agents import services
from agents.choices import AgentStatus, ApprovalStatus
from agents.models import Agent, ApprovalRequest
from tools.services import seed_demo_server

pytestmark = pytest.mark.django_db


def test_the_demo_agents_form_a_hierarchy_on_the_demo_tools(personas):
    organization = personas.org_b
    organization.four_eyes_approval = False
    organization.save()
    server = seed_demo_server(organization)
    agents = services.seed_demo_agents(organization, server, personas.outsider)
    by_name = {agent.name: agent for agent in agents}
    assert set(by_name) == {"Orchestrator", "Research lead", "Weather worker", "Calculator"}
    assert by_name["Research lead"].parent == by_name["Orchestrator"]
    assert by_name["Weather worker"].status == AgentStatus.ACTIVE
    assert by_name["Calculator"].status == AgentStatus.PENDING_VALIDATION
    assert ApprovalRequest.objects.filter(
        agent=by_name["Calculator"], status=ApprovalStatus.PENDING
    ).exists()

    weather = server.tools.get(name="get_weather")
    permission = services.resolve(by_name["Weather worker"], weather)
    assert permission.allowed
    assert permission.max_calls_per_hour == 30
    # The worker holds nothing its parent does not: echo is not its own.
    assert not services.resolve(by_name["Weather worker"], server.tools.get(name="echo")).allowed

    # Seeding again adds nothing.
    assert services.seed_demo_agents(organization, server, personas.outsider) == []
    assert Agent.objects.filter(organization=organization).count() == 4
