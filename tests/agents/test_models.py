"""What the database itself guarantees about agents, whatever writes them."""

import pytest
from django.db import IntegrityError, transaction

from agents.choices import AgentRole
from agents.models import Agent
from tests.agents.factories import make_agent, make_chain, make_grant, make_server, make_tool

pytestmark = pytest.mark.django_db


def test_an_organization_goes_with_its_whole_hierarchy(personas):
    _master, _supervisor, worker = make_chain(personas.org_a)
    make_grant(worker, make_tool(make_server(personas.org_a)))
    other = make_agent(personas.org_b)
    personas.org_a.delete()
    assert list(Agent.objects.all()) == [other]


def test_an_agent_with_children_cannot_be_deleted_alone(personas):
    master, _supervisor, _worker = make_chain(personas.org_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        master.delete()
    assert Agent.objects.filter(pk=master.pk).exists()


def test_a_master_with_a_parent_is_refused_by_the_database(personas):
    master = make_agent(personas.org_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_agent(personas.org_a, role=AgentRole.MASTER, parent=master)


def test_names_are_unique_per_organization_whatever_the_case(personas):
    make_agent(personas.org_a, name="Scout")
    make_agent(personas.org_b, name="Scout")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_agent(personas.org_a, name="SCOUT")
