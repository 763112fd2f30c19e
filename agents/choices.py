"""Vocabularies of the agents app, with the badge colours the console renders them in."""

from django.db import models

from argus.choices import register_colors


class AgentRole(models.TextChoices):
    """Where an agent sits in the hierarchy."""

    MASTER = "MASTER", "Master"
    SUPERVISOR = "SUPERVISOR", "Supervisor"
    WORKER = "WORKER", "Worker"


# The roles a parent of each role may have; a MASTER has no parent.
PARENT_ROLES: dict[str, tuple[str, ...]] = {
    AgentRole.MASTER: (),
    AgentRole.SUPERVISOR: (AgentRole.MASTER,),
    AgentRole.WORKER: (AgentRole.SUPERVISOR, AgentRole.MASTER),
}

AGENT_ROLE_COLORS = register_colors(
    AgentRole,
    {AgentRole.MASTER: "purple", AgentRole.SUPERVISOR: "blue", AgentRole.WORKER: "teal"},
)


class AgentStatus(models.TextChoices):
    """Where an agent stands; only the named transitions in services change it."""

    PENDING_VALIDATION = "PENDING_VALIDATION", "Pending validation"
    ACTIVE = "ACTIVE", "Active"
    BUSY = "BUSY", "Busy"
    INACTIVE = "INACTIVE", "Inactive"
    ERROR = "ERROR", "Error"


# The statuses in which an agent may act (call tools).
RUNNABLE = frozenset({AgentStatus.ACTIVE, AgentStatus.BUSY})

AGENT_STATUS_COLORS = register_colors(
    AgentStatus,
    {
        AgentStatus.PENDING_VALIDATION: "orange",
        AgentStatus.ACTIVE: "green",
        AgentStatus.BUSY: "blue",
        AgentStatus.INACTIVE: "gray",
        AgentStatus.ERROR: "red",
    },
)


class Transition(models.TextChoices):
    """The named status transitions (``agents.services.TRANSITIONS`` says from where)."""

    ACTIVATE = "activate", "activate"
    REQUIRE_VALIDATION = "require_validation", "require validation"
    SUSPEND = "suspend", "suspend"
    RESUME = "resume", "resume"
    START_WORK = "start_work", "start work"
    FINISH_WORK = "finish_work", "finish work"
    FAIL = "fail", "fail"
    RECOVER = "recover", "recover"


class Engine(models.TextChoices):
    """What drives an agent through a task."""

    PLAN = "plan", "Plan (explicit tool-call steps)"
    MCP_TOOL = "mcp_tool", "MCP tool (the prompt goes to one tool)"
    LLM = "llm", "LLM (a model drives a tool loop)"


class ApprovalKind(models.TextChoices):
    """What an approval request asks a person to decide."""

    AGENT_ACTIVATION = "agent_activation", "Agent activation"
    TOOL_CALL = "tool_call", "Tool call"
    TOOL_CHANGE = "tool_change", "Tool definition change"


APPROVAL_KIND_COLORS = register_colors(
    ApprovalKind,
    {
        ApprovalKind.AGENT_ACTIVATION: "purple",
        ApprovalKind.TOOL_CALL: "blue",
        ApprovalKind.TOOL_CHANGE: "orange",
    },
)


class ApprovalStatus(models.TextChoices):
    """Where an approval request stands; only ``pending`` ones can be decided."""

    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    WITHDRAWN = "withdrawn", "Withdrawn"


APPROVAL_STATUS_COLORS = register_colors(
    ApprovalStatus,
    {
        ApprovalStatus.PENDING: "orange",
        ApprovalStatus.APPROVED: "green",
        ApprovalStatus.REJECTED: "red",
        ApprovalStatus.EXPIRED: "gray",
        ApprovalStatus.WITHDRAWN: "gray",
    },
)


class Refusal(models.TextChoices):
    """Why the gate refused a tool call (the tasks issue records it on the execution)."""

    ORGANIZATION_PAUSED = "organization_paused", "the organization's agents are paused"
    AGENT_NOT_ACTIVE = "agent_not_active", "the agent is not active"
    NOT_PERMITTED = "not_permitted", "the agent may not use this tool"
    TOOL_UNAVAILABLE = "tool_unavailable", "the tool cannot be called now"
    INVALID_ARGUMENTS = "invalid_arguments", "the arguments are not allowed"
    BUDGET_EXCEEDED = "budget_exceeded", "a call budget is used up"
    LOOP_DETECTED = "loop_detected", "the same call repeats in a loop"
