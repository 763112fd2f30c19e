"""Account events into the audit log: logins, failed logins, password and MFA changes."""

from allauth.account.signals import password_changed, password_reset
from allauth.mfa.signals import (
    authentication_failed,
    authenticator_added,
    authenticator_removed,
    authenticator_reset,
)
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from orgs import audit
from orgs.middleware import request_context
from orgs.models import User
from orgs.permissions import Principal


def _context(request) -> dict:
    return request_context(request) if request is not None else {}


@receiver(user_logged_in, dispatch_uid="orgs.audit_login")
def audit_login(sender, request, user, **kwargs):
    with transaction.atomic():
        audit.record_for_user(user, "account.login", **_context(request))


@receiver(user_login_failed, dispatch_uid="orgs.audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs):
    email = credentials.get("email") or credentials.get("username") or ""
    user = User.objects.filter(email__iexact=email).first() if email else None
    with transaction.atomic():
        if user is not None:
            audit.record_for_user(user, "account.login_failed", **_context(request))
        else:
            anonymous = Principal(organization=None, user=None, role=None, **_context(request))
            audit.record(anonymous, "account.login_failed", target_label=email[:254])


@receiver(password_changed, dispatch_uid="orgs.audit_password_changed")
@receiver(password_reset, dispatch_uid="orgs.audit_password_reset")
def audit_password(sender, request, user, **kwargs):
    with transaction.atomic():
        audit.record_for_user(user, "account.password_change", **_context(request))


def _audit_mfa(signal, action: str, *, removed: bool = False) -> None:
    """Audit one allauth MFA signal as ``action``, naming the authenticator's type."""

    def receiver(sender, request, user, authenticator, **kwargs):
        kind = authenticator.type
        with transaction.atomic():
            audit.record_for_user(
                user,
                action,
                changes={"type": [kind, None] if removed else [None, kind]},
                **_context(request),
            )

    signal.connect(receiver, dispatch_uid=f"orgs.audit.{action}", weak=False)


_audit_mfa(authenticator_added, "account.mfa_add")
_audit_mfa(authenticator_removed, "account.mfa_remove", removed=True)
_audit_mfa(authenticator_reset, "account.mfa_reset")
_audit_mfa(authentication_failed, "account.mfa_failed")
