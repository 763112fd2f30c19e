"""Permission suites of the orgs models (see tests/support/permission_suite.py)."""

import itertools

from django.db import transaction

from orgs import audit, services
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team
from orgs.permissions import Action, Principal
from tests.support.permission_suite import (
    ADMIN_ONLY,
    ALL_ROLES,
    MANAGER_UP,
    OPERATOR_UP,
    PermissionSuite,
    register,
)
from tests.support.personas import make_user

_serial = itertools.count(1)


def _admin_of(personas, organization):
    return personas.admin if organization == personas.org_a else personas.outsider


def _make_membership(personas, organization):
    user = make_user(f"someone{next(_serial)}@{organization.slug}.test")
    return Membership.objects.create(user=user, organization=organization, role="VIEWER")


def _make_invitation(personas, organization):
    invitation, _token = services.invite(
        Principal.system(organization), f"invitee{next(_serial)}@example.test", "VIEWER"
    )
    return invitation


def _make_team(personas, organization):
    return services.create_team(Principal.system(organization), f"Team {next(_serial)}")


def _make_key(personas, organization):
    creator = _admin_of(personas, organization)
    key, _secret = services.create_api_key(
        Principal.member(creator, organization), f"key {next(_serial)}", scopes=["read"]
    )
    return key


def _make_event(personas, organization):
    with transaction.atomic():
        return audit.record(Principal.system(organization), "test.event", organization)


register(
    PermissionSuite(
        model=Organization,
        make=lambda personas, organization: organization,
        rights={
            Action.VIEW: ALL_ROLES,
            Action.OPERATE: OPERATOR_UP,
            Action.CHANGE: ADMIN_ONLY,
            Action.APPROVE: MANAGER_UP,
            Action.MANAGE: ADMIN_ONLY,
            Action.REVEAL: ADMIN_ONLY,
        },
    )
)
register(
    PermissionSuite(
        model=Membership,
        make=_make_membership,
        rights={Action.VIEW: ALL_ROLES, Action.CHANGE: ADMIN_ONLY},
        api="/api/v1/members/",
        update_payload=lambda personas, obj: {"role": "OPERATOR"},
        api_delete=True,
        console_urls=[("orgs:member_role", "post"), ("orgs:member_remove", "post")],
    )
)
register(
    PermissionSuite(
        model=Invitation,
        make=_make_invitation,
        rights={Action.VIEW: ADMIN_ONLY, Action.CHANGE: ADMIN_ONLY},
        api="/api/v1/invitations/",
        create_payload=lambda personas: {
            "email": f"api{next(_serial)}@example.test",
            "role": "VIEWER",
        },
        console_urls=[("orgs:invitation_resend", "post"), ("orgs:invitation_revoke", "post")],
    )
)
register(
    PermissionSuite(
        model=Team,
        make=_make_team,
        rights={Action.VIEW: ALL_ROLES, Action.CHANGE: ADMIN_ONLY},
        api="/api/v1/teams/",
        create_payload=lambda personas: {"name": f"API team {next(_serial)}"},
        update_payload=lambda personas, obj: {"name": f"{obj.name} renamed"},
        api_delete=True,
        console_urls=[
            ("orgs:team_edit", "get"),
            ("orgs:team_edit", "post"),
            ("orgs:team_access", "get"),
            ("orgs:team_access", "post"),
            ("orgs:team_delete", "post"),
        ],
    )
)
register(
    PermissionSuite(
        model=ApiKey,
        make=_make_key,
        # The admin persona created the key, so it may also act on it as its owner.
        rights={Action.VIEW: ADMIN_ONLY, Action.CHANGE: ADMIN_ONLY},
        api="/api/v1/api-keys/",
        create_payload=lambda personas: {"name": f"script {next(_serial)}", "scopes": ["read"]},
        create_rights=ALL_ROLES,
        session_only=True,
        console_urls=[
            ("orgs:apikey_rotate", "get"),
            ("orgs:apikey_rotate", "post"),
            ("orgs:apikey_revoke", "post"),
        ],
    )
)
register(
    PermissionSuite(
        model=AuditEvent,
        make=_make_event,
        rights={Action.VIEW: ADMIN_ONLY, Action.CHANGE: ADMIN_ONLY},
        api="/api/v1/audit/",
    )
)
