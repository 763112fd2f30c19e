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


def _context(request) -> dict:
    if request is None:
        return {}
    context = request_context(request)
    return {"ip": context["ip"], "user_agent": context["user_agent"]}


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
            audit.record(
                None,
                "account.login_failed",
                target_label=email[:254],
                changes={},
            )


@receiver(password_changed, dispatch_uid="orgs.audit_password_changed")
@receiver(password_reset, dispatch_uid="orgs.audit_password_reset")
def audit_password(sender, request, user, **kwargs):
    with transaction.atomic():
        audit.record_for_user(user, "account.password_change", **_context(request))


@receiver(authenticator_added, dispatch_uid="orgs.audit_mfa_added")
def audit_mfa_added(sender, request, user, authenticator, **kwargs):
    with transaction.atomic():
        audit.record_for_user(
            user,
            "account.mfa_add",
            changes={"type": [None, authenticator.type]},
            **_context(request),
        )


@receiver(authenticator_removed, dispatch_uid="orgs.audit_mfa_removed")
def audit_mfa_removed(sender, request, user, authenticator, **kwargs):
    with transaction.atomic():
        audit.record_for_user(
            user,
            "account.mfa_remove",
            changes={"type": [authenticator.type, None]},
            **_context(request),
        )


@receiver(authenticator_reset, dispatch_uid="orgs.audit_mfa_reset")
def audit_mfa_reset(sender, request, user, authenticator, **kwargs):
    with transaction.atomic():
        audit.record_for_user(
            user,
            "account.mfa_reset",
            changes={"type": [None, authenticator.type]},
            **_context(request),
        )


@receiver(authentication_failed, dispatch_uid="orgs.audit_mfa_failed")
def audit_mfa_failed(sender, request, user, authenticator, reauthentication=False, **kwargs):
    with transaction.atomic():
        audit.record_for_user(
            user,
            "account.mfa_failed",
            changes={"type": [None, authenticator.type]},
            **_context(request),
        )
