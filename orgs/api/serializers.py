"""Representations of the orgs API. Writes go through services, never ``save()``."""

from rest_framework import serializers

from orgs.choices import Role, Scope
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.CharField(source="member_role", read_only=True, default=None)

    class Meta:
        model = Organization
        fields = [
            "id",
            "name",
            "slug",
            "plan",
            "role",
            "four_eyes_approval",
            "redaction_keys",
            "retention_days",
            "record_raw_arguments",
            "agents_paused_at",
            "agents_paused_reason",
            "created_at",
        ]
        # The kill switch moves only through its own actions (agents.services).
        read_only_fields = [
            "id",
            "slug",
            "plan",
            "agents_paused_at",
            "agents_paused_reason",
            "created_at",
        ]


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    name = serializers.CharField(source="user.name", read_only=True)
    user = serializers.IntegerField(source="user_id", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "email", "name", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class RoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    status = serializers.CharField(source="effective_status", read_only=True)
    invited_by = serializers.EmailField(source="invited_by.email", read_only=True, default=None)

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "sent_at",
            "send_count",
        ]
        read_only_fields = [
            "id",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "sent_at",
            "send_count",
        ]


class InvitationCreatedSerializer(InvitationSerializer):
    accept_url = serializers.CharField(read_only=True, help_text="Shown once.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "accept_url"]


class TeamSerializer(serializers.ModelSerializer):
    members = serializers.PrimaryKeyRelatedField(
        many=True,
        queryset=Membership.objects.none(),
        required=False,
        help_text="Membership ids (from /members/).",
    )

    class Meta:
        model = Team
        fields = ["id", "name", "description", "members", "created_at"]
        read_only_fields = ["id", "created_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        view = self.context.get("view")
        principal = getattr(view, "principal", None)
        if principal is not None:
            # Choices narrowed to the caller's organization.
            self.fields["members"].child_relation.queryset = Membership.objects.for_user(
                principal, "view"
            )


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.EmailField(source="created_by.email", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "role",
            "status",
            "expires_at",
            "created_by",
            "created_at",
            "rotated_at",
            "previous_valid_until",
            "last_used_at",
            "use_count",
            "revoked_at",
        ]
        read_only_fields = fields

    def get_status(self, key) -> str:
        if key.is_revoked:
            return "revoked"
        return "expired" if key.is_expired else "active"


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False
    )
    role = serializers.ChoiceField(
        choices=Role.choices, required=False, help_text="Role cap; defaults to yours."
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeySecretSerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class RotateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(min_value=0, max_value=30 * 86400, default=0)


class AuditEventSerializer(serializers.ModelSerializer):
    api_key = serializers.IntegerField(source="api_key_id", read_only=True)
    actor = serializers.IntegerField(source="actor_id", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "created_at",
            "actor",
            "actor_label",
            "api_key",
            "channel",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "changes",
            "ip",
            "user_agent",
            "request_id",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    name = serializers.CharField()
    organization = OrganizationSerializer(allow_null=True)
    role = serializers.CharField(allow_null=True, help_text="Effective role (a key's is capped).")
    actions = serializers.ListField(child=serializers.CharField())
    authentication = serializers.ChoiceField(choices=["session", "api_key"])
    api_key = ApiKeySerializer(allow_null=True)
