"""The Django admin for the agents app: staff look agents, grants and approval requests
up; every write goes through the services and is audited with channel ``admin``.

An agent's status changes only through its actions (suspend, resume, recover) and the
decisions on its approval requests, never through its form. Its LLM API key is
write-only: the page says whether one is stored, takes a new one and removes it, and
never renders it. Approval requests are decided with actions, under the same rules as
in the console (a person of the organization allowed to approve; with four-eyes on, not
the requester). The organization's kill switch is shown on its page and pulled with an
action; the agents app adds both to the organization admin, which knows nothing of it.
"""

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import NestedObjects
from django.db import router
from django.urls import reverse
from django.utils.html import format_html

from agents import services
from agents.choices import ApprovalStatus
from agents.models import Agent, AgentTeamGrant, AgentUserGrant, ApprovalRequest, ToolGrant
from argus.choices import badge
from argus.errors import ServiceError
from orgs import admin as orgs_admin
from orgs.admin import (
    ReadOnlyAdmin,
    ServiceWritesAdmin,
    TeamGrantAdmin,
    UserGrantAdmin,
    admin_principal,
    adopt,
    apply_to_each,
    refusals,
)
from orgs.models import Organization
from orgs.permissions import Action, Principal, can, can_create
from tools.admin import pretty_json
from tools.models import MCPServer, Tool
from tools.services import schema_validator

# The fields of a tool grant a person sets (agent and tool are fixed once granted).
GRANT_FIELDS = (
    "allowed",
    "requires_approval",
    "max_calls_per_execution",
    "max_calls_per_hour",
    "argument_schema",
    "reason",
)
# Deleted with their agent by delete_agent, though some are read-only here.
GOES_WITH_AGENT = (ToolGrant, ApprovalRequest, AgentUserGrant, AgentTeamGrant)


def acting_principal(request, agent: Agent, action: str) -> Principal:
    """Who an admin write on ``agent`` acts as (see ``orgs.admin.admin_principal``)."""
    return admin_principal(
        request, agent.organization, lambda principal: can(principal, action, agent)
    )


def status_badge(value: str, vocabulary: str) -> str:
    """A status as the console colours it (the admin has no badge styles of its own)."""
    label, color = badge(value, vocabulary)
    return format_html('<span style="color: {}">●</span> {}', color, label)


def changelist_link(model, text: str, **filters) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    url = reverse(f"admin:agents_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


# --- agents ---------------------------------------------------------------------------------------


class AgentForm(forms.ModelForm):
    """An agent's configuration, checked by the service's own rules (``clean_agent``)
    so bad input comes back as form errors. The LLM API key is set or removed, never
    shown; the status is not a field at all."""

    capabilities = forms.CharField(
        label="capability tags",
        required=False,
        help_text="Separated by commas: lower-case letters, digits and . _ : -",
    )
    new_llm_api_key = forms.CharField(
        label="Set LLM API key",
        required=False,
        max_length=2000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored key.",
    )
    remove_llm_api_key = forms.BooleanField(label="Remove the stored LLM API key", required=False)

    class Meta:
        model = Agent
        fields = ["organization", *services.AGENT_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["capabilities"] = ", ".join(self.instance.capabilities or [])
            organization = self.instance.organization
            # Choices from this organization only; the service checks them again.
            for name, queryset in (
                ("parent", Agent.objects.exclude(pk=self.instance.pk)),
                ("server", MCPServer.objects.all()),
                ("engine_tool", Tool.objects.all()),
            ):
                if name in self.fields:
                    self.fields[name].queryset = queryset.in_organization(organization)
        if not self.instance.has_llm_api_key:
            del self.fields["remove_llm_api_key"]
        # What the service is told about the key: keep (UNSET), remove ("") or replace.
        self.api_key_change = services.UNSET

    def clean_capabilities(self) -> list[str]:
        text = self.cleaned_data["capabilities"]
        return [tag.strip() for tag in text.split(",") if tag.strip()]

    def clean(self):
        cleaned = super().clean()
        new_key = cleaned.get("new_llm_api_key") or ""
        if new_key and cleaned.get("remove_llm_api_key"):
            self.add_error(
                "remove_llm_api_key", "Set a new key or remove the stored one, not both."
            )
        if self.errors:
            return cleaned
        if new_key:
            self.api_key_change = new_key
        elif cleaned.get("remove_llm_api_key"):
            self.api_key_change = ""
        instance = self.instance if self.instance.pk else None
        organization = instance.organization if instance else cleaned.get("organization")
        data = {name: cleaned[name] for name in services.AGENT_FIELDS if name in cleaned}
        try:
            services.clean_agent(organization, data, instance=instance)
        except ServiceError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return cleaned


@admin.register(Agent)
class AgentAdmin(ServiceWritesAdmin):
    """Agents are created, changed and deleted through ``create_agent``,
    ``update_agent`` and ``delete_agent``, so a wider scope asks for approval again and
    an agent with children is not deleted; actions suspend, resume and recover them."""

    form = AgentForm
    list_display = [
        "name",
        "organization",
        "role",
        "shown_status",
        "parent",
        "server",
        "engine",
        "approved_by",
        "approved_at",
    ]
    list_filter = ["status", "role", "engine", "organization"]
    list_select_related = ["organization", "parent", "server", "approved_by"]
    search_fields = [
        "name",
        "description",
        "parent__name",
        "server__name",
        "organization__name",
        "organization__slug",
    ]
    autocomplete_fields = ["organization", "parent", "server", "engine_tool"]
    actions = ["suspend_selected", "resume_selected", "recover_selected"]
    status_fields = [
        "shown_status",
        "status_reason",
        "status_changed_at",
        "approved_by",
        "approved_at",
        "approved_scope_json",
        "approval_requests_link",
    ]
    record_fields = ["grants_link", "created_by", "created_at", "updated_at"]

    def get_fieldsets(self, request, obj=None):
        engine = ["engine", "engine_tool", "llm_base_url", "llm_model"]
        if obj is not None:
            engine.append("stored_llm_api_key")
        engine.append("new_llm_api_key")
        if obj is not None and obj.has_llm_api_key:
            engine.append("remove_llm_api_key")
        engine += ["llm_system_prompt", "llm_max_steps"]
        fieldsets = [
            (
                None,
                {
                    "fields": [
                        "organization",
                        "name",
                        "description",
                        "role",
                        "parent",
                        "server",
                        "capabilities",
                    ]
                },
            ),
            ("Engine", {"fields": engine}),
            (
                "Limits",
                {
                    "fields": [
                        "max_concurrent_executions",
                        *services.BUDGET_FIELDS,
                    ]
                },
            ),
        ]
        if obj is not None:
            fieldsets += [
                ("Status and approval", {"fields": self.status_fields}),
                ("Record", {"fields": self.record_fields}),
            ]
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["organization", "stored_llm_api_key", *self.status_fields, *self.record_fields]

    @admin.display(description="status", ordering="status")
    def shown_status(self, obj):
        return status_badge(obj.status, "agents.AgentStatus")

    @admin.display(description="LLM API key")
    def stored_llm_api_key(self, obj):
        return "stored (never shown)" if obj.has_llm_api_key else "none"

    @admin.display(description="approved scope")
    def approved_scope_json(self, obj):
        return "never approved" if obj.approved_scope is None else pretty_json(obj.approved_scope)

    @admin.display(description="approval requests")
    def approval_requests_link(self, obj):
        pending = obj.approval_requests.filter(status=ApprovalStatus.PENDING).count()
        return changelist_link(
            ApprovalRequest,
            f"all requests ({pending} pending)",
            agent__id__exact=obj.pk,
        )

    @admin.display(description="tool grants")
    def grants_link(self, obj):
        count = obj.grants.count()
        return changelist_link(
            ToolGrant, f"{count} grant{'' if count == 1 else 's'}", agent__id__exact=obj.pk
        )

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in services.AGENT_FIELDS}
        with refusals():
            if change:
                current = Agent.objects.select_related("organization").get(pk=obj.pk)
                principal = acting_principal(request, current, Action.CHANGE)
                services.update_agent(principal, current, llm_api_key=form.api_key_change, **values)
                return
            principal = admin_principal(
                request, obj.organization, lambda principal: can_create(principal, Agent)
            )
            created = services.create_agent(principal, llm_api_key=form.api_key_change, **values)
        adopt(obj, created)

    def delete_model(self, request, obj):
        with refusals():
            services.delete_agent(acting_principal(request, obj, Action.CHANGE), obj)

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        going = {model._meta.verbose_name for model in GOES_WITH_AGENT}
        if protected:
            # Children protect their parent; delete_agent refuses and says what to do
            # with them, so only another kind of protection stops the page here.
            collector = NestedObjects(using=router.db_for_write(Agent))
            collector.collect(objs)
            if all(isinstance(blocker, Agent) for blocker in collector.protected):
                protected = []
        return deleted, counts, perms_needed - going, protected

    def _transition(self, request, queryset, action: str, move, done: str):
        apply_to_each(
            self,
            request,
            queryset.select_related("organization"),
            lambda request, agent: move(acting_principal(request, agent, action), agent),
            done,
        )

    @admin.action(description="Suspend selected agents", permissions=["change"])
    def suspend_selected(self, request, queryset):
        reason = f"Suspended from the admin by {request.user.email}."
        self._transition(
            request,
            queryset,
            Action.OPERATE,
            lambda principal, agent: services.suspend_agent(principal, agent, reason),
            "Suspended",
        )

    @admin.action(description="Resume selected agents", permissions=["change"])
    def resume_selected(self, request, queryset):
        reason = f"Resumed from the admin by {request.user.email}."
        self._transition(
            request,
            queryset,
            Action.CHANGE,
            lambda principal, agent: services.resume_agent(principal, agent, reason),
            "Resumed",
        )

    @admin.action(description="Recover selected agents from an error", permissions=["change"])
    def recover_selected(self, request, queryset):
        reason = f"Recovered from the admin by {request.user.email}."
        self._transition(
            request,
            queryset,
            Action.OPERATE,
            lambda principal, agent: services.recover_agent(principal, agent, reason),
            "Recovered",
        )


# --- tool grants ----------------------------------------------------------------------------------


class ToolGrantForm(forms.ModelForm):
    """A grant's settings; the service checks them against the parent's when saving."""

    class Meta:
        model = ToolGrant
        fields = ["agent", "tool", *GRANT_FIELDS]

    def clean_argument_schema(self):
        schema = self.cleaned_data["argument_schema"]
        if schema not in (None, {}, ""):
            try:
                schema_validator(schema, what="The argument schema", field="argument_schema")
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        return schema

    def clean(self):
        cleaned = super().clean()
        agent, tool = cleaned.get("agent"), cleaned.get("tool")
        if agent is not None and tool is not None and agent.organization_id != tool.organization_id:
            self.add_error("tool", "The tool must belong to the agent's organization.")
        return cleaned


@admin.register(ToolGrant)
class ToolGrantAdmin(ServiceWritesAdmin):
    """Grants are given, changed and revoked through ``grant_tool``,
    ``update_tool_grant`` and ``revoke_tool_grant``: never wider than the parent's, and
    a wider scope sends an approved agent back for approval."""

    form = ToolGrantForm
    list_display = [
        "agent",
        "tool",
        "server",
        "organization",
        "allowed",
        "requires_approval",
        "max_calls_per_execution",
        "max_calls_per_hour",
        "granted_by",
        "updated_at",
    ]
    list_filter = ["allowed", "requires_approval", "organization"]
    list_select_related = ["agent", "tool__server", "organization", "granted_by"]
    search_fields = [
        "agent__name",
        "tool__name",
        "tool__server__name",
        "reason",
        "organization__name",
        "organization__slug",
    ]
    autocomplete_fields = ["agent", "tool"]
    actions = ["revoke_selected"]
    record_fields = ["organization", "effective", "granted_by", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["agent", "tool", *GRANT_FIELDS]
        return ["agent", "tool", *GRANT_FIELDS, *self.record_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["agent", "tool", *self.record_fields]

    @admin.display(description="server", ordering="tool__server__name")
    def server(self, obj):
        return obj.tool.server

    @admin.display(description="effective permission")
    def effective(self, obj):
        permission = services.resolve(obj.agent, obj.tool)
        return f"{'allowed' if permission.allowed else 'refused'}: {permission.reason}"

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in GRANT_FIELDS}
        with refusals():
            if change:
                current = ToolGrant.objects.select_related("agent__organization", "tool").get(
                    pk=obj.pk
                )
                principal = acting_principal(request, current.agent, Action.CHANGE)
                services.update_tool_grant(principal, current, **values)
                return
            agent = Agent.objects.select_related("organization").get(pk=obj.agent_id)
            principal = acting_principal(request, agent, Action.CHANGE)
            created = services.grant_tool(principal, agent, obj.tool, **values)
        adopt(obj, created)

    def delete_model(self, request, obj):
        with refusals():
            services.revoke_tool_grant(acting_principal(request, obj.agent, Action.CHANGE), obj)

    @admin.action(description="Revoke selected grants", permissions=["delete"])
    def revoke_selected(self, request, queryset):
        apply_to_each(
            self,
            request,
            queryset.select_related("agent__organization", "tool"),
            lambda request, grant: services.revoke_tool_grant(
                acting_principal(request, grant.agent, Action.CHANGE), grant
            ),
            "Revoked",
        )


# --- approval requests: decided with actions, never edited ----------------------------------------


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Requests come from the services; staff approve or reject them with actions,
    as the person they are in the request's organization (``approve_request``,
    ``reject_request``): four-eyes and expiry apply as in the console."""

    list_display = [
        "__str__",
        "organization",
        "shown_kind",
        "shown_status",
        "requested_by",
        "created_at",
        "expires_at",
        "decided_by",
        "decided_at",
    ]
    list_filter = ["status", "kind", "organization"]
    list_select_related = ["organization", "requested_by", "decided_by"]
    search_fields = [
        "target_label",
        "summary",
        "reason",
        "agent__name",
        "tool__name",
        "requested_by__email",
        "organization__name",
        "organization__slug",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "organization",
                    "shown_kind",
                    "agent",
                    "tool",
                    "target_label",
                    "summary",
                    "shown_status",
                ]
            },
        ),
        ("Request", {"fields": ["requested_by", "requested_via", "created_at", "expires_at"]}),
        ("What is asked", {"fields": ["changes_json", "snapshot_json", "snapshot_hash"]}),
        ("Decision", {"fields": ["decided_by", "decided_at", "reason"]}),
    ]
    actions = ["approve_selected", "reject_selected"]

    def has_decide_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    @admin.display(description="kind", ordering="kind")
    def shown_kind(self, obj):
        return status_badge(obj.kind, "agents.ApprovalKind")

    @admin.display(description="status", ordering="status")
    def shown_status(self, obj):
        return status_badge(obj.status, "agents.ApprovalStatus")

    @admin.display(description="changes")
    def changes_json(self, obj):
        return pretty_json(obj.changes) if obj.changes else "none (a first request)"

    @admin.display(description="snapshot")
    def snapshot_json(self, obj):
        return pretty_json(obj.snapshot)

    @staticmethod
    def _decider(request, approval: ApprovalRequest) -> Principal:
        return admin_principal(
            request,
            approval.organization,
            lambda principal: can(principal, Action.APPROVE, approval),
        )

    @admin.action(description="Approve selected requests", permissions=["decide"])
    def approve_selected(self, request, queryset):
        reason = f"Approved from the admin by {request.user.email}."
        apply_to_each(
            self,
            request,
            queryset.select_related("organization"),
            lambda request, approval: services.approve_request(
                self._decider(request, approval), approval, reason
            ),
            "Approved",
        )

    @admin.action(description="Reject selected requests", permissions=["decide"])
    def reject_selected(self, request, queryset):
        reason = f"Rejected from the admin by {request.user.email}."
        apply_to_each(
            self,
            request,
            queryset.select_related("organization"),
            lambda request, approval: services.reject_request(
                self._decider(request, approval), approval, reason
            ),
            "Rejected",
        )


# --- agent grants: read here, managed in the console ----------------------------------------------


@admin.register(AgentUserGrant)
class AgentUserGrantAdmin(UserGrantAdmin):
    search_fields = ["content_object__name", "user__email"]


@admin.register(AgentTeamGrant)
class AgentTeamGrantAdmin(TeamGrantAdmin):
    search_fields = ["content_object__name", "group__team__name"]


# --- the kill switch, on the organization's page --------------------------------------------------

KILL_SWITCH_FIELDS = ["agents_paused_at", "agents_paused_by", "agents_paused_reason"]

admin.site.unregister(Organization)


@admin.register(Organization)
class OrganizationAdmin(orgs_admin.OrganizationAdmin):
    """The organization admin with its agents' kill switch: shown read-only, pulled
    and lifted with actions through ``pause_agents`` and ``resume_agents``."""

    list_display = [*orgs_admin.OrganizationAdmin.list_display, "agents_paused"]
    fields = None
    fieldsets = [
        (None, {"fields": orgs_admin.OrganizationAdmin.fields}),
        (
            "Agents kill switch",
            {
                "fields": KILL_SWITCH_FIELDS,
                "description": "While paused, every tool call of the organization's agents "
                "is refused. Pause and resume with the actions of the organizations list.",
            },
        ),
    ]
    readonly_fields = [*orgs_admin.OrganizationAdmin.readonly_fields, *KILL_SWITCH_FIELDS]
    actions = [*orgs_admin.OrganizationAdmin.actions, "pause_agents", "resume_agents"]

    @admin.display(description="agents paused", boolean=True, ordering="agents_paused_at")
    def agents_paused(self, obj):
        return obj.agents_paused_at is not None

    @staticmethod
    def _manager(request, organization: Organization) -> Principal:
        return admin_principal(
            request,
            organization,
            lambda principal: can(principal, Action.MANAGE, organization),
        )

    @admin.action(description="Pause every agent of selected organizations", permissions=["change"])
    def pause_agents(self, request, queryset):
        reason = f"Paused from the admin by {request.user.email}."
        apply_to_each(
            self,
            request,
            queryset,
            lambda request, organization: services.pause_agents(
                self._manager(request, organization), reason
            ),
            "Agents paused",
        )

    @admin.action(description="Resume the agents of selected organizations", permissions=["change"])
    def resume_agents(self, request, queryset):
        apply_to_each(
            self,
            request,
            queryset,
            lambda request, organization: services.resume_agents(
                self._manager(request, organization)
            ),
            "Agents resumed",
        )
