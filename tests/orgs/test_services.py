"""Services of the orgs app that the foundation uses."""

import pytest

from orgs.choices import Role
from orgs.models import Membership, Organization
from orgs.services import (
    DEMO_EMAIL,
    OrganizationError,
    create_organization,
    seed_demo_organization,
)

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_keeps_the_password_private(tmp_path):
    user, password, created = seed_demo_organization(tmp_path)
    assert created and password
    assert user.email == DEMO_EMAIL
    assert user.check_password(password)
    login = tmp_path / "demo-login.txt"
    assert login.read_text().split() == [DEMO_EMAIL, password]
    assert oct(login.stat().st_mode & 0o777) == "0o600"
    demo = Organization.objects.get(slug="demo")
    assert Membership.objects.get(user=user, organization=demo).role == Role.ADMIN

    again, same_password, created_again = seed_demo_organization(tmp_path)
    assert (again, same_password, created_again) == (user, password, False)
    assert Organization.objects.filter(slug="demo").count() == 1


def test_create_organization_refuses_taken_and_empty_slugs(member):
    create_organization("Globex", owner=member)
    with pytest.raises(OrganizationError, match="'globex' is already taken"):
        create_organization("Globex", owner=member)
    with pytest.raises(OrganizationError, match="letters or digits"):
        create_organization("!!!", owner=member)
    assert Organization.objects.filter(slug="globex").count() == 1
