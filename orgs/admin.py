"""The Django admin for the orgs app: staff look anything up; every write goes through
the services and is audited with channel ``admin``.

Secrets are never shown, nor their hashes (``key_hash``, ``previous_hash``,
``token_hash``): every admin here lists its fields explicitly. API keys and
invitations are created only through the console and the commands; the admin can
revoke them. The audit log and its chain heads cannot be edited or deleted here, by
anyone. Grants are managed in the console, where the service checks their holders.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse

from argus.errors import ServiceError
from orgs import audit, services
from orgs.choices import InvitationStatus
from orgs.middleware import request_context
from orgs.models import (
    ApiKey,
    AuditChainHead,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    OrganizationTeamGrant,
    OrganizationUserGrant,
    Team,
    TeamTeamGrant,
    TeamUserGrant,
    User,
)
from orgs.permissions import Action, Principal, can, can_create

# --- acting through the services ----------------------------------------------------------


def admin_principal(
    request, organization: Organization, allows: Callable[[Principal], bool]
) -> Principal:
    """Who an admin write acts as, audited with channel ``admin``.

    The staff user's own membership when it allows the write, so the audit log names
    them with their role; otherwise, for a superuser, the system acting on their
    behalf: the event names the staff user, with channel ``admin``.
    Raises ``PermissionDenied`` for anyone else.
    """
    context = {"channel": "admin", **request_context(request)}
    member = Principal.member(request.user, organization, **context)
    if allows(member):
        return member
    if not (request.user.is_active and request.user.is_superuser):
        raise PermissionDenied(f"You are not allowed to do this in {organization}.")
    return replace(Principal.system(organization, **context), user=request.user)


def adopt(obj, created) -> None:
    """Make the admin's unsaved ``obj`` the row a service created, so the admin's own
    bookkeeping (messages, redirects, history) refers to it."""
    for field in type(created)._meta.concrete_fields:
        setattr(obj, field.attname, getattr(created, field.attname))
    obj._state.adding, obj._state.db = False, created._state.db


class Refused(Exception):
    """A service refused an admin write; shown to the staff user as an error message."""


@contextmanager
def refusals() -> Iterator[None]:
    """Turn a service's refusal into :class:`Refused`, which the admin views show."""
    try:
        yield
    except ServiceError as exc:
        raise Refused(exc.message) from exc
    except PermissionDenied as exc:
        raise Refused(str(exc) or "You are not allowed to do this.") from exc


def apply_to_each(model_admin, request, queryset, write, done: str) -> None:
    """An admin action's body: ``write(request, obj)`` for each selected row, each in
    its own service call; what was refused is reported row by row."""
    succeeded = 0
    for obj in queryset:
        try:
            with refusals():
                write(request, obj)
        except Refused as exc:
            model_admin.message_user(request, f"Skipped {obj}: {exc}", messages.WARNING)
        else:
            succeeded += 1
    if succeeded:
        model_admin.message_user(request, f"{done}: {succeeded}.", messages.SUCCESS)


class ServiceWritesAdmin(admin.ModelAdmin):
    """An admin whose saves and deletes call services: a refusal rolls the request back
    and comes back as an error message on the page, not as a server error."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except Refused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id])
            )

    def get_actions(self, request):
        # Django's bulk deletion would bypass the services.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, search and filter; never add, change or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ActionFilter(admin.SimpleListFilter):
    """Grants by the action they give (the permission codename's first part)."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return Action.choices

    def queryset(self, request, queryset):
        if self.value() in Action.values:
            return queryset.filter(permission__codename__startswith=f"{self.value()}_")
        return queryset


# --- people and organizations ---------------------------------------------------------------


class ReadOnlyMembershipInline(admin.TabularInline):
    """Memberships listed on another page; each is changed on its own page, where the
    services (and the last-admin guard) apply."""

    model = Membership
    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class UserMembershipInline(ReadOnlyMembershipInline):
    fk_name = "user"
    fields = ["organization", "role", "created_at"]
    verbose_name_plural = "memberships (change them on the membership's page)"


@admin.register(User)
class UserAdmin(ServiceWritesAdmin, DjangoUserAdmin):
    """Accounts. Changes, password resets and deletions are audited with channel
    ``admin`` in each of the account's organizations; the last admin of an organization
    cannot be deleted. Auth groups are internal (they hold team grants) and not shown."""

    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    filter_horizontal = []
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["name"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]

    def get_inlines(self, request, obj):
        return [UserMembershipInline] if obj is not None else []

    def save_model(self, request, obj, form, change):
        before = {}
        if change:
            stored = User.objects.get(pk=obj.pk)
            before = {name: getattr(stored, name) for name in services.ACCOUNT_FIELDS}
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if change:
                services.staff_update_account(request.user, obj, before, **request_context(request))
            else:
                services.record_staff_action(
                    request.user, obj, "account.create", **request_context(request)
                )

    def delete_model(self, request, obj):
        try:
            services.staff_delete_account(request.user, obj, **request_context(request))
        except ServiceError as exc:
            raise Refused(exc.message) from exc

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            services.record_staff_action(
                request.user,
                User.objects.get(pk=id),
                "account.password_change",
                **request_context(request),
            )
        return response


class MembershipInline(ReadOnlyMembershipInline):
    """An organization's members, read here and changed on each membership's page."""

    fields = ["user", "role", "created_at"]
    verbose_name_plural = "members (change them on the membership's page)"


@admin.register(Organization)
class OrganizationAdmin(ServiceWritesAdmin):
    """Settings change through ``update_organization``. Organizations are created with
    ``argus createorg`` or the console; slug and plan have no service to change them."""

    list_display = ["name", "slug", "plan", "member_count", "four_eyes_approval", "created_at"]
    list_filter = ["plan", "four_eyes_approval", "record_raw_arguments"]
    search_fields = ["name", "slug"]
    fields = [
        "name",
        "slug",
        "plan",
        "four_eyes_approval",
        "redaction_keys",
        "retention_days",
        "record_raw_arguments",
        "created_at",
    ]
    readonly_fields = ["slug", "plan", "created_at"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        values = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in services.ORGANIZATION_SETTINGS
        }
        if not values:
            return
        current = Organization.objects.get(pk=obj.pk)
        with refusals():
            principal = admin_principal(
                request, current, lambda principal: can(principal, Action.CHANGE, current)
            )
            services.update_organization(principal, current, **values)


@admin.register(Membership)
class MembershipAdmin(ServiceWritesAdmin):
    """Adding, changing a role and removing go through ``add_member``, ``change_role``
    and ``remove_member``, so the last admin is kept and every change is audited."""

    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__email", "user__name", "organization__name", "organization__slug"]
    fields = ["user", "organization", "role", "created_at"]
    autocomplete_fields = ["user", "organization"]
    actions = ["remove_selected"]

    def get_readonly_fields(self, request, obj=None):
        return ["created_at"] if obj is None else ["user", "organization", "created_at"]

    def save_model(self, request, obj, form, change):
        with refusals():
            if not change:
                principal = admin_principal(
                    request,
                    obj.organization,
                    lambda principal: can_create(principal, Membership),
                )
                added = services.add_member(principal, obj.user, obj.role)
                obj.pk, obj.created_at = added.pk, added.created_at
                obj._state.adding, obj._state.db = False, added._state.db
            elif "role" in form.changed_data:
                current = Membership.objects.select_related("user", "organization").get(pk=obj.pk)
                services.change_role(self._principal(request, current), current, obj.role)

    def delete_model(self, request, obj):
        with refusals():
            services.remove_member(self._principal(request, obj), obj)

    @admin.action(description="Remove selected members", permissions=["delete"])
    def remove_selected(self, request, queryset):
        apply_to_each(
            self,
            request,
            queryset.select_related("user", "organization"),
            lambda request, membership: services.remove_member(
                self._principal(request, membership), membership
            ),
            "Removed",
        )

    @staticmethod
    def _principal(request, membership: Membership) -> Principal:
        return admin_principal(
            request,
            membership.organization,
            lambda principal: can(principal, Action.CHANGE, membership),
        )


@admin.register(Team)
class TeamAdmin(ServiceWritesAdmin):
    """Name and description change through ``update_team``, deletion through
    ``delete_team``; teams are created and staffed in the console."""

    list_display = ["name", "organization", "member_count", "created_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "description", "organization__name", "organization__slug"]
    fields = ["organization", "name", "description", "member_emails", "created_at"]
    readonly_fields = ["organization", "member_emails", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("members"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count

    @admin.display(description="members")
    def member_emails(self, obj):
        return ", ".join(obj.members.order_by("user__email").values_list("user__email", flat=True))

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        current = Team.objects.select_related("organization").get(pk=obj.pk)
        with refusals():
            services.update_team(
                self._principal(request, current),
                current,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )

    def delete_model(self, request, obj):
        with refusals():
            services.delete_team(self._principal(request, obj), obj)

    def get_deleted_objects(self, objs, request):
        # delete_team removes the team's grants with it, though grants are read-only here.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        grants = {model._meta.verbose_name for model in (TeamUserGrant, TeamTeamGrant)}
        return deleted, counts, perms_needed - grants, protected

    @staticmethod
    def _principal(request, team: Team) -> Principal:
        return admin_principal(
            request, team.organization, lambda principal: can(principal, Action.CHANGE, team)
        )


# --- invitations and API keys: revoked here, created elsewhere ----------------------------------


class RevocableAdmin(ReadOnlyAdmin):
    """Read-only, with a revoke action open to superusers (the rows have no model
    permissions of their own)."""

    def has_revoke_permission(self, request):
        return request.user.is_active and request.user.is_superuser


@admin.register(Invitation)
class InvitationAdmin(RevocableAdmin):
    list_display = [
        "email",
        "organization",
        "role",
        "shown_status",
        "invited_by",
        "expires_at",
        "send_count",
    ]
    list_filter = ["status", "role", "organization"]
    list_select_related = ["organization", "invited_by"]
    search_fields = ["email", "organization__name", "organization__slug", "invited_by__email"]
    fields = [
        "organization",
        "email",
        "role",
        "shown_status",
        "invited_by",
        "created_at",
        "expires_at",
        "sent_at",
        "send_count",
        "decided_at",
        "accepted_by",
    ]
    readonly_fields = fields
    actions = ["revoke_selected"]

    @admin.display(description="status", ordering="status")
    def shown_status(self, obj):
        return InvitationStatus(obj.effective_status).label

    @admin.action(description="Revoke selected invitations", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        def revoke(request, invitation):
            principal = admin_principal(
                request,
                invitation.organization,
                lambda principal: can(principal, Action.CHANGE, invitation),
            )
            services.revoke_invitation(principal, invitation)

        apply_to_each(self, request, queryset.select_related("organization"), revoke, "Revoked")


@admin.register(ApiKey)
class ApiKeyAdmin(RevocableAdmin):
    list_display = [
        "name",
        "prefix",
        "organization",
        "created_by",
        "role",
        "scope_list",
        "state",
        "expires_at",
        "last_used_at",
    ]
    list_filter = ["role", "revoked_at", "expires_at", "organization"]
    list_select_related = ["organization", "created_by"]
    search_fields = [
        "name",
        "prefix",
        "created_by__email",
        "organization__name",
        "organization__slug",
    ]
    fields = [
        "organization",
        "created_by",
        "name",
        "prefix",
        "scope_list",
        "role",
        "state",
        "created_at",
        "expires_at",
        "rotated_at",
        "previous_valid_until",
        "last_used_at",
        "use_count",
        "revoked_at",
    ]
    readonly_fields = fields
    actions = ["revoke_selected"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    @admin.display(description="state")
    def state(self, obj):
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        def revoke(request, key):
            principal = admin_principal(
                request, key.organization, lambda principal: can(principal, Action.CHANGE, key)
            )
            services.revoke_api_key(principal, key)

        apply_to_each(
            self, request, queryset.select_related("organization", "created_by"), revoke, "Revoked"
        )


# --- grants: read here, managed in the console ---------------------------------------------------


class GrantAdmin(ReadOnlyAdmin):
    list_display = ["content_object", "holder", "action"]
    list_filter = [ActionFilter]
    fields = ["content_object", "holder", "action"]
    readonly_fields = fields

    @admin.display(description="action", ordering="permission__codename")
    def action(self, obj):
        return obj.permission.codename.split("_", 1)[0]


class UserGrantAdmin(GrantAdmin):
    list_select_related = ["content_object", "user", "permission"]

    @admin.display(description="user", ordering="user__email")
    def holder(self, obj):
        return obj.user


class TeamGrantAdmin(GrantAdmin):
    list_select_related = ["content_object", "group__team", "permission"]

    @admin.display(description="team", ordering="group__team__name")
    def holder(self, obj):
        team = getattr(obj.group, "team", None)
        return team if team is not None else obj.group


@admin.register(OrganizationUserGrant)
class OrganizationUserGrantAdmin(UserGrantAdmin):
    search_fields = ["content_object__name", "content_object__slug", "user__email"]


@admin.register(OrganizationTeamGrant)
class OrganizationTeamGrantAdmin(TeamGrantAdmin):
    search_fields = ["content_object__name", "content_object__slug", "group__team__name"]


@admin.register(TeamUserGrant)
class TeamUserGrantAdmin(UserGrantAdmin):
    search_fields = ["content_object__name", "content_object__organization__slug", "user__email"]


@admin.register(TeamTeamGrant)
class TeamTeamGrantAdmin(TeamGrantAdmin):
    search_fields = [
        "content_object__name",
        "content_object__organization__slug",
        "group__team__name",
    ]


# --- the audit log: never editable here -----------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "organization",
        "created_at",
        "actor_label",
        "channel",
        "action",
        "target_label",
    ]
    list_display_links = ["seq", "action"]
    list_filter = ["channel", "created_at", "organization"]
    list_select_related = ["organization"]
    search_fields = [
        "action",
        "actor_label",
        "target_label",
        "target_type",
        "target_id",
        "ip",
        "request_id",
    ]
    # Counting a large log on every page costs more than it tells.
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["organization", "seq", "created_at", "channel", "action"]}),
        (
            "Actor",
            {"fields": ["actor", "actor_label", "api_key", "ip", "user_agent", "request_id"]},
        ),
        ("Target", {"fields": ["target_type", "target_id", "target_label", "changes"]}),
        ("Chain", {"fields": ["prev_hash", "hash"]}),
    ]


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdmin):
    list_display = ["key", "seq", "hash"]
    search_fields = ["key"]
    fields = ["key", "seq", "hash"]
    actions = ["verify_selected"]

    @admin.action(description="Verify selected chains", permissions=["view"])
    def verify_selected(self, request, queryset):
        for head in queryset:
            problems = audit.verify_chain(head.key)
            if not problems:
                self.message_user(request, f"Chain {head.key} is intact up to #{head.seq}.")
            else:
                self.message_user(
                    request,
                    f"Chain {head.key} is broken at #{problems[0].seq}: {problems[0].reason}"
                    + _more_breaks(problems),
                    messages.ERROR,
                )


def _more_breaks(problems) -> str:
    if len(problems) == 1:
        return "."
    return f" (and {len(problems) - 1} more: " + ", ".join(f"#{p.seq}" for p in problems[1:]) + ")."
