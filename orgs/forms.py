"""Console forms of the orgs app. They validate input; services do the writes."""

from django import forms

from orgs.choices import Role, Scope
from orgs.models import Membership, Organization, Team
from orgs.permissions import ROLE_RANK, Action


class OrganizationSettingsForm(forms.ModelForm):
    redaction_keys = forms.CharField(
        label="Extra redaction keys",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One key name per line, redacted in recordings on top of the defaults.",
    )

    class Meta:
        model = Organization
        fields = ["name", "four_eyes_approval", "retention_days", "record_raw_arguments"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["redaction_keys"] = "\n".join(self.instance.redaction_keys)

    def clean_redaction_keys(self):
        return [line.strip() for line in self.cleaned_data["redaction_keys"].splitlines()]


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class InvitationForm(forms.Form):
    email = forms.EmailField(label="Email address")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    members = forms.ModelMultipleChoiceField(
        queryset=Membership.objects.select_related("user").order_by("user__email"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["members"].label_from_instance = lambda member: member.user.email


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses this key, e.g. 'CI deploys'.")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="read: view; execute: run and replay; write: create and change; "
        "admin: members, settings, audit.",
    )
    role = forms.ChoiceField(
        label="Role cap",
        choices=Role.choices,
        help_text="The key never acts above this role, nor above yours at the time of use.",
    )
    expires_at = forms.DateTimeField(
        label="Expires",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional. Leave empty for a key that does not expire.",
    )

    def __init__(self, *args, principal=None, **kwargs):
        super().__init__(*args, **kwargs)
        if principal is not None and principal.role:
            rank = ROLE_RANK[principal.role]
            self.fields["role"].choices = [
                (value, label) for value, label in Role.choices if ROLE_RANK[value] <= rank
            ]
            self.fields["role"].initial = principal.role


class RotateForm(forms.Form):
    grace_minutes = forms.IntegerField(
        label="Grace period (minutes)",
        min_value=0,
        max_value=30 * 24 * 60,
        initial=0,
        help_text="How long the old secret keeps working; 0 stops it now.",
    )


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=150, required=False)


class SwitchOrganizationForm(forms.Form):
    organization = forms.IntegerField(widget=forms.HiddenInput)


class GrantForm(forms.Form):
    """A per-object grant: an action, to a member or a team of the organization."""

    action = forms.ChoiceField(choices=Action.choices)
    holder = forms.ChoiceField(label="To", help_text="A member, or every member of a team.")

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, **kwargs)
        self.members = {
            f"user:{membership.user_id}": membership.user
            for membership in Membership.objects.for_user(principal, Action.VIEW)
            .select_related("user")
            .order_by("user__email")
        }
        self.teams = {
            f"team:{team.pk}": team
            for team in Team.objects.for_user(principal, Action.VIEW).order_by("name")
        }
        self.fields["holder"].choices = [
            ("Members", [(key, user.email) for key, user in self.members.items()]),
            ("Teams", [(key, team.name) for key, team in self.teams.items()]),
        ]

    def holder_kwargs(self) -> dict:
        """``{"user": …}`` or ``{"team": …}`` for the services."""
        key = self.cleaned_data["holder"]
        if key in self.members:
            return {"user": self.members[key]}
        return {"team": self.teams[key]}
