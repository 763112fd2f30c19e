"""Console pages of the orgs app: Settings (organization, members, invitations, teams,
API keys, audit log), the profile, the organization switcher and invitation links."""

import csv
import json
from datetime import timedelta

from allauth.mfa.models import Authenticator
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from argus.errors import ServiceError
from argus.generic import (
    ObjectActionView,
    ObjectFormView,
    ObjectGrantsView,
    ObjectListView,
    OrgViewMixin,
    ServiceFormView,
)
from orgs import audit, forms, services
from orgs.adapter import INVITATION_SESSION_KEY
from orgs.filters import AuditFilter, InvitationFilter, MemberFilter
from orgs.middleware import request_context
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team
from orgs.permissions import Action, can, can_list

# --- organization --------------------------------------------------------------------------


class OrganizationSettingsView(ServiceFormView):
    """Settings → Organization: name, plan, usage against limits, settings."""

    template_name = "orgs/organization.html"
    form_class = forms.OrganizationSettingsForm
    success_url = reverse_lazy("orgs:settings")
    success_message = "Organization settings saved."

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        # A copy: the form writes cleaned values onto its instance before the service runs.
        kwargs["instance"] = Organization.objects.get(pk=self.principal.organization.pk)
        return kwargs

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["usage"] = services.usage(self.principal.organization)
        return context

    def post(self, request, *args, **kwargs):
        if not can(self.principal, Action.MANAGE, self.principal.organization):
            messages.error(request, "Only an admin can change the organization's settings.")
            return self.redirect(str(self.success_url))
        return super().post(request, *args, **kwargs)

    def perform(self, form):
        self.written = services.update_organization(
            self.principal,
            form.instance,
            **{name: form.cleaned_data[name] for name in services.ORGANIZATION_SETTINGS},
        )


class OrganizationAccessView(ObjectGrantsView):
    """Settings → Organization → Access: grants on the organization apply to all in it."""

    back_url_name = "orgs:settings"
    back_label = "Organization"

    def get_object(self, queryset=None):
        return self.principal.organization


class SwitchOrganizationView(LoginRequiredMixin, View):
    """The organization switcher: remembers the choice in the session."""

    http_method_names = ["post"]

    def post(self, request):
        form = forms.SwitchOrganizationForm(request.POST)
        try:
            if not form.is_valid():
                raise ServiceError("Choose an organization.")
            organization = services.switch_organization(
                request.user, request.session, form.cleaned_data["organization"]
            )
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"You are now working in {organization.name}.")
        return HttpResponseRedirect(reverse("console:dashboard"))


# --- members -------------------------------------------------------------------------------


class MemberListView(ObjectListView):
    """Settings → Members: everyone can see who is in the organization."""

    queryset = (
        Membership.objects.select_related("user")
        .prefetch_related(Prefetch("teams", queryset=Team.objects.order_by("name")))
        .order_by("user__email")
    )
    filterset_class = MemberFilter
    template_name = "orgs/member_list.html"
    partial_template_name = "orgs/partials/member_table.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["role_form"] = forms.RoleForm()
        return context


class MemberRoleView(ObjectActionView):
    """Change a member's role (ADMIN)."""

    queryset = Membership.objects.select_related("user")
    required_action = Action.CHANGE
    success_url = reverse_lazy("orgs:member_list")

    def perform(self, membership):
        form = forms.RoleForm(self.request.POST)
        if not form.is_valid():
            raise ServiceError("Choose a valid role.")
        services.change_role(self.principal, membership, form.cleaned_data["role"])
        messages.success(
            self.request, f"{membership.user.email} is now {membership.get_role_display()}."
        )

    def get_success_url(self):
        return str(self.success_url)


class MemberRemoveView(ObjectActionView):
    """Remove a member (ADMIN), or leave the organization (anyone, for themselves)."""

    queryset = Membership.objects.select_related("user")

    def check_object(self, obj):
        if obj.user_id == self.request.user.pk:
            return obj  # leaving needs no permission beyond membership
        self.required_action = Action.CHANGE
        return super().check_object(obj)

    def perform(self, membership):
        services.remove_member(self.principal, membership)
        if membership.user_id == self.request.user.pk:
            messages.success(self.request, f"You left {self.principal.organization.name}.")
            return self.redirect(reverse("console:dashboard"))
        messages.success(self.request, f"{membership.user.email} was removed.")
        return None

    def get_success_url(self):
        return reverse("orgs:member_list")


# --- invitations ---------------------------------------------------------------------------


class InvitationListView(ObjectListView):
    """Settings → Invitations (ADMIN): pending, accepted, revoked and expired."""

    queryset = Invitation.objects.select_related("invited_by")
    filterset_class = InvitationFilter
    template_name = "orgs/invitation_list.html"
    partial_template_name = "orgs/partials/invitation_table.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["form"] = forms.InvitationForm()
        return context


class InvitationCreateView(ServiceFormView):
    """Invite someone; the link is shown once, here (it is also emailed)."""

    template_name = "orgs/invitation_form.html"
    form_class = forms.InvitationForm

    def perform(self, form):
        invitation, token = services.invite(
            self.principal, form.cleaned_data["email"], form.cleaned_data["role"]
        )
        self.written = invitation
        return render(
            self.request,
            "orgs/invitation_sent.html",
            {"invitation": invitation, "url": services.invitation_url(token)},
        )


class InvitationResendView(ObjectActionView):
    queryset = Invitation.objects.all()
    required_action = Action.CHANGE

    def perform(self, invitation):
        invitation, token = services.resend_invitation(self.principal, invitation)
        return render(
            self.request,
            "orgs/invitation_sent.html",
            {"invitation": invitation, "url": services.invitation_url(token), "resent": True},
        )

    def get_success_url(self):
        return reverse("orgs:invitation_list")


class InvitationRevokeView(ObjectActionView):
    queryset = Invitation.objects.all()
    required_action = Action.CHANGE
    success_message = "The invitation to {object.email} was revoked."

    def perform(self, invitation):
        services.revoke_invitation(self.principal, invitation)

    def get_success_url(self):
        return reverse("orgs:invitation_list")


class InvitationAcceptView(View):
    """The link in an invitation email. Anonymous visitors sign in or sign up first
    (the token waits in their session); signed-in users accept with one click."""

    def get(self, request, token):
        invitation = services.find_invitation(token)
        error = None
        try:
            services.check_invitation(invitation)
        except services.InvitationError as exc:
            error = exc.message
        if error is None and not request.user.is_authenticated:
            request.session[INVITATION_SESSION_KEY] = token
        return render(
            request,
            "orgs/invitation_accept.html",
            {"invitation": invitation if error is None else None, "error": error, "token": token},
            status=400 if error else 200,
        )

    def post(self, request, token):
        if not request.user.is_authenticated:
            request.session[INVITATION_SESSION_KEY] = token
            return HttpResponseRedirect(reverse("account_login"))
        try:
            membership = services.accept_invitation(token, request.user, **request_context(request))
        except ServiceError as exc:
            invitation = services.find_invitation(token)
            return render(
                request,
                "orgs/invitation_accept.html",
                {"invitation": invitation, "error": exc.message, "token": token},
                status=exc.status,
            )
        request.session.pop(INVITATION_SESSION_KEY, None)
        services.switch_organization(request.user, request.session, membership.organization_id)
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return HttpResponseRedirect(reverse("console:dashboard"))


# --- teams ---------------------------------------------------------------------------------


class TeamListView(ObjectListView):
    """Settings → Teams."""

    queryset = Team.objects.prefetch_related(
        Prefetch("members", queryset=Membership.objects.select_related("user"))
    )
    template_name = "orgs/team_list.html"


class TeamCreateView(ServiceFormView):
    template_name = "orgs/team_form.html"
    form_class = forms.TeamForm
    success_url = reverse_lazy("orgs:team_list")

    def perform(self, form):
        self.written = services.create_team(
            self.principal,
            form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            members=[member.pk for member in form.cleaned_data["members"]],
        )
        messages.success(self.request, f"Team {self.written.name} created.")


class TeamEditView(ObjectFormView):
    template_name = "orgs/team_form.html"
    form_class = forms.TeamForm
    queryset = Team.objects.all()
    required_action = Action.CHANGE
    success_url = reverse_lazy("orgs:team_list")

    def get_initial(self):
        return {
            "name": self.object.name,
            "description": self.object.description,
            "members": list(self.object.members.all()),
        }

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        if not self.principal.org_allows(Action.MANAGE):
            del form.fields["members"]  # a team lead renames; only admins change members
        return form

    def perform(self, form):
        members = form.cleaned_data.get("members")
        services.update_team(
            self.principal,
            self.object,
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            members=None if members is None else [member.pk for member in members],
        )
        messages.success(self.request, f"Team {self.object.name} saved.")


class TeamAccessView(ObjectGrantsView):
    """Who may manage one team beyond the admins (a team lead, say)."""

    queryset = Team.objects.all()
    back_url_name = "orgs:team_list"
    back_label = "Teams"


class TeamDeleteView(ObjectActionView):
    queryset = Team.objects.all()
    required_action = Action.CHANGE
    success_message = "Team {object.name} deleted."

    def perform(self, team):
        services.delete_team(self.principal, team)

    def get_success_url(self):
        return reverse("orgs:team_list")


# --- API keys ------------------------------------------------------------------------------


class ApiKeyListView(ObjectListView):
    """Settings → API keys: your keys (everyone's for an admin), by prefix."""

    queryset = ApiKey.objects.select_related("created_by")
    template_name = "orgs/apikey_list.html"


class ApiKeyCreateView(ServiceFormView):
    template_name = "orgs/apikey_form.html"
    form_class = forms.ApiKeyForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "principal": self.principal}

    def perform(self, form):
        data = form.cleaned_data
        key, secret = services.create_api_key(
            self.principal,
            data["name"],
            scopes=data["scopes"],
            role=data["role"],
            expires_at=data["expires_at"],
        )
        self.written = key
        return render(self.request, "orgs/apikey_secret.html", {"key": key, "secret": secret})


class ApiKeyRotateView(ObjectFormView):
    template_name = "orgs/apikey_rotate.html"
    form_class = forms.RotateForm
    queryset = ApiKey.objects.select_related("created_by")
    required_action = Action.CHANGE

    def perform(self, form):
        grace = timedelta(minutes=form.cleaned_data["grace_minutes"])
        key, secret = services.rotate_api_key(self.principal, self.object, grace=grace)
        return render(
            self.request, "orgs/apikey_secret.html", {"key": key, "secret": secret, "rotated": True}
        )


class ApiKeyRevokeView(ObjectActionView):
    queryset = ApiKey.objects.all()
    required_action = Action.CHANGE
    success_message = "Key {object.name} revoked; it stops working now."

    def perform(self, key):
        services.revoke_api_key(self.principal, key)

    def get_success_url(self):
        return reverse("orgs:apikey_list")


# --- audit ---------------------------------------------------------------------------------


class AuditListView(ObjectListView):
    """Settings → Audit log (``manage``): filter by actor, action, target and time."""

    queryset = AuditEvent.objects.order_by("-seq")
    filterset_class = AuditFilter
    template_name = "orgs/audit_list.html"
    partial_template_name = "orgs/partials/audit_table.html"


class _Echo:
    def write(self, value):
        return value


class AuditExportView(OrgViewMixin, View):
    """The filtered audit log as CSV or JSON Lines; the export itself is audited."""

    def get(self, request):
        if not can_list(self.principal, AuditEvent):
            raise PermissionDenied(
                "Only admins (or people granted 'manage') can export the audit log."
            )
        export_format = request.GET.get("format", "csv")
        if export_format not in ("csv", "jsonl"):
            return render(
                request,
                "400.html",
                {"exception": "Export format must be 'csv' or 'jsonl'."},
                status=400,
            )
        queryset = AuditEvent.objects.for_user(self.principal, Action.VIEW).order_by("seq")
        filterset = AuditFilter(request.GET or None, queryset=queryset)
        if filterset.is_bound and not filterset.is_valid():
            return render(
                request, "400.html", {"exception": "The audit filters are not valid."}, status=400
            )
        rows = filterset.qs if filterset.is_bound else queryset
        filters = {key: value for key, value in request.GET.items() if key != "format"}
        services.record_audit_export(self.principal, export_format, filters)
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        name = f"argus-audit-{self.principal.organization.slug}-{stamp}.{export_format}"
        if export_format == "csv":
            writer = csv.writer(_Echo())
            lines = (
                writer.writerow([_csv_value(getattr(event, f)) for f in audit.EXPORT_FIELDS])
                for event in rows.iterator(chunk_size=2000)
            )
            body = _prepend(writer.writerow(audit.EXPORT_FIELDS), lines)
            content_type = "text/csv; charset=utf-8"
        else:
            body = (
                json.dumps({f: _json_value(getattr(event, f)) for f in audit.EXPORT_FIELDS}) + "\n"
                for event in rows.iterator(chunk_size=2000)
            )
            content_type = "application/x-ndjson"
        response = StreamingHttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


def _prepend(first, rest):
    yield first
    yield from rest


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value):
    """A cell a spreadsheet will not run: text that would start a formula gets a
    leading apostrophe (the JSON Lines export keeps every value exact)."""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    elif hasattr(value, "isoformat"):
        value = value.isoformat(timespec="microseconds")
    elif value is None:
        value = ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        value = "'" + value
    return value


def _json_value(value):
    return value.isoformat(timespec="microseconds") if hasattr(value, "isoformat") else value


# --- profile -------------------------------------------------------------------------------


class ProfileView(LoginRequiredMixin, TemplateView):
    """Your account: name, password, two-factor authentication, organizations."""

    template_name = "orgs/profile.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        context["form"] = kwargs.get("form") or forms.ProfileForm(initial={"name": user.name})
        context["authenticators"] = {
            authenticator.type for authenticator in Authenticator.objects.filter(user=user)
        }
        context["organizations"] = services.organizations_of(user).order_by("name")
        return context

    def post(self, request):
        form = forms.ProfileForm(request.POST)
        if form.is_valid():
            services.update_profile(
                request.user, form.cleaned_data["name"], **request_context(request)
            )
            messages.success(request, "Profile saved.")
            return HttpResponseRedirect(reverse("orgs:profile"))
        return self.render_to_response(self.get_context_data(form=form))
