"""Shared fixtures: the broker, an organization with its people, real processes."""

import pytest
from django.conf import settings

from argus import embedded
from argus.broker import redis_client
from orgs.choices import Role
from orgs.models import Membership, Organization, User


@pytest.fixture(scope="session", autouse=True)
def broker():
    """The Redis the settings point at; in embedded mode, started here like `argus up` does."""
    if settings.REDIS_URL_SET:
        redis_client().ping()
        yield None
        return
    process = embedded.start_broker(settings.DATA_DIR)
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture
def clean_heartbeats():
    """No worker or beat stamps left by other tests or processes."""
    keys = [f"argus:heartbeat:{component}" for component in ("worker", "beat", "consumer")]
    redis_client().delete(*keys)
    yield
    redis_client().delete(*keys)


@pytest.fixture
def organization(db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def member(organization):
    user = User.objects.create_user("ada@acme.test", "correct horse battery")
    Membership.objects.create(user=user, organization=organization, role=Role.OPERATOR)
    return user


@pytest.fixture
def outsider(db):
    other = Organization.objects.create(name="Other", slug="other")
    user = User.objects.create_user("eve@other.test", "correct horse battery")
    Membership.objects.create(user=user, organization=other, role=Role.ADMIN)
    return user
