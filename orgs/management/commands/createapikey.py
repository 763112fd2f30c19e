"""``argus createapikey``: an API key acting for a member, its secret on stdout."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from orgs import services
from orgs.choices import Role, Scope
from orgs.management import bootstrap
from orgs.models import User
from orgs.permissions import Principal

DEFAULT_NAME = "Created with argus createapikey"


class Command(BaseCommand):
    help = (
        "Create an API key acting for a member of an organization. Only the secret is "
        "printed on stdout, so scripts can capture it; it is shown once and never stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, metavar="SLUG", help="the organization")
        parser.add_argument(
            "--email", required=True, help="the member the key acts for (its creator)"
        )
        parser.add_argument(
            "--scopes",
            required=True,
            type=bootstrap.scopes,
            metavar="SCOPE,…",
            help=f"comma-separated, from {', '.join(Scope.values)}",
        )
        parser.add_argument("--name", default=DEFAULT_NAME, help="what the key is for")
        parser.add_argument(
            "--role",
            type=bootstrap.role,
            help=f"cap the key at this role ({', '.join(Role.values)}); default the member's role",
        )
        parser.add_argument(
            "--expires-days",
            type=bootstrap.positive_days,
            metavar="N",
            help="the key stops working after N days (default: never)",
        )

    def handle(self, *args, org, email, scopes, name, role, expires_days, **options):
        organization = bootstrap.organization_by_slug(org)
        user = User.objects.filter(email__iexact=email.strip()).first()
        if user is None:
            raise CommandError(f"there is no account with the email address {email!r}")
        if not user.is_active:
            raise CommandError(f"the account {user.email} is deactivated")
        principal = Principal.member(user, organization, channel="system")
        if not principal.is_member:
            raise CommandError(
                f"{user.email} is not a member of {organization.name} ({organization.slug}); "
                "add them first with `argus createuser`"
            )
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        with bootstrap.service_errors():
            key, secret = services.create_api_key(
                principal, name, scopes=scopes, role=role, expires_at=expires_at
            )
        self.stdout.write(secret)
        expiry = f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "no expiry"
        self.stderr.write(
            f"API key {key.name!r} ({key.prefix}…) acts for {user.email} in "
            f"{organization.slug}: scopes {', '.join(key.scopes)}, role {key.role}, {expiry}. "
            "The secret above is shown only this once.",
            style_func=self.style.WARNING,
        )
