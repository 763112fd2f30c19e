"""Serializers of the agents endpoints. Writes go through ``agents.services``; these only
shape input and output. The LLM API key is write-only: only ``has_llm_api_key`` comes back.

Related ids (parent, home server, prompt tool, a grant's agent and tool) are looked up
among what the caller may view in its organization, so an id of another organization
is "does not exist", exactly like an id that does not exist.
"""

from collections.abc import Mapping

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.choices import AgentRole, AgentStatus, ApprovalStatus
from agents.models import Agent, ApprovalRequest, ToolGrant
from agents.services import AGENT_FIELDS, GRANT_LIMITS, Resolver
from orgs.permissions import Action
from tools.models import MCPServer, Tool

STATUS_IS_READ_ONLY = (
    "The status changes only through its actions (approve, suspend, resume, recover)."
)
# What the API adds to the fields a person sets (``AGENT_FIELDS``); all read-only.
AGENT_OUTPUTS = (
    "has_llm_api_key",
    "status",
    "status_reason",
    "status_changed_at",
    "created_by",
    "approved_by",
    "approved_at",
    "created_at",
    "updated_at",
    "pending_approval",
    "paused",
)
GRANT_FIELDS = ("allowed", "requires_approval", *GRANT_LIMITS, "argument_schema", "reason")
# Bounds and messages are the services' own (``clean_agent``, ``_clean_grant``).
UNBOUNDED = {"min_value": None, "max_value": None}


def status_field(choices) -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=choices.choices, read_only=True)


def _narrow(serializer: serializers.Serializer, querysets: dict) -> None:
    """Point related fields at what the view's principal may view (nothing without one,
    as when the schema is generated)."""
    principal = getattr(serializer.context.get("view"), "principal", None)
    if principal is None:
        return
    for name, queryset in querysets.items():
        if name in serializer.fields:
            serializer.fields[name].queryset = queryset.for_user(principal, Action.VIEW)


class AgentSerializer(serializers.ModelSerializer):
    """An agent. ``status`` is read-only (a write is a 400): it changes through the
    actions. ``llm_api_key`` is write-only: absent or ``null`` keeps the stored key,
    ``""`` removes it, text replaces it."""

    role = serializers.ChoiceField(choices=AgentRole.choices)
    status = status_field(AgentStatus)
    parent = serializers.PrimaryKeyRelatedField(
        queryset=Agent.objects.none(),
        allow_null=True,
        required=False,
        help_text="The parent agent's id (none for a master).",
    )
    server = serializers.PrimaryKeyRelatedField(
        queryset=MCPServer.objects.none(),
        allow_null=True,
        required=False,
        help_text="The home server's id.",
    )
    engine_tool = serializers.PrimaryKeyRelatedField(
        queryset=Tool.objects.none(),
        allow_null=True,
        required=False,
        help_text="mcp_tool engine: the id of the home server's tool that receives prompts.",
    )
    capabilities = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Capability tags: lower-case letters, digits and . _ : - (at most 20).",
    )
    llm_api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text='Write-only. Absent or null keeps the stored key, "" removes it.',
    )
    has_llm_api_key = serializers.BooleanField(read_only=True)
    created_by = serializers.EmailField(source="created_by.email", read_only=True, default=None)
    approved_by = serializers.EmailField(source="approved_by.email", read_only=True, default=None)
    pending_approval = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="The id of the pending activation request, if any.",
    )
    paused = serializers.BooleanField(
        read_only=True, help_text="The organization's kill switch is on: no agent acts."
    )

    class Meta:
        model = Agent
        read_only_fields = ["id", *AGENT_OUTPUTS]
        fields = ["id", *AGENT_FIELDS, "llm_api_key", *AGENT_OUTPUTS]
        # Uniqueness and ranges are checked by the service, with messages of its own.
        validators = []
        extra_kwargs = {
            "name": {"validators": []},
            "llm_max_steps": UNBOUNDED,
            "max_concurrent_executions": UNBOUNDED,
            "max_tool_calls_per_execution": UNBOUNDED,
            "max_tool_calls_per_hour": UNBOUNDED,
            "max_tool_calls_per_day": UNBOUNDED,
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _narrow(
            self,
            {"parent": Agent.objects, "server": MCPServer.objects, "engine_tool": Tool.objects},
        )

    def to_internal_value(self, data):
        # A read-only field DRF would silently drop; the status is never written here.
        if isinstance(data, Mapping) and "status" in data:
            raise serializers.ValidationError({"status": [STATUS_IS_READ_ONLY]})
        return super().to_internal_value(data)

    def service_fields(self) -> dict:
        """The validated agent fields, as ``create_agent``/``update_agent`` take them."""
        data = self.validated_data
        fields = {name: data[name] for name in AGENT_FIELDS if name in data}
        if "llm_api_key" in data:
            fields["llm_api_key"] = data["llm_api_key"]
        return fields


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class AgentNodeSerializer(serializers.Serializer):
    """One agent in the hierarchy, with its visible children."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    role = serializers.ChoiceField(choices=AgentRole.choices)
    status = serializers.ChoiceField(choices=AgentStatus.choices)

    def get_fields(self):
        fields = super().get_fields()
        fields["children"] = AgentNodeSerializer(many=True)
        return fields


class ServerRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ToolRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    server = ServerRefSerializer()


class EffectiveToolSerializer(serializers.Serializer):
    """What an agent may do with one tool held along its chain (``services.resolve``)."""

    tool = ToolRefSerializer()
    allowed = serializers.BooleanField()
    code = serializers.CharField(help_text="granted, no_grant, denied, parent_lacks, tool_changed…")
    reason = serializers.CharField()
    requires_approval = serializers.BooleanField()
    max_calls_per_execution = serializers.IntegerField(allow_null=True)
    max_calls_per_hour = serializers.IntegerField(allow_null=True)
    argument_schemas = serializers.ListField(child=serializers.JSONField())
    own_grant = serializers.IntegerField(
        allow_null=True, source="grant.pk", default=None, help_text="The agent's own grant."
    )


class EffectiveSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    code = serializers.CharField()
    reason = serializers.CharField()


class ToolGrantSerializer(serializers.ModelSerializer):
    """A grant of one tool to one agent. ``agent`` and ``tool`` are set when it is made
    and never change; ``effective`` is what the agent may really do with the tool,
    within its parents' limits."""

    agent = serializers.PrimaryKeyRelatedField(queryset=Agent.objects.none())
    tool = serializers.PrimaryKeyRelatedField(queryset=Tool.objects.none())
    tool_name = serializers.CharField(source="tool.name", read_only=True)
    server = serializers.IntegerField(source="tool.server_id", read_only=True)
    granted_by = serializers.EmailField(source="granted_by.email", read_only=True, default=None)
    argument_schema = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="A JSON Schema the call's arguments must also satisfy.",
    )
    effective = serializers.SerializerMethodField()

    class Meta:
        model = ToolGrant
        read_only_fields = [
            "id",
            "tool_name",
            "server",
            "granted_by",
            "created_at",
            "updated_at",
            "effective",
        ]
        fields = [
            "id",
            "agent",
            "tool",
            "tool_name",
            "server",
            "allowed",
            "requires_approval",
            "max_calls_per_execution",
            "max_calls_per_hour",
            "argument_schema",
            "granted_by",
            "reason",
            "created_at",
            "updated_at",
            "effective",
        ]
        # One grant per agent and tool, and the limits' ranges: the service says so.
        validators = []
        extra_kwargs = {
            "max_calls_per_execution": UNBOUNDED,
            "max_calls_per_hour": UNBOUNDED,
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _narrow(self, {"agent": Agent.objects, "tool": Tool.objects})

    def validate(self, attrs):
        if self.instance is not None:
            errors = {
                name: [f"A grant's {name} cannot change; revoke it and grant again."]
                for name in ("agent", "tool")
                if name in attrs and attrs[name] != getattr(self.instance, name)
            }
            if errors:
                raise serializers.ValidationError(errors)
        return attrs

    def service_fields(self) -> dict:
        return {
            name: self.validated_data[name] for name in GRANT_FIELDS if name in self.validated_data
        }

    @extend_schema_field(EffectiveSerializer)
    def get_effective(self, grant) -> dict:
        # Lists pass one resolver for the whole page (``context["resolver"]``).
        resolver = self.context.get("resolver") or Resolver(grant.organization_id, [grant.tool_id])
        permission = resolver.resolve(grant.agent_id, grant.tool)
        return {"allowed": permission.allowed, "code": permission.code, "reason": permission.reason}


class ApprovalSerializer(serializers.ModelSerializer):
    """An approval request as lists show it (the snapshot is on the detail)."""

    status = status_field(ApprovalStatus)
    requested_by = serializers.EmailField(source="requested_by.email", read_only=True, default=None)
    decided_by = serializers.EmailField(source="decided_by.email", read_only=True, default=None)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "kind",
            "status",
            "agent",
            "tool",
            "target_label",
            "summary",
            "changes",
            "requested_by",
            "requested_via",
            "decided_by",
            "decided_at",
            "reason",
            "expires_at",
            "created_at",
        ]
        read_only_fields = fields


class ApprovalDetailSerializer(ApprovalSerializer):
    """An approval request with what is being approved: ``snapshot`` and its SHA-256."""

    class Meta(ApprovalSerializer.Meta):
        fields = [*ApprovalSerializer.Meta.fields, "snapshot", "snapshot_hash"]
        read_only_fields = fields
