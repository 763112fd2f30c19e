"""Permission suites of the agents models (see tests/support/permission_suite.py)."""

import itertools

from agents.models import Agent, ApprovalRequest, ToolGrant
from tests.agents.factories import make_agent, make_grant, make_request, make_server, make_tool
from tests.support.permission_suite import MANAGER_UP, PermissionSuite, register

_serial = itertools.count(1)


def _granted(organization) -> ToolGrant:
    return make_grant(make_agent(organization), make_tool(make_server(organization)))


def _grant_payload(personas) -> dict:
    agent = make_agent(personas.org_a)
    tool = make_tool(make_server(personas.org_a))
    return {"agent": agent.pk, "tool": tool.pk, "reason": "needed"}


register(
    PermissionSuite(
        model=Agent,
        make=lambda personas, organization: make_agent(organization),
        rights={},
        create_rights=MANAGER_UP,
        api="/api/v1/agents/",
        create_payload=lambda personas: {"name": f"created {next(_serial)}", "role": "MASTER"},
        update_payload=lambda personas, obj: {"description": "changed"},
        api_delete=True,
        console_urls=[
            ("agents:agent_detail", "get"),
            ("agents:agent_edit", "get"),
            ("agents:agent_edit", "post"),
            ("agents:agent_delete", "get"),
            ("agents:agent_delete", "post"),
            ("agents:agent_suspend", "post"),
            ("agents:agent_resume", "post"),
            ("agents:agent_recover", "post"),
            ("agents:agent_request_approval", "post"),
            ("agents:agent_access", "get"),
            ("agents:agent_access", "post"),
            ("agents:grant_create", "get"),
            ("agents:grant_create", "post"),
        ],
    )
)

register(
    PermissionSuite(
        model=ToolGrant,
        make=lambda personas, organization: _granted(organization),
        rights={},
        create_rights=MANAGER_UP,
        api="/api/v1/grants/",
        create_payload=_grant_payload,
        update_payload=lambda personas, obj: {"reason": "changed"},
        api_delete=True,
        console_urls=[
            ("agents:grant_edit", "get"),
            ("agents:grant_edit", "post"),
            ("agents:grant_delete", "post"),
        ],
    )
)

register(
    PermissionSuite(
        model=ApprovalRequest,
        make=lambda personas, organization: make_request(
            make_agent(organization, status="PENDING_VALIDATION")
        ),
        rights={},
        api="/api/v1/approvals/",
        console_urls=[
            ("agents:approval_detail", "get"),
            ("agents:approval_approve", "get"),
            ("agents:approval_approve", "post"),
            ("agents:approval_reject", "post"),
            ("agents:approval_withdraw", "post"),
        ],
    )
)
