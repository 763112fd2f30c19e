"""Models of the tools app: MCP servers, their health history and the tool catalog."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from argus.crypto import EncryptedField
from orgs.models import Organization
from orgs.permissions import OrgQuerySet, action_permissions
from tools.choices import Risk, ServerStatus, ToolState, Transport

# The fields that decide how a session is opened: changing one starts new sessions.
CONNECTION_FIELDS = ("transport", "command", "args", "env", "cwd", "url", "headers", "secrets")


class MCPServer(models.Model):
    """An MCP server an organization registered: how to reach it and how it is doing.

    ``secrets`` is one encrypted mapping of names to values; ``${NAME}`` in ``env`` and
    ``headers`` is replaced by the value when a session opens, in the process that opens
    it. Only the names are ever shown (``secret_names``).
    """

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="servers"
    )
    name = models.CharField("name", max_length=100)
    description = models.TextField("description", blank=True)
    transport = models.CharField("transport", max_length=20, choices=Transport.choices)
    command = models.CharField("command", max_length=500, blank=True)
    args = models.JSONField("arguments", default=list, blank=True)
    env = models.JSONField("environment", default=dict, blank=True)
    cwd = models.CharField("working directory", max_length=500, blank=True)
    url = models.CharField("URL", max_length=2000, blank=True)
    headers = models.JSONField("headers", default=dict, blank=True)
    secrets = EncryptedField("secrets")
    secret_names = models.JSONField("secret names", default=list, blank=True, editable=False)
    enabled = models.BooleanField("enabled", default=True)
    check_interval_s = models.PositiveIntegerField("check every (seconds)", default=60)
    timeout_s = models.PositiveIntegerField("timeout (seconds)", default=10)

    status = models.CharField(
        "status", max_length=20, choices=ServerStatus.choices, default=ServerStatus.UNKNOWN
    )
    last_checked_at = models.DateTimeField("last checked", null=True, blank=True)
    last_latency_ms = models.FloatField("last latency (ms)", null=True, blank=True)
    last_error = models.TextField("last error", blank=True)
    next_check_at = models.DateTimeField("next check", null=True, blank=True)
    # A check in progress holds the server until then, so two workers never check it at once.
    check_lease_until = models.DateTimeField("checked until", null=True, blank=True)

    server_name = models.CharField("server name", max_length=200, blank=True)
    server_version = models.CharField("server version", max_length=100, blank=True)
    protocol_version = models.CharField("protocol version", max_length=40, blank=True)
    capabilities = models.JSONField("capabilities", default=dict, blank=True)
    instructions = models.TextField("instructions", blank=True)
    last_synced_at = models.DateTimeField("last synced", null=True, blank=True)
    sync_error = models.TextField("last sync error", blank=True)

    # Bumped whenever a connection field changes: pooled sessions of an older version die.
    config_version = models.PositiveIntegerField("configuration version", default=1)
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
        verbose_name = "MCP server"
        verbose_name_plural = "MCP servers"
        ordering = ["organization_id", "name"]
        default_permissions = ()
        permissions = action_permissions("mcpserver")
        constraints = [
            models.UniqueConstraint(
                Lower("name"),
                "organization",
                name="%(app_label)s_%(class)s_unique_name",
                violation_error_message="A server with this name already exists.",
            ),
            models.CheckConstraint(
                condition=models.Q(transport__in=Transport.values),
                name="%(app_label)s_%(class)s_transport_valid",
                violation_error_message="Unknown transport.",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "name"], name="tools_server_org_name_idx"),
            models.Index(fields=["next_check_at"], name="tools_server_next_check_idx"),
        ]

    def __str__(self):
        return self.name

    @property
    def is_network(self) -> bool:
        return self.transport != Transport.STDIO

    @property
    def endpoint(self) -> str:
        """What to show for where the server is: its URL, or its command line."""
        if self.is_network:
            return self.url
        return " ".join([self.command, *[str(arg) for arg in self.args]])

    def decrypted_secrets(self) -> dict[str, str]:
        """The secret values; call only where a session is opened."""
        return self._meta.get_field("secrets").decrypt(self.secrets) or {}


class MCPServerUserGrant(UserObjectPermissionBase):
    """A per-object grant of an action on a server (and its tools) to one user."""

    content_object = models.ForeignKey(MCPServer, verbose_name="server", on_delete=models.CASCADE)

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "server grant to a user"
        verbose_name_plural = "server grants to users"


class MCPServerTeamGrant(GroupObjectPermissionBase):
    """A per-object grant of an action on a server (and its tools) to a team."""

    content_object = models.ForeignKey(MCPServer, verbose_name="server", on_delete=models.CASCADE)

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "server grant to a team"
        verbose_name_plural = "server grants to teams"


class ServerCheck(models.Model):
    """One health check of a server; the newest ``ARGUS_HEALTH_HISTORY`` are kept."""

    server = models.ForeignKey(
        MCPServer, verbose_name="server", on_delete=models.CASCADE, related_name="checks"
    )
    checked_at = models.DateTimeField("checked at")
    ok = models.BooleanField("succeeded")
    status = models.CharField("status after", max_length=20, choices=ServerStatus.choices)
    latency_ms = models.FloatField("latency (ms)", null=True, blank=True)
    error = models.TextField("error", blank=True)

    class Meta:
        verbose_name = "health check"
        verbose_name_plural = "health checks"
        ordering = ["server_id", "-checked_at"]
        indexes = [
            models.Index(fields=["server", "-checked_at"], name="tools_check_server_time_idx")
        ]

    def __str__(self):
        return f"{self.server_id} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class CatalogEntry(models.Model):
    """What every catalog entry of a server has: a name, a description, when seen."""

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField("name", max_length=200)
    title = models.CharField("title", max_length=200, blank=True)
    description = models.TextField("description", blank=True)
    first_seen_at = models.DateTimeField("first seen")
    last_seen_at = models.DateTimeField("last seen")

    class Meta:
        abstract = True


class Tool(CatalogEntry):
    """A tool a server offers, with the definition that was accepted (pinned).

    ``definition_hash`` is the SHA-256 of the canonical JSON of the current definition;
    when a sync finds it different from ``pinned_hash`` the tool is ``changed`` until a
    person accepts the new definition. A tool that disappears is ``removed``, not
    deleted, so its history stays readable. Grants on its server cover it.
    """

    server = models.ForeignKey(
        MCPServer, verbose_name="server", on_delete=models.CASCADE, related_name="tools"
    )
    input_schema = models.JSONField("input schema", default=dict)
    output_schema = models.JSONField("output schema", null=True, blank=True)
    annotations = models.JSONField("annotations", default=dict, blank=True)
    risk = models.CharField("risk", max_length=10, choices=Risk.choices, default=Risk.HIGH)
    definition_hash = models.CharField("definition hash", max_length=64)
    pinned_hash = models.CharField("pinned hash", max_length=64)
    pinned_definition = models.JSONField("pinned definition", default=dict)
    pinned_at = models.DateTimeField("pinned")
    pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="accepted by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    state = models.CharField(
        "state", max_length=10, choices=ToolState.choices, default=ToolState.ACTIVE
    )
    changed_at = models.DateTimeField("changed", null=True, blank=True)

    grant_parent = "server"
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "tool"
        verbose_name_plural = "tools"
        ordering = ["organization_id", "name", "server_id"]
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["server", "name"],
                name="%(app_label)s_%(class)s_unique_name",
                violation_error_message="This server already has a tool with this name.",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "name"], name="tools_tool_org_name_idx"),
            models.Index(fields=["organization", "state"], name="tools_tool_org_state_idx"),
        ]

    def __str__(self):
        return self.name

    def definition(self) -> dict:
        """The current definition, as hashed (the title is for display only)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
            "annotations": self.annotations,
        }


class Resource(CatalogEntry):
    """A resource a server lists (read-only catalog entry)."""

    server = models.ForeignKey(
        MCPServer, verbose_name="server", on_delete=models.CASCADE, related_name="resources"
    )
    uri = models.CharField("URI", max_length=2000)
    mime_type = models.CharField("MIME type", max_length=200, blank=True)
    removed = models.BooleanField("removed", default=False)

    class Meta:
        verbose_name = "resource"
        verbose_name_plural = "resources"
        ordering = ["server_id", "uri"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "uri"],
                name="%(app_label)s_%(class)s_unique_uri",
                violation_error_message="This server already lists a resource with this URI.",
            )
        ]

    def __str__(self):
        return self.uri


class Prompt(CatalogEntry):
    """A prompt a server lists (read-only catalog entry)."""

    server = models.ForeignKey(
        MCPServer, verbose_name="server", on_delete=models.CASCADE, related_name="prompts"
    )
    arguments = models.JSONField("arguments", default=list, blank=True)
    removed = models.BooleanField("removed", default=False)

    class Meta:
        verbose_name = "prompt"
        verbose_name_plural = "prompts"
        ordering = ["server_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "name"],
                name="%(app_label)s_%(class)s_unique_name",
                violation_error_message="This server already lists a prompt with this name.",
            )
        ]

    def __str__(self):
        return self.name
