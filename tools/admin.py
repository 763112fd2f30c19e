"""The Django admin for the tools app: staff look servers and the catalog up; every
write goes through the services and is audited with channel ``admin``.

Secret values are write-only: a server's page shows the names of its secrets, takes new
ones as ``NAME=value`` lines and removes names, and never renders a value or the
encrypted token. The catalog (tools, resources, prompts) and the health history come
from syncs and checks, so they are read-only here; a changed tool's new definition is
accepted with an action. Grants are managed in the console.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from argus.errors import ServiceError
from orgs.admin import (
    ReadOnlyAdmin,
    Refused,
    ServiceWritesAdmin,
    TeamGrantAdmin,
    UserGrantAdmin,
    admin_principal,
    adopt,
    apply_to_each,
    refusals,
)
from orgs.permissions import Action, Principal, can, can_create
from tools import services
from tools.choices import ToolState
from tools.models import (
    MCPServer,
    MCPServerTeamGrant,
    MCPServerUserGrant,
    Prompt,
    Resource,
    ServerCheck,
    Tool,
)

# Checks shown on a server's page; the full history is on the health checks list.
RECENT_CHECKS = 10


def acting_principal(request, obj: MCPServer | Tool, action: str) -> Principal:
    """Who an admin write on a server or tool acts as (see ``orgs.admin.admin_principal``)."""
    return admin_principal(request, obj.organization, lambda principal: can(principal, action, obj))


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def changelist_link(model, text: str, **filters) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    url = reverse(f"admin:tools_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


# --- servers ------------------------------------------------------------------------------------

# Deleted with their server by delete_server, though read-only here.
GOES_WITH_SERVER = (Tool, Resource, Prompt, ServerCheck, MCPServerUserGrant, MCPServerTeamGrant)


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders what was typed in it, not even after a form error."""

    def format_value(self, value):
        return None


class MCPServerForm(forms.ModelForm):
    """A server's configuration, validated by the service's own rules (``clean_config``)
    so bad input comes back as form errors; secrets are changed, never shown."""

    new_secrets = forms.CharField(
        label="Set secrets",
        required=False,
        strip=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        help_text=(
            "One NAME=value a line; a stored name is replaced. Values are encrypted and "
            "never shown again; refer to them as ${NAME} in the environment or headers."
        ),
    )
    remove_secrets = forms.MultipleChoiceField(
        label="Remove secrets", required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = MCPServer
        fields = ["organization", *services.SERVER_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = self.instance.secret_names if self.instance.pk else []
        if names:
            self.fields["remove_secrets"].choices = [(name, name) for name in names]
        else:
            del self.fields["remove_secrets"]
        self.secret_changes: dict[str, str | None] = {}

    def clean_new_secrets(self) -> dict[str, str]:
        secrets = {}
        for number, line in enumerate(self.cleaned_data["new_secrets"].splitlines(), start=1):
            if not line.strip():
                continue
            name, separator, value = line.partition("=")
            name, value = name.strip(), value.strip()
            # The line is never echoed back: it may be a value pasted without its name.
            if not separator or not name or not value:
                raise forms.ValidationError(f"Line {number} is not NAME=value.")
            if name in secrets:
                raise forms.ValidationError(f"{name} is set twice.")
            secrets[name] = value
        return secrets

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        secrets = dict(cleaned.get("new_secrets") or {})
        for name in cleaned.get("remove_secrets") or []:
            if name in secrets:
                self.add_error("remove_secrets", f"{name} cannot be both set and removed.")
                return cleaned
            secrets[name] = None
        self.secret_changes = secrets
        instance = self.instance if self.instance.pk else None
        organization = instance.organization if instance else cleaned.get("organization")
        data = {name: cleaned[name] for name in services.SERVER_FIELDS if name in cleaned}
        try:
            services.clean_config(organization, {**data, "secrets": secrets}, instance=instance)
        except ServiceError as exc:
            field = "new_secrets" if exc.field == "secrets" else exc.field
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


@admin.register(MCPServer)
class MCPServerAdmin(ServiceWritesAdmin):
    """Servers are created, changed and deleted through ``create_server``,
    ``update_server`` and ``delete_server``; actions put them in maintenance, take them
    out and sync their catalog."""

    form = MCPServerForm
    list_display = [
        "name",
        "organization",
        "transport",
        "status",
        "enabled",
        "last_checked_at",
        "latency",
    ]
    list_filter = ["transport", "status", "enabled", "organization"]
    list_select_related = ["organization"]
    search_fields = [
        "name",
        "description",
        "command",
        "url",
        "server_name",
        "organization__name",
        "organization__slug",
    ]
    autocomplete_fields = ["organization"]
    actions = ["maintenance_on", "maintenance_off", "sync_catalog"]
    health_fields = [
        "status",
        "last_checked_at",
        "last_latency_ms",
        "last_error",
        "next_check_at",
        "recent_checks",
    ]
    catalog_fields = [
        "server_name",
        "server_version",
        "protocol_version",
        "last_synced_at",
        "sync_error",
        "catalog",
    ]
    record_fields = ["config_version", "created_by", "created_at", "updated_at"]

    def get_fieldsets(self, request, obj=None):
        connection = ["transport", "command", "args", "env", "cwd", "url", "headers"]
        if obj is None:
            return [
                (None, {"fields": ["organization", "name", "description", "enabled"]}),
                ("Connection", {"fields": connection}),
                ("Secrets", {"fields": ["new_secrets"]}),
                ("Health checks", {"fields": ["check_interval_s", "timeout_s"]}),
            ]
        secrets = ["stored_secrets", "new_secrets"]
        if obj.secret_names:
            secrets.append("remove_secrets")
        return [
            (None, {"fields": ["organization", "name", "description", "enabled"]}),
            ("Connection", {"fields": connection}),
            ("Secrets", {"fields": secrets}),
            ("Health checks", {"fields": ["check_interval_s", "timeout_s", *self.health_fields]}),
            ("Catalog", {"fields": self.catalog_fields}),
            ("Record", {"fields": self.record_fields}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "organization",
            "stored_secrets",
            *self.health_fields,
            *self.catalog_fields,
            *self.record_fields,
        ]

    def get_actions(self, request):
        # delete_queryset goes through the service here, so bulk deletion stays.
        return admin.ModelAdmin.get_actions(self, request)

    @admin.display(description="latency", ordering="last_latency_ms")
    def latency(self, obj):
        return "—" if obj.last_latency_ms is None else f"{obj.last_latency_ms:.0f} ms"

    @admin.display(description="stored secrets")
    def stored_secrets(self, obj):
        return ", ".join(obj.secret_names) or "none"

    @admin.display(description="recent checks")
    def recent_checks(self, obj):
        checks = obj.checks.order_by("-checked_at")[:RECENT_CHECKS]
        if not checks:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{check.checked_at:%Y-%m-%d %H:%M:%S}",
                    check.get_status_display(),
                    "—" if check.latency_ms is None else f"{check.latency_ms:.0f} ms",
                    check.error or "",
                )
                for check in checks
            ),
        )
        history = changelist_link(ServerCheck, "all checks", server__id__exact=obj.pk)
        return format_html("<table>{}</table>{}", rows, history)

    @admin.display(description="catalog")
    def catalog(self, obj):
        return format_html(
            "{} · {} · {}",
            changelist_link(Tool, counted(obj.tools.count(), "tool"), server__id__exact=obj.pk),
            changelist_link(
                Resource, counted(obj.resources.count(), "resource"), server__id__exact=obj.pk
            ),
            changelist_link(
                Prompt, counted(obj.prompts.count(), "prompt"), server__id__exact=obj.pk
            ),
        )

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in services.SERVER_FIELDS}
        secrets = form.secret_changes or None
        with refusals():
            if change:
                current = MCPServer.objects.select_related("organization").get(pk=obj.pk)
                principal = acting_principal(request, current, Action.CHANGE)
                services.update_server(principal, current, secrets=secrets, **values)
                return
            principal = admin_principal(
                request, obj.organization, lambda principal: can_create(principal, MCPServer)
            )
            created = services.create_server(principal, secrets=secrets, **values)
        adopt(obj, created)

    def delete_model(self, request, obj):
        with refusals():
            services.delete_server(acting_principal(request, obj, Action.CHANGE), obj)

    def delete_queryset(self, request, queryset):
        apply_to_each(
            self,
            request,
            queryset.select_related("organization"),
            lambda request, server: services.delete_server(
                acting_principal(request, server, Action.CHANGE), server
            ),
            "Deleted through the service",
        )

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        going = {model._meta.verbose_name for model in GOES_WITH_SERVER}
        return deleted, counts, perms_needed - going, protected

    def _maintenance(self, request, queryset, on: bool, done: str):
        apply_to_each(
            self,
            request,
            queryset.select_related("organization"),
            lambda request, server: services.set_maintenance(
                acting_principal(request, server, Action.CHANGE), server, on
            ),
            done,
        )

    @admin.action(description="Put selected servers in maintenance", permissions=["change"])
    def maintenance_on(self, request, queryset):
        self._maintenance(request, queryset, True, "Put in maintenance")

    @admin.action(description="Take selected servers out of maintenance", permissions=["change"])
    def maintenance_off(self, request, queryset):
        self._maintenance(request, queryset, False, "Taken out of maintenance")

    @admin.action(description="Sync the catalog of selected servers", permissions=["change"])
    def sync_catalog(self, request, queryset):
        for server in queryset.select_related("organization"):
            try:
                with refusals():
                    result = services.sync_server(
                        acting_principal(request, server, Action.OPERATE), server
                    )
            except Refused as exc:
                self.message_user(request, f"{server}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Synced {server}: {counted(result.tools, 'tool')} ({len(result.added)} "
                    f"added, {len(result.changed)} changed, {len(result.removed)} removed), "
                    f"{counted(result.resources, 'resource')}, "
                    f"{counted(result.prompts, 'prompt')}.",
                    messages.SUCCESS,
                )


# --- the catalog and the health history: read-only ------------------------------------------


@admin.register(Tool)
class ToolAdmin(ReadOnlyAdmin):
    """The catalog comes from syncs; a changed definition is accepted with an action
    (``accept_tool_change``), open to superusers."""

    list_display = ["name", "server", "organization", "risk", "state", "last_seen_at"]
    list_filter = ["state", "risk", "server__transport", "organization", "server"]
    list_select_related = ["server", "organization"]
    search_fields = [
        "name",
        "title",
        "description",
        "server__name",
        "organization__name",
        "organization__slug",
    ]
    fields = [
        "organization",
        "server",
        "name",
        "title",
        "description",
        "risk",
        "state",
        "changed_at",
        "first_seen_at",
        "last_seen_at",
        "current_definition",
        "definition_hash",
        "accepted_definition",
        "pinned_hash",
        "pinned_at",
        "pinned_by",
    ]
    readonly_fields = fields
    actions = ["accept_changed_definitions"]

    @admin.display(description="current definition")
    def current_definition(self, obj):
        return pretty_json(obj.definition())

    @admin.display(description="accepted definition")
    def accepted_definition(self, obj):
        return pretty_json(obj.pinned_definition)

    def has_accept_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Accept changed definitions", permissions=["accept"])
    def accept_changed_definitions(self, request, queryset):
        unchanged = queryset.exclude(state=ToolState.CHANGED).count()
        apply_to_each(
            self,
            request,
            queryset.filter(state=ToolState.CHANGED).select_related("server", "organization"),
            lambda request, tool: services.accept_tool_change(
                acting_principal(request, tool, Action.APPROVE), tool
            ),
            "Accepted",
        )
        if unchanged:
            self.message_user(
                request,
                f"Skipped {unchanged} with no pending definition change.",
                messages.WARNING,
            )


@admin.register(Resource)
class ResourceAdmin(ReadOnlyAdmin):
    list_display = ["uri", "name", "server", "organization", "mime_type", "removed", "last_seen_at"]
    list_filter = ["removed", "organization", "server"]
    list_select_related = ["server", "organization"]
    search_fields = ["uri", "name", "title", "description", "server__name", "organization__name"]
    fields = [
        "organization",
        "server",
        "uri",
        "name",
        "title",
        "description",
        "mime_type",
        "removed",
        "first_seen_at",
        "last_seen_at",
    ]
    readonly_fields = fields


@admin.register(Prompt)
class PromptAdmin(ReadOnlyAdmin):
    list_display = ["name", "server", "organization", "removed", "last_seen_at"]
    list_filter = ["removed", "organization", "server"]
    list_select_related = ["server", "organization"]
    search_fields = ["name", "title", "description", "server__name", "organization__name"]
    fields = [
        "organization",
        "server",
        "name",
        "title",
        "description",
        "arguments",
        "removed",
        "first_seen_at",
        "last_seen_at",
    ]
    readonly_fields = fields


@admin.register(ServerCheck)
class ServerCheckAdmin(ReadOnlyAdmin):
    list_display = ["server", "checked_at", "ok", "status", "latency_ms"]
    list_filter = ["ok", "status", "server__organization", "server"]
    list_select_related = ["server"]
    search_fields = ["server__name", "error"]
    fields = ["server", "checked_at", "ok", "status", "latency_ms", "error"]
    readonly_fields = fields


# --- grants: read here, managed in the console ---------------------------------------------------


@admin.register(MCPServerUserGrant)
class MCPServerUserGrantAdmin(UserGrantAdmin):
    search_fields = ["content_object__name", "user__email"]


@admin.register(MCPServerTeamGrant)
class MCPServerTeamGrantAdmin(TeamGrantAdmin):
    search_fields = ["content_object__name", "group__team__name"]
