"""What the bootstrap commands (``createorg``, ``createuser``, ``createapikey``) share:
checking their arguments, creating accounts, and turning service errors into
``CommandError``."""

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError

from argus.errors import ServiceError
from orgs import services
from orgs.choices import Plan, Role, Scope
from orgs.models import Organization, User


def read_password_file(path: str) -> str:
    """The password on the first line of ``path``, stripped.

    Raises ``CommandError`` when the file cannot be read or its first line is empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(f"cannot read the password file {path}: {reason}") from None
    lines = text.splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise CommandError(
            f"the password file {path} is empty: its first line must be the password"
        )
    return password


def _choice(value: str, choices: type, what: str) -> str:
    wanted = value.strip().upper()
    for choice in choices.values:
        if choice.upper() == wanted:
            return choice
    raise argparse.ArgumentTypeError(
        f"unknown {what} {value!r}; choose from {', '.join(choices.values)}"
    )


def role(value: str) -> str:
    """An argparse type: a role, in any letter case."""
    return _choice(value, Role, "role")


def plan(value: str) -> str:
    """An argparse type: a plan, in any letter case."""
    return _choice(value, Plan, "plan")


def scopes(value: str) -> list[str]:
    """An argparse type: comma-separated API key scopes, in any letter case."""
    chosen = [_choice(part, Scope, "scope") for part in value.split(",") if part.strip()]
    if not chosen:
        raise argparse.ArgumentTypeError(f"give at least one scope: {', '.join(Scope.values)}")
    return chosen


def positive_days(value: str) -> int:
    """An argparse type: a whole number of days, at least 1."""
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 day, not {days}")
    return days


def organization_by_slug(slug: str) -> Organization:
    """The organization with ``slug``; ``CommandError`` when there is none."""
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise CommandError(f"there is no organization with the slug {slug!r}")
    return organization


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn what the services raise into ``CommandError`` with their message."""
    try:
        yield
    except ServiceError as exc:
        if exc.field == "password":
            raise CommandError(f"the password is refused: {exc.message}") from None
        raise CommandError(exc.message) from None
    except PermissionDenied as exc:
        raise CommandError(str(exc) or "not allowed") from None


def ensure_account(email: str, password_file: str | None) -> tuple[User, list[str]]:
    """The account with ``email``, created when missing (call inside the command's
    transaction), and the lines telling the person how to sign in.

    A new account's password is the password file's, or generated and returned once
    in those lines; an existing account keeps its password.
    """
    password = read_password_file(password_file) if password_file else None
    existed = User.objects.filter(email__iexact=(email or "").strip()).exists()
    user, generated = services.ensure_account(email, password)
    lines = [f"login:    {user.email}"]
    if generated is not None:
        lines.append(f"password: {generated}  (shown only this once: store it now)")
    elif not existed:
        lines.append("password: the one in the password file")
    else:
        unused = "; the password file was not used" if password_file else ""
        lines.append(f"password: unchanged (the account already existed{unused})")
    return user, lines
