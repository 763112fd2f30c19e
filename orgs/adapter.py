"""allauth policy from the environment (``ARGUS_SIGNUP``), in one place.

- ``invite`` (default): only someone holding a valid invitation link can sign up, and
  only with the invited address;
- ``open``: anyone can sign up (they start with no organization);
- ``closed``: nobody can; accounts come from ``argus createuser`` or an admin.
"""

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.urls import reverse

from orgs import services

INVITATION_SESSION_KEY = "argus_invitation_token"


class AccountAdapter(DefaultAccountAdapter):
    """Signup policy, and where people land after signing in."""

    def is_open_for_signup(self, request):
        policy = settings.ARGUS_SIGNUP
        if policy == "open":
            return True
        if policy == "closed":
            return False
        return self.pending_invitation(request) is not None

    def pending_invitation(self, request):
        """The still-valid invitation whose link brought this visitor, if any."""
        token = request.session.get(INVITATION_SESSION_KEY) if hasattr(request, "session") else None
        if not token:
            return None
        try:
            return services.check_invitation(services.find_invitation(token))
        except services.InvitationError:
            return None

    def clean_email(self, email):
        email = super().clean_email(email)
        request = getattr(self, "request", None)
        if settings.ARGUS_SIGNUP == "invite" and request is not None:
            invitation = self.pending_invitation(request)
            if invitation is not None and invitation.email.lower() != email.lower():
                from django import forms

                raise forms.ValidationError(
                    f"Your invitation is for {invitation.email}; sign up with that address."
                )
        return email

    def is_email_verified(self, request, email):
        """An invitation link proves the address it was sent to."""
        invitation = self.pending_invitation(request)
        if invitation is not None and invitation.email.lower() == email.lower():
            return True
        return super().is_email_verified(request, email)

    def get_login_redirect_url(self, request):
        token = request.session.get(INVITATION_SESSION_KEY)
        if token:
            return reverse("orgs:invitation_accept", args=[token])
        return super().get_login_redirect_url(request)

    get_signup_redirect_url = get_login_redirect_url
