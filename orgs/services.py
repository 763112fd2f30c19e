"""Writes and lookups of the orgs app; every caller (console, API, admin, commands,
tasks) uses these. Each write checks permission, runs in one transaction, appends its
audit event and schedules side effects on commit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from guardian.shortcuts import assign_perm, remove_perm

from argus import events
from argus.errors import Conflict, LimitExceeded, ServiceError
from orgs import audit
from orgs.choices import PLAN_LIMITS, InvitationStatus, Limit, Plan, Role, Scope
from orgs.models import ApiKey, Invitation, Membership, Organization, Team, User
from orgs.permissions import (
    ROLE_RANK,
    Action,
    Principal,
    can,
    can_create,
    carries_grants,
    denial,
    grant_models,
    mapped_action,
    user_grant_models,
)

SESSION_ORGANIZATION_KEY = "argus_organization_id"
DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.argus.local"
DEMO_LOGIN_FILE = "demo-login.txt"
API_KEY_PREFIX = "argus_sk_"
API_KEY_DISPLAY_LENGTH = len(API_KEY_PREFIX) + 8
MAX_ROTATION_GRACE = timedelta(days=30)


NAME_MAX = Organization._meta.get_field("name").max_length
SLUG_MAX = Organization._meta.get_field("slug").max_length


class OrganizationError(ServiceError):
    """An organization cannot be created as asked."""


def require(principal: Principal, action: str, obj) -> None:
    """Raise ``PermissionDenied`` unless ``principal`` may do ``action`` on ``obj``."""
    if not can(principal, action, obj):
        raise PermissionDenied(denial(principal, action, type(obj)))


def require_create(principal: Principal, model) -> None:
    """Raise ``PermissionDenied`` unless ``principal`` may create ``model`` rows."""
    if not can_create(principal, model):
        raise PermissionDenied(denial(principal, Action.CHANGE, model, creating=True))


def require_session(principal: Principal, what: str) -> None:
    """Some things only a person signed in to the console may do."""
    if principal.api_key is not None:
        raise PermissionDenied(f"{what} is not possible with an API key; use the console.")


# --- organizations and plan limits ---------------------------------------------------------

# Apps that own limited things register how to count them (tools: servers, …).
USAGE_COUNTERS: dict[str, Callable[[Organization], int]] = {
    Limit.MEMBERS: lambda organization: organization.memberships.count(),
}


def register_usage(limit: str, counter: Callable[[Organization], int]) -> None:
    """Declare how to count what ``limit`` limits (called from an app's ``ready``)."""
    USAGE_COUNTERS[limit] = counter


def plan_limit(organization: Organization, limit: str) -> int | None:
    """What the organization's plan allows of ``limit``; ``None`` is unlimited."""
    return PLAN_LIMITS[organization.plan][limit]


def enforce_limit(organization: Organization, limit: str, *, adding: int = 1, used=None) -> None:
    """Raise :class:`LimitExceeded`, naming the limit, if ``adding`` more would exceed it."""
    allowed = plan_limit(organization, limit)
    if allowed is None:
        return
    if used is None:
        used = USAGE_COUNTERS[limit](organization)
    if used + adding > allowed:
        raise LimitExceeded(
            f"The {Plan(organization.plan).label} plan allows at most {allowed} "
            f"{Limit(limit).label}; this organization has {used}. "
            "Upgrade the plan or remove some first."
        )


def usage(organization: Organization) -> list[dict]:
    """Each limit with what is used (when countable) and what the plan allows."""
    rows = []
    for limit in Limit:
        counter = USAGE_COUNTERS.get(limit)
        rows.append(
            {
                "limit": limit.value,
                "label": limit.label,
                "used": counter(organization) if counter else None,
                "allowed": plan_limit(organization, limit),
            }
        )
    return rows


def create_organization(
    name: str,
    *,
    owner: User,
    slug: str | None = None,
    plan: str = Plan.FREE,
    four_eyes_approval: bool = True,
    channel: str = "system",
) -> Organization:
    """Create an organization with ``owner`` as its first ADMIN.

    Raises :class:`OrganizationError` when the name is empty or the slug is taken.
    """
    name = (name or "").strip()
    slug = slugify(slug or name)
    if plan not in Plan.values:
        raise OrganizationError(
            f"Unknown plan {plan!r}; expected one of {', '.join(Plan.values)}.", field="plan"
        )
    if not name or not slug:
        raise OrganizationError(
            "The organization needs a name made of letters or digits.", field="name"
        )
    if len(name) > NAME_MAX:
        raise OrganizationError(f"At most {NAME_MAX} characters.", field="name")
    if len(slug) > SLUG_MAX:
        raise OrganizationError(
            f"The slug {slug!r} is longer than {SLUG_MAX} characters; give a shorter --slug.",
            field="slug",
        )
    taken = OrganizationError(f"The slug {slug!r} is already taken.", field="slug")
    if Organization.objects.filter(slug=slug).exists():
        raise taken
    try:
        with transaction.atomic():
            organization = Organization.objects.create(
                name=name, slug=slug, plan=plan, four_eyes_approval=four_eyes_approval
            )
            principal = Principal.system(organization, channel=channel)
            audit.record(
                principal,
                "organization.create",
                organization,
                changes={"name": [None, name], "slug": [None, slug], "plan": [None, plan]},
            )
            _join(principal, organization, owner, Role.ADMIN)
    except IntegrityError:  # created by someone else between the check and the insert
        raise taken from None
    return organization


ORGANIZATION_SETTINGS = (
    "name",
    "four_eyes_approval",
    "redaction_keys",
    "retention_days",
    "record_raw_arguments",
)


def update_organization(principal: Principal, organization: Organization, **values) -> Organization:
    """Change the organization's name and settings (``manage``).

    Raises ``ServiceError`` naming the field for a bad value.
    """
    require(principal, Action.CHANGE, organization)
    unknown = set(values) - set(ORGANIZATION_SETTINGS)
    if unknown:
        raise ServiceError(f"Unknown setting: {', '.join(sorted(unknown))}.")
    if "name" in values:
        values["name"] = (values["name"] or "").strip()
        if not values["name"]:
            raise ServiceError("The name cannot be empty.", field="name")
        if len(values["name"]) > NAME_MAX:
            raise ServiceError(f"At most {NAME_MAX} characters.", field="name")
    if "redaction_keys" in values:
        values["redaction_keys"] = _clean_redaction_keys(values["redaction_keys"])
    if values.get("retention_days") is not None:
        allowed = plan_limit(organization, Limit.RETENTION_DAYS)
        days = values["retention_days"]
        if not isinstance(days, int) or days < 1:
            raise ServiceError(
                "Retention must be a whole number of days, at least 1.", field="retention_days"
            )
        if allowed is not None and days > allowed:
            raise LimitExceeded(
                f"The {Plan(organization.plan).label} plan keeps recordings for at most "
                f"{allowed} days.",
                field="retention_days",
            )
    with transaction.atomic():
        locked = Organization.objects.select_for_update().get(pk=organization.pk)
        before = {name: getattr(locked, name) for name in values}
        for name, value in values.items():
            setattr(locked, name, value)
        changes = audit.changes_between(before, values)
        if changes:
            locked.save(update_fields=[*values])
            audit.record(principal, "organization.update", locked, changes=changes)
            events.publish(
                "org", "organization.updated", {"fields": sorted(changes)}, organization=locked
            )
    for name, value in values.items():
        setattr(organization, name, value)
    return organization


def _clean_redaction_keys(keys) -> list[str]:
    if isinstance(keys, str):
        keys = keys.replace(",", "\n").splitlines()
    if not isinstance(keys, list | tuple):
        raise ServiceError("Redaction keys must be a list of key names.", field="redaction_keys")
    cleaned = []
    for key in keys:
        if not isinstance(key, str):
            raise ServiceError("Redaction keys must be strings.", field="redaction_keys")
        key = key.strip()
        if not key:
            continue
        if len(key) > 64 or not all(ch.isalnum() or ch in "_-." for ch in key):
            raise ServiceError(
                f"{key!r} is not a key name (letters, digits, '_', '-', '.'; at most 64).",
                field="redaction_keys",
            )
        if key.lower() not in (existing.lower() for existing in cleaned):
            cleaned.append(key)
    return cleaned


def current_organization(user, session) -> Organization | None:
    """The organization the user works in: the one chosen in this session, else the one
    they last switched to, if they are still a member; else their first; ``None`` for a
    user with no membership.

    The organization carries the user's role in it as ``member_role``.
    """
    if user is None or not user.is_authenticated:
        return None
    memberships = organizations_of(user)
    chosen = session.get(SESSION_ORGANIZATION_KEY) if session is not None else None
    for candidate in (chosen, user.last_organization_id):
        if candidate is not None:
            organization = memberships.filter(pk=candidate).first()
            if organization is not None:
                return organization
    return memberships.order_by("name", "id").first()


def organizations_of(user):
    """The organizations ``user`` belongs to, each annotated with ``member_role``."""
    role = Membership.objects.filter(user=user, organization=OuterRef("pk")).values("role")
    return Organization.objects.filter(memberships__user=user).annotate(
        member_role=Subquery(role[:1])
    )


def switch_organization(user: User, session, organization_id) -> Organization:
    """Make ``organization_id`` the current organization of this session, and the one
    the user's next sessions open in.

    Raises ``ServiceError`` when the user is not a member (the same message whether
    or not the organization exists).
    """
    organization = organizations_of(user).filter(pk=organization_id).first()
    if organization is None:
        raise ServiceError("You are not a member of that organization.", field="organization")
    session[SESSION_ORGANIZATION_KEY] = organization.pk
    if user.last_organization_id != organization.pk:
        User.objects.filter(pk=user.pk).update(last_organization=organization)
        user.last_organization = organization
    return organization


# --- members -------------------------------------------------------------------------------


def _lock_admins(organization: Organization) -> list[int]:
    """Lock the organization's ADMIN memberships and return their ids, so two
    concurrent demotions cannot both pass the last-admin check."""
    return list(
        Membership.objects.select_for_update()
        .filter(organization=organization, role=Role.ADMIN)
        .values_list("pk", flat=True)
    )


def _seats_taken(organization: Organization) -> int:
    """Members plus pending invitations: an invitation reserves its seat until it is
    accepted, revoked or lapses."""
    pending = Invitation.objects.filter(
        organization=organization,
        status=InvitationStatus.PENDING,
        expires_at__gt=timezone.now(),
    ).count()
    return organization.memberships.count() + pending


def add_member(principal: Principal, user: User, role: str) -> Membership:
    """Make ``user`` a member with ``role`` (``manage``); used by commands and the admin.

    Raises ``Conflict`` when already a member, ``LimitExceeded`` at the plan's limit.
    """
    require_create(principal, Membership)
    _check_role(principal, role)
    with transaction.atomic():
        lock_organization(principal.organization)
        return _join(principal, principal.organization, user, role)


def lock_organization(organization: Organization) -> None:
    """Serialize seat counting: members and invitations of one organization."""
    Organization.objects.select_for_update().filter(pk=organization.pk).first()


def _join(principal: Principal, organization: Organization, user: User, role: str) -> Membership:
    """The membership itself, inside the caller's transaction (holding the organization's
    lock): the seat check, the row, its audit event and its realtime event."""
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise Conflict(f"{user.email} is already a member of {organization}.")
    enforce_limit(organization, Limit.MEMBERS, used=_seats_taken(organization))
    membership = Membership.objects.create(organization=organization, user=user, role=role)
    audit.record(
        principal, "member.add", membership, target_label=user.email, changes={"role": [None, role]}
    )
    events.publish(
        "org", "member.added", {"user": user.pk, "role": role}, organization=organization
    )
    return membership


def _check_role(principal: Principal, role: str) -> None:
    if role not in Role.values:
        raise ServiceError(
            f"Unknown role {role!r}; expected one of {', '.join(Role.values)}.", field="role"
        )
    if not principal.is_system and ROLE_RANK[role] > ROLE_RANK.get(principal.role or "", -1):
        raise PermissionDenied("You cannot give a role higher than your own.")


def _require_admin(principal: Principal) -> None:
    """Roles and removals are for ADMINs only, whatever else a grant allows."""
    if not (principal.is_system or principal.role == Role.ADMIN):
        raise PermissionDenied("Only an admin can change roles or remove members.")


def _forget_member(principal: Principal, user: User, organization: Organization) -> None:
    """Revoke a departing member's API keys and delete their per-object grants in the
    organization (inside the removal's transaction), auditing both."""
    for key in ApiKey.objects.filter(
        organization=organization, created_by=user, revoked_at__isnull=True
    ):
        _revoke_key(principal, key, reason="member left")
    for grant_model in user_grant_models():
        path = getattr(
            grant_model._meta.get_field("content_object").related_model,
            "organization_path",
            "organization",
        )
        target = "content_object" if path == "pk" else f"content_object__{path}"
        dropped = grant_model.objects.filter(user=user, **{target: organization.pk})
        for row in dropped.select_related("permission"):
            audit.record(
                principal,
                "grant.delete",
                row.content_object,
                changes={"grant": [f"{_action_of(row)} → {user.email}", None]},
            )
        dropped.delete()


def _action_of(grant_row) -> str:
    return grant_row.permission.codename.split("_", 1)[0]


def change_role(principal: Principal, membership: Membership, role: str) -> Membership:
    """Change a member's role (``manage``: ADMIN). The last ADMIN cannot be demoted.

    Raises ``PermissionDenied``, ``ServiceError`` for an unknown role, ``Conflict``
    for the last ADMIN.
    """
    require(principal, Action.CHANGE, membership)
    _require_admin(principal)
    _check_role(principal, role)
    with transaction.atomic():
        admins = _lock_admins(membership.organization)
        current = Membership.objects.select_for_update().get(pk=membership.pk)
        old = current.role
        if old == role:
            return current
        if old == Role.ADMIN and admins == [current.pk]:
            raise Conflict(
                "The organization needs at least one admin: promote someone else first.",
                field="role",
            )
        current.role = role
        current.save(update_fields=["role"])
        audit.record(
            principal,
            "member.role_change",
            current,
            target_label=current.user.email,
            changes={"role": [old, role]},
        )
        events.publish(
            "org",
            "member.role_changed",
            {"user": current.user_id, "role": role},
            organization=current.organization,
        )
        events.access_changed(current.user_id)
    membership.role = role
    return current


def remove_member(principal: Principal, membership: Membership) -> None:
    """Remove a member (``manage``), or leave when it is the principal's own membership.

    Only an ADMIN removes others; leaving needs a signed-in person (never an API key).
    The last ADMIN can neither leave nor be removed. The member's API keys in the
    organization are revoked and their per-object grants there deleted, so nothing
    comes back if they rejoin.
    """
    leaving = principal.user is not None and membership.user_id == principal.user.pk
    if leaving:
        require_session(principal, "Leaving an organization")
        if membership.organization_id != principal.organization.pk:
            raise PermissionDenied("That membership is not in this organization.")
    else:
        require(principal, Action.CHANGE, membership)
        _require_admin(principal)
    with transaction.atomic():
        admins = _lock_admins(membership.organization)
        current = Membership.objects.select_for_update().filter(pk=membership.pk).first()
        if current is None:
            return
        if current.role == Role.ADMIN and admins == [current.pk]:
            raise Conflict(
                "The last admin cannot leave or be removed: make someone else an admin first."
            )
        email = current.user.email
        audit.record(
            principal,
            "member.leave" if leaving else "member.remove",
            current,
            target_label=email,
            changes={"role": [current.role, None]},
        )
        _forget_member(principal, current.user, current.organization)
        current.delete()
        events.publish(
            "org",
            "member.removed",
            {"user": membership.user_id},
            organization=principal.organization,
        )
        events.access_changed(membership.user_id)


# --- invitations ----------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _expire_lapsed_invitations(
    organization: Organization, email: str, *, keep: int | None = None
) -> None:
    """Mark the address's lapsed pending invitations expired (except ``keep``), so the
    one-pending-invitation constraint only sees live ones."""
    Invitation.objects.filter(
        organization=organization,
        email__iexact=email,
        status=InvitationStatus.PENDING,
        expires_at__lte=timezone.now(),
    ).exclude(pk=keep).update(status=InvitationStatus.EXPIRED)


def invite(principal: Principal, email: str, role: str) -> tuple[Invitation, str]:
    """Invite ``email`` with ``role`` (``manage``); returns the invitation and its token
    (shown once; only its hash is kept). The email is sent after commit.

    Raises ``ServiceError`` for a bad address or role, ``Conflict`` when the person is
    already a member or already has a pending invitation, ``LimitExceeded`` when the
    plan's member limit (members plus pending invitations) is reached.
    """
    require_create(principal, Invitation)
    organization = principal.organization
    email = (email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ServiceError("Enter a valid email address.", field="email") from None
    _check_role(principal, role)
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        lock_organization(organization)
        if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
            raise Conflict(f"{email} is already a member of {organization}.", field="email")
        _expire_lapsed_invitations(organization, email)
        if Invitation.objects.filter(
            organization=organization, email__iexact=email, status=InvitationStatus.PENDING
        ).exists():
            raise Conflict(
                f"{email} already has a pending invitation; resend it instead.", field="email"
            )
        enforce_limit(organization, Limit.MEMBERS, used=_seats_taken(organization))
        now = timezone.now()
        invitation = Invitation.objects.create(
            organization=organization,
            email=email,
            role=role,
            token_hash=_token_hash(token),
            invited_by=principal.user,
            created_at=now,
            sent_at=now,
            expires_at=now + timedelta(days=settings.ARGUS_INVITATION_DAYS),
        )
        audit.record(
            principal,
            "invitation.create",
            invitation,
            changes={"email": [None, email], "role": [None, role]},
        )
        _send_invitation_on_commit(invitation, token)
    return invitation, token


def resend_invitation(principal: Principal, invitation: Invitation) -> tuple[Invitation, str]:
    """Send a pending (or expired) invitation again with a fresh token and a new
    validity period; the previous link stops working. Raises ``Conflict`` otherwise."""
    require(principal, Action.CHANGE, invitation)
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        lock_organization(invitation.organization)
        current = Invitation.objects.get(pk=invitation.pk)
        if current.effective_status == InvitationStatus.EXPIRED:
            # Reviving it takes a seat again, unless another invitation already waits.
            if (
                Invitation.objects.filter(
                    organization=current.organization,
                    email__iexact=current.email,
                    status=InvitationStatus.PENDING,
                    expires_at__gt=now,
                )
                .exclude(pk=current.pk)
                .exists()
            ):
                raise Conflict(
                    f"{current.email} has a newer pending invitation; resend that one instead."
                )
            enforce_limit(
                current.organization, Limit.MEMBERS, used=_seats_taken(current.organization)
            )
            _expire_lapsed_invitations(current.organization, current.email, keep=current.pk)
        resendable = [InvitationStatus.PENDING, InvitationStatus.EXPIRED]
        updated = Invitation.objects.filter(pk=invitation.pk, status__in=resendable).update(
            token_hash=_token_hash(token),
            status=InvitationStatus.PENDING,
            expires_at=now + timedelta(days=settings.ARGUS_INVITATION_DAYS),
            sent_at=now,
            send_count=F("send_count") + 1,
        )
        if updated != 1:
            raise Conflict("Only a pending or expired invitation can be resent.")
        invitation.refresh_from_db()
        audit.record(principal, "invitation.resend", invitation)
        _send_invitation_on_commit(invitation, token)
    return invitation, token


def revoke_invitation(principal: Principal, invitation: Invitation) -> Invitation:
    """Revoke a pending invitation; its link stops working. Raises ``Conflict`` otherwise."""
    require(principal, Action.CHANGE, invitation)
    with transaction.atomic():
        updated = Invitation.objects.filter(
            pk=invitation.pk, status=InvitationStatus.PENDING
        ).update(status=InvitationStatus.REVOKED, decided_at=timezone.now())
        if updated != 1:
            raise Conflict("Only a pending invitation can be revoked.")
        invitation.refresh_from_db()
        audit.record(principal, "invitation.revoke", invitation)
    return invitation


def find_invitation(token: str) -> Invitation | None:
    """The invitation a token belongs to, whatever its state; ``None`` if unknown."""
    if not token or len(token) > 200:
        return None
    return (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(token_hash=_token_hash(token))
        .first()
    )


class InvitationError(ServiceError):
    """An invitation cannot be used."""


def check_invitation(invitation: Invitation | None) -> Invitation:
    """Raise :class:`InvitationError` unless the invitation can still be accepted."""
    if invitation is None:
        raise InvitationError("This invitation link is not valid.")
    if invitation.status == InvitationStatus.ACCEPTED:
        raise InvitationError("This invitation has already been used.")
    if invitation.status == InvitationStatus.REVOKED:
        raise InvitationError("This invitation was revoked.")
    if invitation.effective_status == InvitationStatus.EXPIRED:
        raise InvitationError("This invitation has expired; ask for a new one.")
    return invitation


def accept_invitation(token: str, user: User, **context) -> Membership:
    """Join the invitation's organization as ``user``, whose email must be the invited one
    (``context``: where the request came from, for the audit trail).

    Raises :class:`InvitationError` for an unknown, used, revoked or expired token or
    another address; ``Conflict`` if already a member; ``LimitExceeded`` at the limit.
    """
    invitation = check_invitation(find_invitation(token))
    if user.email.lower() != invitation.email.lower():
        raise InvitationError(
            f"This invitation was sent to {invitation.email}; you are signed in as {user.email}."
        )
    organization = invitation.organization
    principal = Principal(organization=organization, user=user, role=invitation.role, **context)
    with transaction.atomic():
        lock_organization(organization)
        used = Invitation.objects.filter(
            pk=invitation.pk, status=InvitationStatus.PENDING, expires_at__gt=timezone.now()
        ).update(status=InvitationStatus.ACCEPTED, decided_at=timezone.now(), accepted_by=user)
        if used != 1:
            raise InvitationError("This invitation has already been used.")
        audit.record(principal, "invitation.accept", invitation)
        # Its seat was reserved while it was pending; the member now takes it.
        return _join(principal, organization, user, invitation.role)


def invitation_url(token: str) -> str:
    """The absolute link that accepts an invitation."""
    return settings.ARGUS_PUBLIC_URL.rstrip("/") + reverse("orgs:invitation_accept", args=[token])


def _send_invitation_on_commit(invitation: Invitation, token: str) -> None:
    context = {
        "organization": invitation.organization.name,
        "inviter": invitation.invited_by.email if invitation.invited_by else "Argus",
        "role": invitation.get_role_display(),
        "url": invitation_url(token),
        "expires_at": invitation.expires_at,
    }
    subject = f"[Argus] You are invited to {invitation.organization.name}"
    body = render_to_string("orgs/email/invitation.txt", context)
    transaction.on_commit(lambda: send_mail(subject, body, None, [invitation.email]), robust=True)


# --- teams ----------------------------------------------------------------------------------


def _team_members(organization: Organization, member_ids: Iterable[int]) -> list[Membership]:
    ids = {int(pk) for pk in member_ids}
    members = list(Membership.objects.filter(organization=organization, pk__in=ids))
    if len(members) != len(ids):
        raise ServiceError(
            "Every team member must be a member of the organization.", field="members"
        )
    return members


def _clean_team_name(organization: Organization, name: str, exclude: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError("A team needs a name.", field="name")
    if len(name) > 100:
        raise ServiceError("At most 100 characters.", field="name")
    clash = Team.objects.filter(organization=organization, name__iexact=name)
    if exclude is not None:
        clash = clash.exclude(pk=exclude)
    if clash.exists():
        raise ServiceError(f"There is already a team named {name!r}.", field="name")
    return name


def create_team(
    principal: Principal, name: str, *, description: str = "", members: Iterable[int] = ()
) -> Team:
    """Create a team (``manage``) with the given memberships (ids) as members."""
    require_create(principal, Team)
    organization = principal.organization
    name = _clean_team_name(organization, name)
    chosen = _team_members(organization, members)
    with transaction.atomic():
        group = Group.objects.create(name=f"argus-team-{secrets.token_hex(8)}")
        team = Team.objects.create(
            organization=organization, name=name, description=description or "", group=group
        )
        team.members.set(chosen)
        audit.record(
            principal,
            "team.create",
            team,
            changes={
                "name": [None, name],
                "members": [None, sorted(member.user.email for member in chosen)],
            },
        )
    return team


def update_team(
    principal: Principal,
    team: Team,
    *,
    name: str | None = None,
    description: str | None = None,
    members: Iterable[int] | None = None,
) -> Team:
    """Rename a team or change its description (``manage`` on the organization, or a
    grant on the team), or replace its members (``manage`` on the organization)."""
    require(principal, Action.CHANGE, team)
    if members is not None and not principal.org_allows(Action.MANAGE):
        # Membership decides what the team's grants reach: a grant on the team itself
        # (a team lead) must not let its holder hand those grants to anyone, themselves
        # included.
        raise PermissionDenied("Only admins can change who is in a team.")
    before = _team_summary(team)
    with transaction.atomic():
        if name is not None:
            team.name = _clean_team_name(team.organization, name, exclude=team.pk)
        if description is not None:
            team.description = description
        team.save(update_fields=["name", "description"])
        if members is not None:
            team.members.set(_team_members(team.organization, members))
        changes = audit.changes_between(before, _team_summary(team))
        if changes:
            audit.record(principal, "team.update", team, changes=changes)
            for user_id in _changed_member_users(before, team):
                events.access_changed(user_id)
    return team


def _team_summary(team: Team) -> dict:
    return {
        "name": team.name,
        "description": team.description,
        "members": sorted(team.members.values_list("user__email", flat=True)),
    }


def _changed_member_users(before: dict, team: Team) -> set[int]:
    now = set(team.members.values_list("user__email", flat=True))
    changed = now.symmetric_difference(before["members"])
    return set(User.objects.filter(email__in=changed).values_list("pk", flat=True))


def delete_team(principal: Principal, team: Team) -> None:
    """Delete a team and every grant it held (``manage``)."""
    require(principal, Action.CHANGE, team)
    with transaction.atomic():
        user_ids = list(team.members.values_list("user_id", flat=True))
        audit.record(principal, "team.delete", team, changes={"name": [team.name, None]})
        team.group.delete()  # cascades to the team and its grants
        for user_id in user_ids:
            events.access_changed(user_id)


# --- per-object grants ------------------------------------------------------------------------


def _grant_holder(principal: Principal, user: User | None, team: Team | None):
    if (user is None) == (team is None):
        raise ServiceError("Grant to exactly one user or one team.")
    if team is not None:
        if team.organization_id != principal.organization.pk:
            raise ServiceError("That team is not in this organization.", field="team")
        return team.group, f"team {team.name}"
    if not Membership.objects.filter(organization=principal.organization, user=user).exists():
        raise ServiceError(f"{user.email} is not a member of this organization.", field="user")
    return user, user.email


def _grant_codename(obj, action: str) -> str:
    """The permission a grant of ``action`` stores: the action the model really checks
    (granting ``change`` on a team grants ``manage``, which is what editing it needs)."""
    if action not in Action.values:
        raise ServiceError(f"Unknown action {action!r}.", field="action")
    if not carries_grants(type(obj)):
        raise ServiceError(f"A {obj._meta.verbose_name} does not take per-object grants.")
    return f"{mapped_action(type(obj), action)}_{obj._meta.model_name}"


@dataclass(frozen=True)
class Grant:
    """One per-object grant: an action on an object, held by a member or a team."""

    action: str
    user: User | None
    team: Team | None


def grants_on(obj) -> list[Grant]:
    """Every grant on ``obj``, users first, then teams, each by action."""
    tables = grant_models(type(obj))
    if tables is None:
        return []
    user_grants, team_grants = tables
    found = [
        Grant(_action_of(row), row.user, None)
        for row in user_grants.objects.filter(content_object=obj)
        .select_related("user", "permission")
        .order_by("user__email", "permission__codename")
    ]
    found += [
        Grant(_action_of(row), None, row.group.team)
        for row in team_grants.objects.filter(content_object=obj)
        .select_related("group__team", "permission")
        .order_by("group__team__name", "permission__codename")
    ]
    return found


def _check_granting(principal: Principal, obj, verb: str) -> None:
    require(principal, Action.MANAGE, principal.organization)
    require_session(principal, verb)
    if not can(principal, Action.VIEW, obj):
        raise PermissionDenied("That object is not in this organization.")


def grant(principal: Principal, action: str, obj, *, user=None, team=None) -> Grant:
    """Grant ``action`` on ``obj`` to a member or a team (needs ``manage``; console only).

    Raises ``ServiceError`` for an unknown action, a model without grants or a holder
    outside the organization, ``Conflict`` when the holder already has it.
    """
    _check_granting(principal, obj, "Granting permissions")
    codename = _grant_codename(obj, action)
    holder, label = _grant_holder(principal, user, team)
    action = codename.split("_", 1)[0]
    with transaction.atomic():
        if Grant(action, user, team) in grants_on(obj):
            raise Conflict(f"{label} may already {action} this {obj._meta.verbose_name}.")
        assign_perm(codename, holder, obj)
        audit.record(
            principal, "grant.create", obj, changes={"grant": [None, f"{action} → {label}"]}
        )
        _notify_holder(user, team)
    return Grant(action, user, team)


def revoke_grant(principal: Principal, action: str, obj, *, user=None, team=None) -> None:
    """Withdraw a grant made with :func:`grant` (needs ``manage``; console only).

    Raises ``Conflict`` when there is no such grant.
    """
    _check_granting(principal, obj, "Revoking permissions")
    codename = _grant_codename(obj, action)
    holder, label = _grant_holder(principal, user, team)
    action = codename.split("_", 1)[0]
    with transaction.atomic():
        if Grant(action, user, team) not in grants_on(obj):
            raise Conflict(f"{label} has no grant to {action} this {obj._meta.verbose_name}.")
        remove_perm(codename, holder, obj)
        audit.record(
            principal, "grant.delete", obj, changes={"grant": [f"{action} → {label}", None]}
        )
        _notify_holder(user, team)


def _notify_holder(user, team) -> None:
    user_ids = [user.pk] if user is not None else team.members.values_list("user_id", flat=True)
    for user_id in user_ids:
        events.access_changed(user_id)


# --- API keys -------------------------------------------------------------------------------


def _hash_secret(secret: str, signing_key: str) -> str:
    derived = hashlib.sha256(b"argus.api-key:" + signing_key.encode()).digest()
    return hmac.new(derived, secret.encode(), hashlib.sha256).hexdigest()


def _new_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _clean_scopes(scopes) -> list[str]:
    if isinstance(scopes, str):
        scopes = [part.strip() for part in scopes.split(",") if part.strip()]
    if not isinstance(scopes, list | tuple | set) or not scopes:
        raise ServiceError("Choose at least one scope.", field="scopes")
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ServiceError(
            f"Unknown scope(s) {', '.join(unknown)}; expected {', '.join(Scope.values)}.",
            field="scopes",
        )
    return [scope for scope in Scope.values if scope in scopes]


def create_api_key(
    principal: Principal,
    name: str,
    *,
    scopes,
    role: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key acting for the principal's user; returns it and its secret, which is
    shown once and never stored. Never possible with an API key.

    Raises ``ServiceError`` for a bad name, scopes, role or expiry and
    ``PermissionDenied`` for a role cap above the creator's role.
    """
    require_session(principal, "Managing API keys")
    if principal.user is None or not principal.is_member or principal.is_system:
        raise PermissionDenied("Only a member can create API keys.")
    name = (name or "").strip()
    if not name:
        raise ServiceError("Give the key a name.", field="name")
    if len(name) > 100:
        raise ServiceError("At most 100 characters.", field="name")
    scopes = _clean_scopes(scopes)
    role = role or principal.role
    _check_role(principal, role)
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    secret = _new_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            organization=principal.organization,
            created_by=principal.user,
            name=name,
            prefix=secret[:API_KEY_DISPLAY_LENGTH],
            key_hash=_hash_secret(secret, settings.SECRET_KEY),
            scopes=scopes,
            role=role,
            expires_at=expires_at,
        )
        audit.record(
            principal,
            "apikey.create",
            key,
            changes={
                "name": [None, name],
                "scopes": [None, scopes],
                "role": [None, role],
                "expires_at": [None, expires_at.isoformat() if expires_at else None],
            },
        )
    return key, secret


def revoke_api_key(principal: Principal, key: ApiKey) -> ApiKey:
    """Revoke a key at once, previous secret included. Raises ``Conflict`` if already."""
    require_session(principal, "Managing API keys")
    require(principal, Action.CHANGE, key)
    with transaction.atomic():
        _revoke_key(principal, key)
    key.refresh_from_db()
    return key


def _revoke_key(principal: Principal, key: ApiKey, *, reason: str | None = None) -> None:
    """Revoke ``key`` (both secrets) inside the caller's transaction, audit it and
    close its sockets after commit. Raises ``Conflict`` when it is already revoked."""
    updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), previous_hash=None, previous_valid_until=None
    )
    if updated != 1:
        raise Conflict("This key is already revoked.")
    audit.record(
        principal, "apikey.revoke", key, changes={"reason": [None, reason]} if reason else None
    )
    events.access_changed(key.created_by_id)


def rotate_api_key(principal: Principal, key: ApiKey, *, grace: timedelta = timedelta(0)):
    """Give a key a new secret; the old one keeps working for ``grace`` (at most 30
    days). Returns the key and the new secret (shown once). Only the key's creator may
    rotate it, since the secret acts for them; admins may revoke it.

    Raises ``Conflict`` for a revoked or expired key, ``ServiceError`` for a bad grace.
    """
    require_session(principal, "Managing API keys")
    require(principal, Action.CHANGE, key)
    if principal.user is None or key.created_by_id != principal.user.pk:
        # A new secret acts for the key's creator: only they may hold it.
        raise PermissionDenied("Only the key's creator can rotate it; you can revoke it.")
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise ServiceError("The grace period must be between 0 and 30 days.", field="grace")
    secret = _new_secret()
    now = timezone.now()
    with transaction.atomic():
        current = ApiKey.objects.select_for_update().get(pk=key.pk)
        if not current.is_active:
            raise Conflict("A revoked or expired key cannot be rotated.")
        current.previous_hash = current.key_hash if grace > timedelta(0) else None
        current.previous_valid_until = now + grace if grace > timedelta(0) else None
        current.key_hash = _hash_secret(secret, settings.SECRET_KEY)
        current.prefix = secret[:API_KEY_DISPLAY_LENGTH]
        current.rotated_at = now
        current.save(
            update_fields=[
                "previous_hash",
                "previous_valid_until",
                "key_hash",
                "prefix",
                "rotated_at",
            ]
        )
        audit.record(
            principal,
            "apikey.rotate",
            current,
            changes={"grace_seconds": [None, int(grace.total_seconds())]},
        )
        if grace == timedelta(0):
            events.access_changed(current.created_by_id)  # sockets of the old secret
    return current, secret


def presented_api_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The secret a caller presents, from ``Authorization: Bearer …`` or ``X-API-Key``;
    ``None`` when it presents none (another ``Authorization`` scheme is not ours). Any
    bearer token counts, so a wrong one is refused rather than ignored."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return x_api_key.strip() if x_api_key is not None else None


def authenticate_api_key(secret: str) -> ApiKey | None:
    """The active key a secret belongs to (its current one, or the previous one within
    a rotation's grace period); ``None`` for anything else, without saying why.

    The key carries ``matched_hash``, the stored hash the secret matched, so a long
    connection can check later that this secret still works (:func:`api_key_still_valid`).
    A secret hashed under a ``SECRET_KEY_FALLBACKS`` entry is re-hashed under the current
    ``SECRET_KEY`` on use, so keys survive the fallback's removal.
    """
    if not secret or not secret.startswith(API_KEY_PREFIX) or len(secret) > 200:
        return None
    current = _hash_secret(secret, settings.SECRET_KEY)
    hashes = [current, *(_hash_secret(secret, old) for old in settings.SECRET_KEY_FALLBACKS)]
    key = _active_key(hashes)
    if key is None or not key.created_by.is_active:
        return None
    field = "key_hash" if key.key_hash in hashes else "previous_hash"
    if getattr(key, field) != current:
        ApiKey.objects.filter(pk=key.pk, **{field: getattr(key, field)}).update(**{field: current})
        setattr(key, field, current)
    key.matched_hash = current
    return key


def api_key_still_valid(key_id: int, matched_hash: str) -> ApiKey | None:
    """The key again, if the secret that matched ``matched_hash`` still authenticates
    (not revoked, expired, rotated away or past its grace period); else ``None``."""
    key = _active_key([matched_hash])
    return key if key is not None and key.pk == key_id else None


def _active_key(hashes: list[str]) -> ApiKey | None:
    now = timezone.now()
    key = (
        ApiKey.objects.select_related("organization", "created_by")
        .filter(Q(key_hash__in=hashes) | Q(previous_hash__in=hashes, previous_valid_until__gt=now))
        .first()
    )
    return key if key is not None and key.is_active else None


def record_api_key_use(key: ApiKey) -> None:
    """Count one use; a single UPDATE, so concurrent requests never lose a count."""
    ApiKey.objects.filter(pk=key.pk).update(
        use_count=F("use_count") + 1, last_used_at=timezone.now()
    )


def record_audit_export(principal: Principal, export_format: str, filters: dict) -> None:
    """Audit that the principal exported the audit log (``manage``), and how."""
    require(principal, Action.MANAGE, principal.organization)
    with transaction.atomic():
        audit.record(
            principal,
            "audit.export",
            principal.organization,
            changes={"format": [None, export_format], "filters": [None, filters]},
        )


def update_profile(user: User, name: str, *, ip=None, user_agent="", request_id="") -> User:
    """Change the user's display name; audited in each of their organizations."""
    name = (name or "").strip()
    if len(name) > 150:
        raise ServiceError("At most 150 characters.", field="name")
    with transaction.atomic():
        before = user.name
        if before == name:
            return user
        user.name = name
        user.save(update_fields=["name"])
        audit.record_for_user(
            user,
            "account.profile_update",
            ip=ip,
            user_agent=user_agent,
            request_id=request_id,
            changes={"name": [before, name]},
        )
    return user


ACCOUNT_FIELDS = ("email", "name", "is_active", "is_staff", "is_superuser")


def record_staff_action(staff: User, user: User, action: str, **context) -> None:
    """Audit something staff did to an account in the admin (created it, set its
    password) in each of the account's organizations."""
    with transaction.atomic():
        audit.record_for_user(user, action, actor=staff, channel="admin", **context)


def staff_update_account(staff: User, user: User, before: dict, **context) -> None:
    """Audit a staff member's change to an account (the admin saved it already, in this
    transaction): which of ``ACCOUNT_FIELDS`` changed. A deactivated account loses its
    sockets at once (its sessions stop authenticating on their own)."""
    after = {name: getattr(user, name) for name in ACCOUNT_FIELDS}
    changes = audit.changes_between(before, after)
    if not changes:
        return
    audit.record_for_user(
        user, "account.update", actor=staff, channel="admin", changes=changes, **context
    )
    if before.get("is_active") and not user.is_active:
        events.access_changed(user.pk)


def staff_delete_account(staff: User, user: User, **context) -> None:
    """Delete an account from the admin. Refused (``Conflict``) while it is the last
    ADMIN of an organization; audited in each of its organizations first."""
    with transaction.atomic():
        sole = [
            membership.organization.name
            for membership in Membership.objects.select_related("organization").filter(
                user=user, role=Role.ADMIN
            )
            if _lock_admins(membership.organization) == [membership.pk]
        ]
        if sole:
            raise Conflict(
                f"{user.email} is the last admin of {', '.join(sorted(sole))}: "
                "make someone else an admin there first."
            )
        audit.record_for_user(
            user, "account.delete", actor=staff, channel="admin",
            changes={"email": [user.email, None]}, **context,
        )  # fmt: skip
        for membership in Membership.objects.filter(user=user).select_related("organization"):
            _forget_member(
                Principal.system(membership.organization, channel="admin"),
                user,
                membership.organization,
            )
        events.access_changed(user.pk)
        user.delete()


# --- accounts created headlessly ----------------------------------------------------------------


def ensure_account(email: str, password: str | None = None) -> tuple[User, str | None]:
    """The user with ``email``, created (with a verified address, so they can sign in
    at once) when missing. Returns the user and the password generated for a new
    account when none was given; an existing account's password is never changed.

    Raises ``ServiceError`` for a bad address or a password the validators refuse.
    """
    email = (email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ServiceError(f"{email!r} is not a valid email address.", field="email") from None
    user = User.objects.filter(email__iexact=email).first()
    if user is not None:
        return user, None
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(15)
    try:
        validate_password(password, User(email=email))
    except ValidationError as exc:
        raise ServiceError(" ".join(exc.messages), field="password") from None
    return _new_account(email, password), generated


def _new_account(email: str, password: str, *, superuser: bool = False, **fields) -> User:
    """A user whose address allauth knows as verified, so they can sign in at once."""
    with transaction.atomic():
        create = User.objects.create_superuser if superuser else User.objects.create_user
        user = create(email, password, **fields)
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
    return user


def seed_demo_organization(data_dir: Path) -> tuple[User, str | None, bool]:
    """Create the demo organization and its admin on first run.

    Returns the admin user, the password generated on first run (read back from
    ``data_dir`` on later runs; ``None`` if that file is gone) and whether anything
    was created now. The password file is readable by its owner only. The demo
    organization has four-eyes approval off, so one person can try everything.
    """
    login_file = Path(data_dir) / DEMO_LOGIN_FILE
    with transaction.atomic():
        user = User.objects.filter(email__iexact=DEMO_EMAIL).first()
        created = user is None
        password = None
        if created:
            password = secrets.token_urlsafe(12)
            user = _new_account(DEMO_EMAIL, password, superuser=True, name="Demo admin")
        organization = Organization.objects.filter(slug=DEMO_SLUG).first()
        if organization is None:
            organization = create_organization(
                "Demo", owner=user, slug=DEMO_SLUG, four_eyes_approval=False
            )
            created = True
        elif not Membership.objects.filter(user=user, organization=organization).exists():
            _join(Principal.system(organization), organization, user, Role.ADMIN)
    if password is not None:
        login_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        login_file.touch(mode=0o600)
        login_file.chmod(0o600)
        login_file.write_text(f"{DEMO_EMAIL}\n{password}\n", encoding="utf-8")
    elif login_file.exists():
        lines = login_file.read_text(encoding="utf-8").splitlines()
        password = lines[1] if len(lines) > 1 else None
    return user, password, created
