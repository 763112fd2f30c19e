"""Vocabularies of the orgs app, with the badge colours the console renders them in."""

from django.db import models

from argus.choices import register_colors


class Role(models.TextChoices):
    """A member's role in an organization; each grants a baseline of actions."""

    ADMIN = "ADMIN", "Admin"
    MANAGER = "MANAGER", "Manager"
    OPERATOR = "OPERATOR", "Operator"
    VIEWER = "VIEWER", "Viewer"


ROLE_COLORS = register_colors(
    Role, {Role.ADMIN: "red", Role.MANAGER: "orange", Role.OPERATOR: "blue", Role.VIEWER: "gray"}
)


class Plan(models.TextChoices):
    """An organization's plan; ``PLAN_LIMITS`` says what each allows."""

    FREE = "FREE", "Free"
    STARTER = "STARTER", "Starter"
    PRO = "PRO", "Pro"
    ENTERPRISE = "ENTERPRISE", "Enterprise"


PLAN_COLORS = register_colors(
    Plan, {Plan.FREE: "gray", Plan.STARTER: "blue", Plan.PRO: "purple", Plan.ENTERPRISE: "green"}
)


class InvitationStatus(models.TextChoices):
    """Where an invitation stands; ``EXPIRED`` is shown for a pending one past its date."""

    PENDING = "PENDING", "Pending"
    ACCEPTED = "ACCEPTED", "Accepted"
    REVOKED = "REVOKED", "Revoked"
    EXPIRED = "EXPIRED", "Expired"


INVITATION_COLORS = register_colors(
    InvitationStatus,
    {
        InvitationStatus.PENDING: "blue",
        InvitationStatus.ACCEPTED: "green",
        InvitationStatus.REVOKED: "gray",
        InvitationStatus.EXPIRED: "orange",
    },
)


class Scope(models.TextChoices):
    """What an API key may be used for; each scope opens one or more actions."""

    READ = "read", "Read"
    WRITE = "write", "Write"
    EXECUTE = "execute", "Execute"
    ADMIN = "admin", "Admin"


class AuditChannel(models.TextChoices):
    """How an audited change came in."""

    CONSOLE = "console", "Console"
    API = "api", "API"
    MCP = "mcp", "MCP"
    ADMIN = "admin", "Django admin"
    SYSTEM = "system", "System"


AUDIT_CHANNEL_COLORS = register_colors(
    AuditChannel,
    {
        AuditChannel.CONSOLE: "blue",
        AuditChannel.API: "purple",
        AuditChannel.MCP: "teal",
        AuditChannel.ADMIN: "orange",
        AuditChannel.SYSTEM: "gray",
    },
)


class Limit(models.TextChoices):
    """What a plan limits; services that create these things enforce it."""

    MEMBERS = "members", "members"
    SERVERS = "servers", "MCP servers"
    AGENTS = "agents", "agents"
    EXECUTIONS_PER_MONTH = "executions_per_month", "task executions per month"
    RETENTION_DAYS = "retention_days", "days of recording retention"


# None means unlimited.
PLAN_LIMITS: dict[str, dict[str, int | None]] = {
    Plan.FREE: {
        Limit.MEMBERS: 5,
        Limit.SERVERS: 3,
        Limit.AGENTS: 5,
        Limit.EXECUTIONS_PER_MONTH: 1_000,
        Limit.RETENTION_DAYS: 7,
    },
    Plan.STARTER: {
        Limit.MEMBERS: 20,
        Limit.SERVERS: 10,
        Limit.AGENTS: 25,
        Limit.EXECUTIONS_PER_MONTH: 10_000,
        Limit.RETENTION_DAYS: 30,
    },
    Plan.PRO: {
        Limit.MEMBERS: 100,
        Limit.SERVERS: 50,
        Limit.AGENTS: 200,
        Limit.EXECUTIONS_PER_MONTH: 100_000,
        Limit.RETENTION_DAYS: 90,
    },
    Plan.ENTERPRISE: {
        Limit.MEMBERS: None,
        Limit.SERVERS: None,
        Limit.AGENTS: None,
        Limit.EXECUTIONS_PER_MONTH: None,
        Limit.RETENTION_DAYS: 365,
    },
}
