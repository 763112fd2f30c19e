"""Shared fixtures: the broker, the personas of two organizations, real processes."""

import os
import shutil

import pytest
from django.conf import settings

from argus import embedded
from argus.broker import redis_client
from orgs.choices import Role
from orgs.models import Membership, Organization, User
from tests.support.personas import PASSWORD, Personas, make_personas, make_user


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


@pytest.fixture(autouse=True)
def clean_cache():
    """No rate-limit or throttle counts carried from one test to the next (only the
    cache's own keys: the Redis database also holds the broker and event streams)."""
    yield
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    client = redis_client()
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def organization(db):
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def member(organization):
    """An OPERATOR of Acme (password ``PASSWORD``)."""
    user = make_user("ada@acme.test")
    Membership.objects.create(user=user, organization=organization, role=Role.OPERATOR)
    return user


@pytest.fixture
def outsider(db):
    """The ADMIN of another organization."""
    other = Organization.objects.create(name="Other", slug="other")
    user = make_user("eve@other.test")
    Membership.objects.create(user=user, organization=other, role=Role.ADMIN)
    return user


@pytest.fixture
def root(db):
    """A superuser, for the Django admin."""
    return User.objects.create_superuser("root@argus.test", PASSWORD)


@pytest.fixture
def staff_client(client, root):
    client.force_login(root)
    return client


@pytest.fixture
def personas(db) -> Personas:
    """Organization A with an admin, a manager, an operator and a viewer and a team;
    organization B with its admin (the outsider) and a team."""
    return make_personas()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def browser():
    """Headless Debian Chromium through Playwright (never a downloaded browser).

    Put it last in a test's arguments: Playwright runs an event loop in this thread and
    the ORM refuses to run inside one, so database fixtures must be set up before it.
    """
    if not shutil.which(CHROMIUM):
        if os.environ.get("ARGUS_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
