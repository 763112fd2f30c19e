"""Serializers of the tools endpoints. Secrets are write-only: only names come back."""

from rest_framework import serializers

from tools.choices import Transport
from tools.models import MCPServer, Prompt, Resource, Tool
from tools.services import SERVER_FIELDS


class ServerSerializer(serializers.ModelSerializer):
    """An MCP server. ``secrets`` takes ``{"NAME": "value"}`` (``null`` removes one) and
    is never returned; ``secret_names`` lists what is set."""

    transport = serializers.CharField(
        help_text=f"One of: {', '.join(Transport.values)}.", max_length=20
    )
    args = serializers.JSONField(required=False, help_text="stdio: a list of strings.")
    env = serializers.JSONField(
        required=False, help_text="stdio: variables for the process; ${NAME} uses a secret."
    )
    headers = serializers.JSONField(
        required=False, help_text="Network transports: HTTP headers; ${NAME} uses a secret."
    )
    secrets = serializers.JSONField(
        required=False,
        write_only=True,
        help_text='Write-only: {"NAME": "value"} sets or replaces, {"NAME": null} removes.',
    )
    tool_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = MCPServer
        # What a server reports about itself and its health: never written by callers.
        read_only_fields = [
            "id",
            "secret_names",
            "status",
            "last_checked_at",
            "last_latency_ms",
            "last_error",
            "server_name",
            "server_version",
            "protocol_version",
            "capabilities",
            "instructions",
            "last_synced_at",
            "sync_error",
            "created_at",
            "updated_at",
        ]
        fields = [*SERVER_FIELDS, "secrets", *read_only_fields, "tool_count"]
        # The service validates (names, transports, SSRF) with messages of its own.
        extra_kwargs = {
            "name": {"validators": []},
            "check_interval_s": {"min_value": None, "max_value": None},
            "timeout_s": {"min_value": None, "max_value": None},
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if data.get("tool_count") is None:
            data.pop("tool_count", None)
        return data


class TimingsSerializer(serializers.Serializer):
    connect_ms = serializers.FloatField(required=False)
    initialize_ms = serializers.FloatField(required=False)
    list_tools_ms = serializers.FloatField(required=False)
    total_ms = serializers.FloatField(required=False)


class TestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.CharField(required=False)
    timings = TimingsSerializer()
    tool_count = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    server_name = serializers.CharField(required=False, allow_blank=True)
    server_version = serializers.CharField(required=False, allow_blank=True)
    protocol_version = serializers.CharField(required=False, allow_blank=True)


class SyncResultSerializer(serializers.Serializer):
    added = serializers.ListField(child=serializers.CharField())
    changed = serializers.ListField(child=serializers.CharField())
    removed = serializers.ListField(child=serializers.CharField())
    tools = serializers.IntegerField()
    resources = serializers.IntegerField()
    prompts = serializers.IntegerField()


class MaintenanceSerializer(serializers.Serializer):
    on = serializers.BooleanField(help_text="true: enter maintenance; false: leave it.")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ToolSerializer(serializers.ModelSerializer):
    server_name = serializers.CharField(source="server.name", read_only=True)

    class Meta:
        model = Tool
        fields = [
            "id",
            "server",
            "server_name",
            "name",
            "title",
            "description",
            "input_schema",
            "output_schema",
            "annotations",
            "risk",
            "state",
            "definition_hash",
            "pinned_hash",
            "first_seen_at",
            "last_seen_at",
            "changed_at",
            "pinned_at",
        ]
        read_only_fields = fields


class ToolDetailSerializer(ToolSerializer):
    pinned_definition = serializers.JSONField(read_only=True)

    class Meta(ToolSerializer.Meta):
        fields = [*ToolSerializer.Meta.fields, "pinned_definition"]
        read_only_fields = fields


class ResourceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Resource
        fields = ["id", "uri", "name", "title", "description", "mime_type", "removed",
                  "first_seen_at", "last_seen_at"]  # fmt: skip
        read_only_fields = fields


class PromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "name", "title", "description", "arguments", "removed",
                  "first_seen_at", "last_seen_at"]  # fmt: skip
        read_only_fields = fields


class AcceptSerializer(serializers.Serializer):
    definition_hash = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="The definition hash that was reviewed; refused (409) if it changed since.",
    )


class CallSerializer(serializers.Serializer):
    arguments = serializers.JSONField(default=dict)
    timeout_s = serializers.FloatField(required=False, min_value=0.1)


class CallResultSerializer(serializers.Serializer):
    is_error = serializers.BooleanField()
    latency_ms = serializers.FloatField()
    result = serializers.JSONField()
