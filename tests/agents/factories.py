"""Factories of the agents app's rows, written straight to the database (no services):
for tests about permissions, lists, the resolver and the gate. Tests of the lifecycle
itself go through ``agents.services``."""

import itertools
from datetime import timedelta

from django.utils import timezone

from agents.choices import AgentRole, AgentStatus, ApprovalKind
from agents.models import Agent, ApprovalRequest, ToolGrant
from agents.services import agent_scope, scope_hash
from tests.tools.factories import make_server, make_tool

_serial = itertools.count(1)


def make_agent(organization, *, role=AgentRole.MASTER, parent=None, **fields) -> Agent:
    """An agent; ACTIVE and approved unless ``status`` says otherwise."""
    fields.setdefault("name", f"agent {next(_serial)}")
    fields.setdefault("status", AgentStatus.ACTIVE)
    agent = Agent.objects.create(organization=organization, role=role, parent=parent, **fields)
    if agent.status != AgentStatus.PENDING_VALIDATION:
        agent.approved_scope = agent_scope(agent)
        agent.approved_at = timezone.now()
        agent.save(update_fields=["approved_scope", "approved_at"])
    return agent


def make_chain(organization):
    """A master, a supervisor under it, a worker under that."""
    master = make_agent(organization, role=AgentRole.MASTER)
    supervisor = make_agent(organization, role=AgentRole.SUPERVISOR, parent=master)
    worker = make_agent(organization, role=AgentRole.WORKER, parent=supervisor)
    return master, supervisor, worker


def make_grant(agent: Agent, tool, **fields) -> ToolGrant:
    return ToolGrant.objects.create(
        organization_id=agent.organization_id, agent=agent, tool=tool, **fields
    )


def grant_down(tool, *agents, **fields) -> list[ToolGrant]:
    """The same grant for each agent of a chain."""
    return [make_grant(agent, tool, **fields) for agent in agents]


def make_request(agent: Agent, *, requested_by=None, **fields) -> ApprovalRequest:
    """A pending activation request showing the agent's current scope."""
    scope = agent_scope(agent)
    fields.setdefault("expires_at", timezone.now() + timedelta(days=7))
    return ApprovalRequest.objects.create(
        organization_id=agent.organization_id,
        kind=ApprovalKind.AGENT_ACTIVATION,
        agent=agent,
        target_label=agent.name,
        requested_by=requested_by,
        snapshot=scope,
        snapshot_hash=scope_hash(scope),
        **fields,
    )


__all__ = [
    "grant_down",
    "make_agent",
    "make_chain",
    "make_grant",
    "make_request",
    "make_server",
    "make_tool",
]
