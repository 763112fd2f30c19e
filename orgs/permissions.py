"""The one permission API: ``Model.objects.for_user(principal, action)`` and ``can``.

A principal is a person working in one organization (through the console, the API
with their session, or the admin), an API key (acting for its creator), or the system.
What it may do is, in order:

1. nothing outside its organization, and nothing if it is no longer a member;
2. for an API key, only actions its scopes open (``SCOPE_ACTIONS``), and never on
   models marked ``session_only``;
3. the baseline of its role (``ROLE_ACTIONS``; a key's role is the lower of its cap
   and its creator's current role), or a per-object grant of the action on the
   organization, which covers everything in it;
4. otherwise per-object grants (django-guardian tables with direct foreign keys) to
   the user or one of their teams on the object itself, and on rows the user owns
   (``owner_field``), ``view`` and ``change``.

Models declare how they take part with class attributes:

- ``organization_path``: lookup from the model to its organization (``"organization"``);
- ``permission_map``: the action an operation really needs (reading the audit log is
  ``view`` mapped to ``manage``);
- ``owner_field``: rows the principal created, which it may view and change;
- ``session_only``: API keys never reach these rows (API key management itself);
- ``grant_parent``: the foreign key whose grants cover these rows (a server's grants
  cover its tools), for models that carry no grant tables of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from orgs.models import ApiKey, Organization, User


class Action(models.TextChoices):
    """What a principal may want to do with an object."""

    VIEW = "view", "view"
    OPERATE = "operate", "operate"
    CHANGE = "change", "change"
    APPROVE = "approve", "approve"
    MANAGE = "manage", "manage"
    REVEAL = "reveal", "reveal"


ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "VIEWER": frozenset({Action.VIEW}),
    "OPERATOR": frozenset({Action.VIEW, Action.OPERATE}),
    "MANAGER": frozenset({Action.VIEW, Action.OPERATE, Action.CHANGE, Action.APPROVE}),
    "ADMIN": frozenset(Action.values),
}
ROLE_RANK = {"VIEWER": 0, "OPERATOR": 1, "MANAGER": 2, "ADMIN": 3}

# The actions each API key scope opens; each includes ``view`` (nothing can be changed
# or run unseen). ``approve`` is never open to a key: only a person in the console
# decides approvals.
SCOPE_ACTIONS: dict[str, frozenset[str]] = {
    "read": frozenset({Action.VIEW}),
    "execute": frozenset({Action.VIEW, Action.OPERATE}),
    "write": frozenset({Action.VIEW, Action.CHANGE}),
    "admin": frozenset({Action.VIEW, Action.MANAGE, Action.REVEAL}),
}


def action_permissions(model_name: str) -> list[tuple[str, str]]:
    """``Meta.permissions`` for a model that carries per-object grants: one per action."""
    return [(f"{action}_{model_name}", f"Can {action} {model_name}") for action in Action.values]


def lower_role(first: str | None, second: str | None) -> str | None:
    """The lower of two roles; ``None`` (no role) when either is missing."""
    if first is None or second is None:
        return None
    return first if ROLE_RANK[first] <= ROLE_RANK[second] else second


@dataclass(eq=False)
class Principal:
    """Who acts, in which organization, through which channel, from where.

    Build one with :meth:`member`, :meth:`for_api_key` or :meth:`system`; services
    take it to check permissions and to write the audit trail.
    """

    organization: Organization
    user: User | None
    role: str | None
    api_key: ApiKey | None = None
    channel: str = "console"
    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""
    is_system: bool = False
    _granted: dict[tuple[type, str], frozenset[Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def member(cls, user: User, organization: Organization, **context) -> Principal:
        """A person acting in ``organization``; with no membership their role is ``None``.

        Uses ``organization.member_role`` when the middleware already looked it up.
        """
        from orgs.models import Membership

        role = getattr(organization, "member_role", None)
        if role is None and user is not None and user.is_authenticated and user.is_active:
            role = (
                Membership.objects.filter(user=user, organization=organization)
                .values_list("role", flat=True)
                .first()
            )
        if user is not None and not user.is_active:
            role = None
        return cls(organization=organization, user=user, role=role, **context)

    @classmethod
    def for_api_key(cls, key: ApiKey, **context) -> Principal:
        """An API key acting for its creator: role capped by the key and by the creator's
        current membership (none if the creator left or was deactivated)."""
        from orgs.models import Membership

        creator = key.created_by
        current = None
        if creator.is_active:
            current = (
                Membership.objects.filter(user=creator, organization_id=key.organization_id)
                .values_list("role", flat=True)
                .first()
            )
        context.setdefault("channel", "api")
        return cls(
            organization=key.organization,
            user=creator,
            role=lower_role(key.role, current),
            api_key=key,
            **context,
        )

    @classmethod
    def system(cls, organization: Organization | None, **context) -> Principal:
        """Argus itself (commands, scheduled jobs): every action, audited as ``system``."""
        context.setdefault("channel", "system")
        return cls(organization=organization, user=None, role="ADMIN", is_system=True, **context)

    # --- what the principal may do -----------------------------------------------------
    @property
    def is_member(self) -> bool:
        return self.is_system or self.role is not None

    @property
    def label(self) -> str:
        """How the audit log names this principal."""
        if self.user is not None:
            return self.user.email
        return "system" if self.is_system else ""

    def scope_allows(self, action: str) -> bool:
        """Whether an API key's scopes open ``action`` (always true without a key)."""
        if self.api_key is None:
            return True
        return any(action in SCOPE_ACTIONS.get(scope, ()) for scope in self.api_key.scopes)

    def in_role(self, action: str) -> bool:
        """Whether the role's baseline alone allows ``action``."""
        return self.is_system or (self.role is not None and action in ROLE_ACTIONS[self.role])

    def granted(self, model: type[models.Model], action: str) -> frozenset[Any]:
        """Primary keys of ``model`` rows granted ``action`` to the user or their teams
        in this organization; one query per model and action, then cached."""
        cache_key = (model, action)
        if cache_key not in self._granted:
            condition = granted_condition(self, model, action)
            self._granted[cache_key] = (
                frozenset(model._base_manager.filter(condition).values_list("pk", flat=True))
                if condition is not None
                else frozenset()
            )
        return self._granted[cache_key]

    def org_allows(self, action: str) -> bool:
        """The role's baseline or a grant of ``action`` on the organization itself."""
        if self.in_role(action):
            return True
        from orgs.models import Organization

        return self.organization.pk in self.granted(Organization, action)


def scope_principal(scope: dict) -> Principal | None:
    """The principal of a websocket connection: its API key (if its secret still
    works), or its user in the organization chosen in its session; ``None`` for anyone
    else."""
    from orgs.services import current_organization

    key = scope.get("api_key")
    if key is not None:
        from orgs.services import api_key_still_valid

        # Checked again on every subscription: revoked, expired or rotated away since
        # the handshake means nothing more.
        key = api_key_still_valid(key.pk, scope.get("api_key_hash", ""))
        return Principal.for_api_key(key, channel="api") if key is not None else None
    user = scope.get("user")
    organization = current_organization(user, scope.get("session"))
    if organization is None:
        return None
    return Principal.member(user, organization)


def object_topic(model: type[models.Model]):
    """A realtime topic hook for ``<kind>:<id>`` of ``model``: the organization of a row
    the connection's principal may view, or ``None`` (unknown and forbidden look alike)."""

    def hook(scope: dict, arg: str | None) -> int | None:
        if arg is None or not arg.isdigit():
            return None
        principal = scope_principal(scope)
        if principal is None:
            return None
        return (
            model.objects.for_user(principal, Action.VIEW)
            .filter(pk=int(arg))
            .values_list("organization_id", flat=True)
            .first()
        )

    return hook


def mapped_action(model: type[models.Model], action: str) -> str:
    """The action an operation on ``model`` really needs (``permission_map``)."""
    return getattr(model, "permission_map", {}).get(action, action)


def carries_grants(model: type[models.Model]) -> bool:
    """Whether grants reach ``model`` rows: its own grant tables or its grant parent's."""
    return grant_models(grant_holder(model)[0]) is not None


def grant_holder(model: type[models.Model]) -> tuple[type[models.Model], str]:
    """The model whose grants cover ``model`` rows, and the lookup from ``model`` to it
    (``pk`` for the model itself, the ``grant_parent`` field otherwise)."""
    parent = getattr(model, "grant_parent", None)
    if parent is None:
        return model, "pk"
    return model._meta.get_field(parent).related_model, parent


def grant_models(model: type[models.Model]):
    """The (user grants, team grants) models of ``model``, or ``None``."""
    from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

    user_model = team_model = None
    for relation in model._meta.related_objects:
        related = relation.related_model
        if relation.field.name != "content_object":
            continue
        if issubclass(related, UserObjectPermissionBase):
            user_model = related
        elif issubclass(related, GroupObjectPermissionBase):
            team_model = related
    if user_model is None or team_model is None:
        return None
    return user_model, team_model


def user_grant_models() -> list[type[models.Model]]:
    """Every direct-foreign-key table of grants to users, across the apps."""
    from django.apps import apps
    from guardian.models import UserObjectPermissionBase

    return [
        model
        for model in apps.get_models()
        if issubclass(model, UserObjectPermissionBase)
        and isinstance(model._meta.get_field("content_object"), models.ForeignKey)
    ]


def granted_condition(principal: Principal, model: type[models.Model], action: str) -> Q | None:
    """A filter on ``model`` for the rows granted ``action`` to the principal's user or
    their teams, or ``None`` when the model carries no grants, no person acts, or an
    API key acts: a key is bounded by its role cap, which grants do not lift."""
    holder, lookup = grant_holder(model)
    tables = grant_models(holder)
    if (
        tables is None
        or principal.user is None
        or not principal.is_member
        or principal.api_key is not None
    ):
        return None
    user_grants, team_grants = tables
    codename = f"{action}_{holder._meta.model_name}"
    direct = user_grants.objects.filter(user=principal.user, permission__codename=codename)
    through_teams = team_grants.objects.filter(
        permission__codename=codename,
        group__team__organization=principal.organization,
        group__team__members__user=principal.user,
    )
    return Q(**{f"{lookup}__in": direct.values("content_object")}) | Q(
        **{f"{lookup}__in": through_teams.values("content_object")}
    )


def _organization_id(obj: models.Model) -> Any:
    path = getattr(type(obj), "organization_path", "organization")
    if path == "pk":
        return obj.pk
    *parents, last = path.split("__")
    value: Any = obj
    for part in parents:
        value = getattr(value, part)
    return getattr(value, f"{last}_id")


def _reachable(principal: Principal, model: type[models.Model]) -> bool:
    """Steps 1 and 2: a member (not a former one), and no API key on session-only rows."""
    if not principal.is_member:
        return False
    return principal.api_key is None or not getattr(model, "session_only", False)


def can(principal: Principal, action: str, obj: models.Model) -> bool:
    """Whether ``principal`` may do ``action`` on ``obj``.

    False for an object of another organization: callers turn that into a 404.
    """
    model = type(obj)
    if not _reachable(principal, model) or _organization_id(obj) != principal.organization.pk:
        return False
    owner_field = getattr(model, "owner_field", None)
    owns = (
        owner_field is not None
        and principal.user is not None
        and getattr(obj, f"{owner_field}_id") == principal.user.pk
        and action in (Action.VIEW, Action.CHANGE)
    )
    if owns and principal.scope_allows(action):
        return True
    action = mapped_action(model, action)
    if not principal.scope_allows(action):
        return False
    if principal.org_allows(action):
        return True
    return obj.pk in principal.granted(model, action)


def can_create(principal: Principal, model: type[models.Model]) -> bool:
    """Whether ``principal`` may create ``model`` rows in its organization."""
    if not _reachable(principal, model):
        return False
    if getattr(model, "owner_field", None) and principal.scope_allows(Action.CHANGE):
        return True
    action = mapped_action(model, Action.CHANGE)
    return principal.scope_allows(action) and principal.org_allows(action)


def can_list(principal: Principal, model: type[models.Model]) -> bool:
    """Whether a list of ``model`` can show the principal anything at all: its role
    (or an organization grant) allows viewing them, or it may own or be granted some."""
    if not _reachable(principal, model):
        return False
    if getattr(model, "owner_field", None) or carries_grants(model):
        return True
    needed = mapped_action(model, Action.VIEW)
    return principal.scope_allows(needed) and principal.org_allows(needed)


def denial(
    principal: Principal, action: str, model: type[models.Model], *, creating: bool = False
) -> str:
    """Why ``principal`` may not do ``action`` on a ``model`` row (or create one), said
    the same way by services, views and the API: the key's scopes, or the rights."""
    needed = mapped_action(model, action)
    if principal.api_key is not None and not principal.scope_allows(needed):
        return f"This API key's scopes do not allow '{needed}'."
    if creating:
        name = model._meta.verbose_name
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"You are not allowed to create {article} {name}."
    return f"You are not allowed to {needed} this {model._meta.verbose_name}."


def still_visible(principal: Principal, obj: models.Model) -> bool:
    """After a write: whether ``obj`` (if it still exists) is still in the principal's
    permitted set; the base views roll the write back when it is not."""
    model = type(obj)
    if obj.pk is None or not model._base_manager.filter(pk=obj.pk).exists():
        return True
    return model.objects.for_user(principal, Action.VIEW).filter(pk=obj.pk).exists()


class OrgQuerySet(models.QuerySet):
    """Querysets of organization-scoped models: ``for_user`` is the only way to narrow."""

    def in_organization(self, organization: Organization) -> OrgQuerySet:
        path = getattr(self.model, "organization_path", "organization")
        return self.filter(**{path: organization.pk})

    def for_user(self, principal: Principal, action: str) -> OrgQuerySet:
        """Rows of the principal's organization it may do ``action`` on; built on
        subqueries, so it composes with further filters and pagination."""
        model = self.model
        scoped = self.in_organization(principal.organization)
        if not _reachable(principal, model):
            return scoped.none()
        allowed = Q(pk__in=[])
        owner_field = getattr(model, "owner_field", None)
        if (
            owner_field is not None
            and principal.user is not None
            and action in (Action.VIEW, Action.CHANGE)
            and principal.scope_allows(action)
        ):
            allowed |= Q(**{owner_field: principal.user})
        needed = mapped_action(model, action)
        if principal.scope_allows(needed):
            if principal.org_allows(needed):
                return scoped
            condition = granted_condition(principal, model, needed)
            if condition is not None:
                allowed |= condition
        return scoped.filter(allowed)
