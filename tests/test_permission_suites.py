"""The generic permission tests, applied to every registered suite (STYLE 19)."""

import importlib
import importlib.util

import pytest
from django.apps import apps
from django.urls import reverse

from orgs import services
from orgs.permissions import (
    Action,
    OrgQuerySet,
    Principal,
    can,
    carries_grants,
    grant_holder,
    mapped_action,
)
from tests.support.permission_suite import SUITES
from tests.support.personas import ROLES

APPS = ["orgs", "tools", "agents", "recordings", "tasks"]
for _app in APPS:
    if importlib.util.find_spec(f"tests.{_app}") and importlib.util.find_spec(
        f"tests.{_app}.suites"
    ):
        importlib.import_module(f"tests.{_app}.suites")

SUITE_LIST = list(SUITES.values())
API_SUITES = [suite for suite in SUITE_LIST if suite.api]
GRANT_SUITES = [suite for suite in SUITE_LIST if carries_grants(suite.model)]


def suite_id(suite):
    return suite.id


def grant_target(obj):
    """Where grants covering ``obj`` are made: itself, or its grant parent (a tool's server)."""
    _holder, lookup = grant_holder(type(obj))
    return obj if lookup == "pk" else getattr(obj, lookup)


def test_every_organization_scoped_model_has_a_suite():
    """The meta-test: a model reachable through ``for_user`` without a suite fails here."""
    scoped = [
        model
        for app in APPS
        for model in apps.get_app_config(app).get_models()
        if isinstance(model._default_manager.all(), OrgQuerySet)
    ]
    assert scoped, "no organization-scoped model found"
    missing = [model.__name__ for model in scoped if model not in SUITES]
    assert not missing, f"models without a permission suite: {missing}"


# --- can and for_user ---------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITE_LIST, ids=suite_id)
@pytest.mark.parametrize("role", ROLES)
def test_role_baseline(personas, suite, role):
    obj = suite.make(personas, personas.org_a)
    principal = personas.principal(role)
    for action in Action.values:
        expected = suite.allowed(role, action)
        assert can(principal, action, obj) is expected, (role, action)
        in_list = suite.model.objects.for_user(principal, action).filter(pk=obj.pk).exists()
        assert in_list is expected, (role, action, "for_user disagrees with can")


@pytest.mark.parametrize("suite", SUITE_LIST, ids=suite_id)
def test_outsider_gets_nothing_of_another_organization(personas, suite):
    obj = suite.make(personas, personas.org_a)
    own = suite.make(personas, personas.org_b)
    outsider = personas.principal("outsider")
    for action in Action.values:
        assert not can(outsider, action, obj), action
        visible = set(suite.model.objects.for_user(outsider, action).values_list("pk", flat=True))
        assert obj.pk not in visible, action
    assert own.pk in set(
        suite.model.objects.for_user(outsider, Action.VIEW).values_list("pk", flat=True)
    )


@pytest.mark.parametrize("suite", SUITE_LIST, ids=suite_id)
def test_former_member_gets_nothing(personas, suite):
    obj = suite.make(personas, personas.org_a)
    principal = personas.principal("ADMIN")
    personas.admin.memberships.all().delete()
    gone = Principal.member(personas.admin, personas.org_a)
    assert principal.is_member and not gone.is_member
    for action in Action.values:
        assert not can(gone, action, obj)
        assert not suite.model.objects.for_user(gone, action).exists()


@pytest.mark.parametrize("suite", SUITE_LIST, ids=suite_id)
def test_api_key_is_bounded_by_its_scopes(personas, suite):
    obj = suite.make(personas, personas.org_a)
    admin = personas.principal("ADMIN")
    key, _secret = services.create_api_key(admin, "read only", scopes=["read"])
    principal = Principal.for_api_key(key)
    for action in Action.values:
        # ``read`` opens ``view`` only: not a ``view`` that the model maps to ``manage``.
        expected = (
            mapped_action(suite.model, action) == Action.VIEW
            and suite.allowed("ADMIN", action)
            and not getattr(suite.model, "session_only", False)
        )
        assert can(principal, action, obj) is expected, action
        visible = suite.model.objects.for_user(principal, action).filter(pk=obj.pk).exists()
        assert visible is expected, action


# --- per-object grants ---------------------------------------------------------------------


@pytest.mark.parametrize("suite", GRANT_SUITES, ids=suite_id)
def test_grant_to_a_user_adds_actions_on_that_object_only(personas, suite):
    obj = suite.make(personas, personas.org_a)
    other = (
        suite.make(personas, personas.org_a) if suite.model is not type(personas.org_a) else None
    )
    admin = personas.principal("ADMIN")
    for action in Action.values:
        if suite.allowed("VIEWER", action):
            continue
        viewer = personas.principal("VIEWER")
        assert not can(viewer, action, obj)
        services.grant(admin, action, grant_target(obj), user=personas.viewer)
        viewer = personas.principal("VIEWER")  # a principal caches grants per request
        assert can(viewer, action, obj), action
        assert suite.model.objects.for_user(viewer, action).filter(pk=obj.pk).exists()
        if other is not None:
            assert not can(viewer, action, other), action
        services.revoke_grant(admin, action, grant_target(obj), user=personas.viewer)
        assert not can(personas.principal("VIEWER"), action, obj), action


@pytest.mark.parametrize("suite", GRANT_SUITES, ids=suite_id)
def test_grant_to_a_team_reaches_its_members_only(personas, suite):
    obj = suite.make(personas, personas.org_a)
    admin = personas.principal("ADMIN")
    action = Action.MANAGE
    services.grant(admin, action, grant_target(obj), team=personas.team_a)  # viewer in team_a
    assert can(personas.principal("VIEWER"), action, obj)
    assert not can(personas.principal("OPERATOR"), action, obj)
    # The grant does not leak to the other organization, nor through an API key scope
    # that does not open the action.
    assert not can(personas.principal("outsider"), action, obj)
    key, _secret = services.create_api_key(personas.principal("VIEWER"), "k", scopes=["read"])
    assert not can(Principal.for_api_key(key), action, obj)
    services.update_team(admin, personas.team_a, members=[])
    assert not can(personas.principal("VIEWER"), action, obj)


@pytest.mark.parametrize("suite", GRANT_SUITES, ids=suite_id)
def test_only_managers_of_the_organization_grant(personas, suite):
    obj = grant_target(suite.make(personas, personas.org_a))
    with pytest.raises(services.PermissionDenied):
        services.grant(personas.principal("MANAGER"), Action.VIEW, obj, user=personas.viewer)
    with pytest.raises(services.ServiceError):
        services.grant(personas.principal("ADMIN"), Action.VIEW, obj, user=personas.outsider)
    with pytest.raises(services.ServiceError):
        services.grant(personas.principal("ADMIN"), Action.VIEW, obj, team=personas.team_b)
    with pytest.raises(services.PermissionDenied):
        services.grant(personas.principal("outsider"), Action.VIEW, obj, user=personas.outsider)


# --- REST endpoints ------------------------------------------------------------------------


def _ids(response):
    body = response.json()
    rows = body["results"] if isinstance(body, dict) and "results" in body else body
    return {row["id"] for row in rows}


@pytest.mark.parametrize("suite", API_SUITES, ids=suite_id)
def test_api_refuses_anonymous_callers(client, personas, suite):
    obj = suite.make(personas, personas.org_a)
    for response in (client.get(suite.api), client.get(f"{suite.api}{obj.pk}/")):
        assert response.status_code == 401
        assert response.json()["detail"]
    assert client.post(suite.api, {}, content_type="application/json").status_code == 401


@pytest.mark.parametrize("suite", API_SUITES, ids=suite_id)
def test_api_hides_another_organization(client, personas, suite):
    obj = suite.make(personas, personas.org_a)
    client.force_login(personas.outsider)
    assert obj.pk not in _ids(client.get(suite.api))
    detail = f"{suite.api}{obj.pk}/"
    assert client.get(detail).status_code == 404
    if suite.update_payload:
        payload = suite.update_payload(personas, obj)
        assert client.patch(detail, payload, content_type="application/json").status_code == 404
    if suite.api_delete:
        assert client.delete(detail).status_code == 404
    assert suite.model.objects.filter(pk=obj.pk).exists()


@pytest.mark.parametrize("suite", API_SUITES, ids=suite_id)
def test_api_with_another_organizations_key(client, personas, suite):
    obj = suite.make(personas, personas.org_a)
    _key, secret = services.create_api_key(
        personas.principal("outsider"), "bravo", scopes=["read", "write", "execute", "admin"]
    )
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    listed = client.get(suite.api, **headers)
    if suite.session_only:
        assert listed.status_code == 403
        return
    assert listed.status_code == 200
    assert obj.pk not in _ids(listed)
    assert client.get(f"{suite.api}{obj.pk}/", **headers).status_code == 404


@pytest.mark.parametrize("suite", API_SUITES, ids=suite_id)
@pytest.mark.parametrize("role", ROLES)
def test_api_by_role(client, personas, suite, role):
    obj = suite.make(personas, personas.org_a)
    client.force_login(personas.user(role))
    may_view = suite.allowed(role, Action.VIEW)
    may_change = suite.allowed(role, Action.CHANGE)

    listed = client.get(suite.api)
    assert listed.status_code == 200, listed.content
    assert (obj.pk in _ids(listed)) is may_view

    detail = f"{suite.api}{obj.pk}/"
    assert client.get(detail).status_code == (200 if may_view else 404)

    if suite.create_payload:
        created = client.post(
            suite.api, suite.create_payload(personas), content_type="application/json"
        )
        assert created.status_code == (201 if suite.may_create(role) else 403), created.content

    hidden = 404 if not may_view else 403
    if suite.update_payload:
        payload = suite.update_payload(personas, obj)
        changed = client.patch(detail, payload, content_type="application/json")
        assert changed.status_code == (200 if may_change else hidden), changed.content
    if suite.api_delete:
        deleted = client.delete(detail)
        assert deleted.status_code == (204 if may_change else hidden), deleted.content
        assert suite.model.objects.filter(pk=obj.pk).exists() is not may_change


# --- console pages ---------------------------------------------------------------------------

CONSOLE_CASES = [
    pytest.param(suite, name, method, id=f"{suite.id}-{name}-{method}")
    for suite in SUITE_LIST
    for name, method in suite.console_urls
]


def _snapshot(obj):
    fresh = type(obj)._base_manager.filter(pk=obj.pk).values().first()
    return fresh


@pytest.mark.parametrize(("suite", "name", "method"), CONSOLE_CASES)
def test_console_pages_hide_another_organization(client, personas, suite, name, method):
    """An ADMIN of A asking about B's object gets a 404, and B's object is untouched."""
    obj = suite.make(personas, personas.org_b)
    before = _snapshot(obj)
    client.force_login(personas.admin)
    url = reverse(name, args=[obj.pk])
    response = getattr(client, method)(url, {"role": "VIEWER", "name": "x", "grace_minutes": "0"})
    assert response.status_code == 404
    assert _snapshot(obj) == before


@pytest.mark.parametrize(("suite", "name", "method"), CONSOLE_CASES)
def test_console_pages_need_a_login(client, personas, suite, name, method):
    obj = suite.make(personas, personas.org_a)
    response = getattr(client, method)(reverse(name, args=[obj.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_every_console_page_about_one_object_is_in_a_suite():
    """A new ``<pk>`` page fails here until a suite lists it (so it gets the 404 test)."""
    covered = {name for suite in SUITE_LIST for name, _method in suite.console_urls}
    missing = []
    for app in APPS:
        if importlib.util.find_spec(f"{app}.urls") is None:
            continue
        module = importlib.import_module(f"{app}.urls")
        for pattern in module.urlpatterns:
            name = f"{module.app_name}:{pattern.name}"
            if "<int:pk>" in str(pattern.pattern) and name not in covered:
                missing.append(name)
    assert not missing, f"console pages about one object without a suite: {sorted(missing)}"
