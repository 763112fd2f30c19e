"""Models of the agents app: agents in their hierarchy, approval requests, tool grants."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from argus.crypto import EncryptedField
from orgs.models import Organization
from orgs.permissions import OrgQuerySet, action_permissions
from tools.models import MCPServer, Tool


class Agent(models.Model):
    """An identity that acts: it calls tools under grants bounded by its parent's.

    A new agent is ``PENDING_VALIDATION`` until a person approves it; ``approved_scope``
    keeps what was approved, so growing beyond it asks again and narrowing never does.
    ``status`` changes only through the named transitions of ``agents.services``.
    """

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="agents"
    )
    name = models.CharField("name", max_length=100)
    description = models.TextField("description", blank=True)
    role = models.CharField("role", max_length=20, choices=AgentRole.choices)
    parent = models.ForeignKey(
        "self",
        verbose_name="parent",
        # An agent with children cannot go alone (delete_agent re-parents them first); it
        # can go with its organization.
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="children",
    )
    server = models.ForeignKey(
        MCPServer,
        verbose_name="home server",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="agents",
    )
    engine = models.CharField("engine", max_length=20, choices=Engine.choices, default=Engine.PLAN)
    engine_tool = models.ForeignKey(
        Tool,
        verbose_name="prompt tool",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="For the MCP tool engine: the tool of the home server that receives prompts.",
    )
    llm_base_url = models.CharField("LLM base URL", max_length=500, blank=True)
    llm_model = models.CharField("LLM model", max_length=200, blank=True)
    llm_api_key = EncryptedField("LLM API key")
    llm_system_prompt = models.TextField("system prompt", blank=True)
    llm_max_steps = models.PositiveIntegerField("max steps", default=10)
    capabilities = models.JSONField("capability tags", default=list, blank=True)
    max_concurrent_executions = models.PositiveIntegerField("max concurrent executions", default=1)
    max_tool_calls_per_execution = models.PositiveIntegerField(
        "max tool calls per execution", null=True, blank=True, default=100
    )
    max_tool_calls_per_hour = models.PositiveIntegerField(
        "max tool calls per hour", null=True, blank=True
    )
    max_tool_calls_per_day = models.PositiveIntegerField(
        "max tool calls per day", null=True, blank=True
    )

    status = models.CharField(
        "status",
        max_length=20,
        choices=AgentStatus.choices,
        default=AgentStatus.PENDING_VALIDATION,
        editable=False,
    )
    status_reason = models.CharField("last status reason", max_length=500, blank=True)
    status_changed_at = models.DateTimeField("status changed", null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="approved by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    approved_at = models.DateTimeField("approved", null=True, blank=True)
    approved_scope = models.JSONField("approved scope", null=True, blank=True, editable=False)
    # Who widened the scope since it was last approved: with four-eyes on, none of them
    # decides its approval, whoever the request names.
    scope_authors = models.JSONField("widened by", default=list, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="created by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "agent"
        verbose_name_plural = "agents"
        ordering = ["organization_id", "name"]
        default_permissions = ()
        permissions = action_permissions("agent")
        constraints = [
            models.UniqueConstraint(
                Lower("name"),
                "organization",
                name="%(app_label)s_%(class)s_unique_name",
                violation_error_message="An agent with this name already exists.",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=AgentRole.values),
                name="%(app_label)s_%(class)s_role_valid",
                violation_error_message="Unknown role.",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=AgentStatus.values),
                name="%(app_label)s_%(class)s_status_valid",
                violation_error_message="Unknown status.",
            ),
            models.CheckConstraint(
                condition=~models.Q(role=AgentRole.MASTER, parent__isnull=False),
                name="%(app_label)s_%(class)s_master_has_no_parent",
                violation_error_message="A master agent has no parent.",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "name"], name="agents_agent_org_name_idx"),
            models.Index(fields=["organization", "status"], name="agents_agent_org_status_idx"),
        ]

    def __str__(self):
        return self.name

    @property
    def has_llm_api_key(self) -> bool:
        return bool(self.llm_api_key)

    def decrypted_llm_api_key(self) -> str:
        """The LLM API key; call only where the model is called."""
        return self._meta.get_field("llm_api_key").decrypt(self.llm_api_key) or ""


class AgentUserGrant(UserObjectPermissionBase):
    """A per-object grant of an action on an agent (and its tool grants) to one user."""

    content_object = models.ForeignKey(Agent, verbose_name="agent", on_delete=models.CASCADE)

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "agent grant to a user"
        verbose_name_plural = "agent grants to users"


class AgentTeamGrant(GroupObjectPermissionBase):
    """A per-object grant of an action on an agent (and its tool grants) to a team."""

    content_object = models.ForeignKey(Agent, verbose_name="agent", on_delete=models.CASCADE)

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "agent grant to a team"
        verbose_name_plural = "agent grants to teams"


class ToolGrant(models.Model):
    """What an agent may do with one tool. Bounded by the parent's grant: the resolver
    (``agents.services.resolve``) takes the tightest value along the chain."""

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="+"
    )
    agent = models.ForeignKey(
        Agent, verbose_name="agent", on_delete=models.CASCADE, related_name="grants"
    )
    tool = models.ForeignKey(
        Tool, verbose_name="tool", on_delete=models.CASCADE, related_name="agent_grants"
    )
    allowed = models.BooleanField("allowed", default=True)
    requires_approval = models.BooleanField("each call needs approval", default=False)
    max_calls_per_execution = models.PositiveIntegerField(
        "max calls per execution", null=True, blank=True
    )
    max_calls_per_hour = models.PositiveIntegerField("max calls per hour", null=True, blank=True)
    argument_schema = models.JSONField(
        "argument schema",
        null=True,
        blank=True,
        help_text="A JSON Schema the call's arguments must also satisfy.",
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="granted by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reason = models.CharField("reason", max_length=500, blank=True)
    created_at = models.DateTimeField("granted", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    grant_parent = "agent"
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "tool grant"
        verbose_name_plural = "tool grants"
        ordering = ["agent_id", "tool_id"]
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "tool"],
                name="%(app_label)s_%(class)s_unique_tool",
                violation_error_message="This agent already has a grant for this tool.",
            )
        ]
        indexes = [models.Index(fields=["tool", "agent"], name="agents_grant_tool_agent_idx")]

    def __str__(self):
        return f"{self.agent.name} → {self.tool.name}"


class ApprovalRequest(models.Model):
    """A decision a person must make: activating an agent (or growing its scope), a
    changed tool definition, later a single tool call.

    ``snapshot`` is what is being approved and ``snapshot_hash`` its SHA-256: a decision
    applies only if the target still matches it. ``changes`` lists what differs from
    what was approved before (empty for a first request).
    """

    organization = models.ForeignKey(
        Organization,
        verbose_name="organization",
        on_delete=models.CASCADE,
        related_name="approval_requests",
    )
    kind = models.CharField("kind", max_length=20, choices=ApprovalKind.choices)
    agent = models.ForeignKey(
        Agent,
        verbose_name="agent",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="approval_requests",
    )
    tool = models.ForeignKey(
        Tool,
        verbose_name="tool",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="approval_requests",
    )
    target_label = models.CharField("target", max_length=300)
    summary = models.CharField("summary", max_length=500, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="requested by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    requested_via = models.CharField("requested via", max_length=20, blank=True)
    snapshot = models.JSONField("snapshot", default=dict)
    snapshot_hash = models.CharField("snapshot hash", max_length=64)
    changes = models.JSONField("changes", default=list, blank=True)
    status = models.CharField(
        "status", max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="decided by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    decided_at = models.DateTimeField("decided", null=True, blank=True)
    reason = models.TextField("reason", blank=True)
    expires_at = models.DateTimeField("expires")
    created_at = models.DateTimeField("requested", auto_now_add=True)

    # A grant on an agent covers its requests (``approve`` on one agent decides them).
    grant_parent = "agent"
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "approval request"
        verbose_name_plural = "approval requests"
        ordering = ["-created_at", "-id"]
        default_permissions = ()
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=ApprovalKind.values),
                name="%(app_label)s_%(class)s_kind_valid",
                violation_error_message="Unknown kind of approval.",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ApprovalStatus.values),
                name="%(app_label)s_%(class)s_status_valid",
                violation_error_message="Unknown approval status.",
            ),
            # At most one open request per agent activation and per tool change.
            models.UniqueConstraint(
                fields=["agent"],
                condition=models.Q(status="pending", kind="agent_activation"),
                name="%(app_label)s_%(class)s_one_pending_activation",
                violation_error_message="This agent already has a pending approval request.",
            ),
            models.UniqueConstraint(
                fields=["tool"],
                condition=models.Q(status="pending", kind="tool_change"),
                name="%(app_label)s_%(class)s_one_pending_tool_change",
                violation_error_message="This tool already has a pending change request.",
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "status", "-created_at"],
                name="agents_approval_org_status_idx",
            ),
            models.Index(fields=["status", "expires_at"], name="agents_approval_expiry_idx"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.target_label}"

    @property
    def is_pending(self) -> bool:
        return self.status == ApprovalStatus.PENDING
