"""Permission tests written once and applied to every organization-scoped model (STYLE 19).

Each app registers a :class:`PermissionSuite` per model (in ``tests/<app>/suites.py``):
how to make an object in an organization, which roles may do which action, and, when
the model has REST endpoints, where they are and what to send. The generic tests in
``tests/test_permission_suites.py`` then check, for every suite: the role baseline of
``can``, that ``for_user`` agrees with ``can``, the outsider, API key scopes,
per-object grants to users and teams, and every endpoint for anonymous callers, the
outsider, another organization's API key and each role. A meta-test fails for a model
that has ``for_user`` but no suite.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orgs.permissions import ROLE_ACTIONS, Action

ALL_ROLES = frozenset({"ADMIN", "MANAGER", "OPERATOR", "VIEWER"})
ADMIN_ONLY = frozenset({"ADMIN"})
MANAGER_UP = frozenset({"ADMIN", "MANAGER"})
OPERATOR_UP = frozenset({"ADMIN", "MANAGER", "OPERATOR"})


@dataclass
class PermissionSuite:
    """How one model takes part in the generic permission tests."""

    model: type
    # make(personas, organization) -> a row of ``model`` in that organization
    make: Callable[[Any, Any], Any]
    # action -> roles allowed on the object; actions not listed follow the role
    # baseline (ROLE_ACTIONS)
    rights: dict[str, frozenset[str]]
    # REST list URL (``/api/v1/teams/``), if the model has endpoints
    api: str | None = None
    # payload to create one through the API (None: the API cannot create these)
    create_payload: Callable[[Any], dict] | None = None
    # payload to change one through the API with PATCH (None: no PATCH)
    update_payload: Callable[[Any, Any], dict] | None = None
    api_delete: bool = False
    # roles allowed to create (defaults to the ``change`` rights)
    create_rights: frozenset[str] | None = None
    # endpoints refuse API keys entirely (key management)
    session_only: bool = False
    # console pages about one object: (URL name taking ``pk``, HTTP method)
    console_urls: list[tuple[str, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def allowed(self, role: str, action: str) -> bool:
        if action in self.rights:
            return role in self.rights[action]
        return action in ROLE_ACTIONS[role]

    def may_create(self, role: str) -> bool:
        if self.create_rights is not None:
            return role in self.create_rights
        return self.allowed(role, Action.CHANGE)

    @property
    def id(self) -> str:
        return f"{self.model._meta.app_label}.{self.model.__name__}"


SUITES: dict[type, PermissionSuite] = {}


def register(suite: PermissionSuite) -> PermissionSuite:
    SUITES[suite.model] = suite
    return suite
