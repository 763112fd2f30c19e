"""Writes and lookups of the orgs app; every caller (console, commands, tasks) uses these."""

import secrets
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery
from django.utils.text import slugify

from orgs.choices import Role
from orgs.models import Membership, Organization, User

SESSION_ORGANIZATION_KEY = "argus_organization_id"
DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.argus.local"
DEMO_LOGIN_FILE = "demo-login.txt"


class OrganizationError(ValueError):
    """An organization cannot be created as asked."""


def create_organization(name: str, *, owner: User, slug: str | None = None) -> Organization:
    """Create an organization with ``owner`` as its first ADMIN.

    Raises :class:`OrganizationError` when the slug is empty or taken.
    """
    slug = slugify(slug or name)
    if not slug:
        raise OrganizationError("The organization needs a name made of letters or digits.")
    taken = OrganizationError(f"The slug {slug!r} is already taken.")
    if Organization.objects.filter(slug=slug).exists():
        raise taken
    try:
        with transaction.atomic():
            organization = Organization.objects.create(name=name, slug=slug)
            Membership.objects.create(user=owner, organization=organization, role=Role.ADMIN)
    except IntegrityError:  # created by someone else between the check and the insert
        raise taken from None
    return organization


def current_organization(user, session) -> Organization | None:
    """The organization the user works in: the one chosen in this session if the user is
    still a member, else their first; ``None`` for a user with no membership.

    The organization carries the user's role in it as ``member_role``.
    """
    if user is None or not user.is_authenticated:
        return None
    role = Membership.objects.filter(user=user, organization=OuterRef("pk")).values("role")
    memberships = Organization.objects.filter(memberships__user=user).annotate(
        member_role=Subquery(role[:1])
    )
    chosen = session.get(SESSION_ORGANIZATION_KEY) if session is not None else None
    if chosen is not None:
        organization = memberships.filter(pk=chosen).first()
        if organization is not None:
            return organization
    return memberships.order_by("name", "id").first()


def seed_demo_organization(data_dir: Path) -> tuple[User, str | None, bool]:
    """Create the demo organization and its admin on first run.

    Returns the admin user, the password generated on first run (read back from
    ``data_dir`` on later runs; ``None`` if that file is gone) and whether anything
    was created now. The password file is readable by its owner only.
    """
    login_file = Path(data_dir) / DEMO_LOGIN_FILE
    with transaction.atomic():
        user = User.objects.filter(email__iexact=DEMO_EMAIL).first()
        created = user is None
        password = None
        if created:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(DEMO_EMAIL, password, name="Demo admin")
        organization = Organization.objects.filter(slug=DEMO_SLUG).first()
        if organization is None:
            organization = create_organization("Demo", owner=user, slug=DEMO_SLUG)
            created = True
        elif not Membership.objects.filter(user=user, organization=organization).exists():
            Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
    if password is not None:
        login_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        login_file.touch(mode=0o600)
        login_file.chmod(0o600)
        login_file.write_text(f"{DEMO_EMAIL}\n{password}\n", encoding="utf-8")
    elif login_file.exists():
        lines = login_file.read_text(encoding="utf-8").splitlines()
        password = lines[1] if len(lines) > 1 else None
    return user, password, created
