"""``argus createuser``: add a person to an organization, creating their account."""

from django.core.management.base import BaseCommand
from django.db import transaction

from orgs import services
from orgs.choices import Role
from orgs.management import bootstrap
from orgs.permissions import Principal


class Command(BaseCommand):
    help = (
        "Make EMAIL a member of an organization with a role, creating the account when "
        "it does not exist (an existing account keeps its password)."
    )

    def add_arguments(self, parser):
        parser.add_argument("email", metavar="EMAIL", help="the person's email address")
        parser.add_argument("--org", required=True, metavar="SLUG", help="the organization")
        parser.add_argument(
            "--role",
            required=True,
            type=bootstrap.role,
            help=f"one of {', '.join(Role.values)}, any case",
        )
        parser.add_argument(
            "--password-file",
            metavar="FILE",
            help="a new account's password, on the first line of FILE "
            "(default: generate one and print it once)",
        )

    def handle(self, *args, email, org, role, password_file, **options):
        organization = bootstrap.organization_by_slug(org)
        with bootstrap.service_errors(), transaction.atomic():
            user, login = bootstrap.ensure_account(email, password_file)
            services.add_member(Principal.system(organization, channel="system"), user, role)
        self.stdout.write(
            self.style.SUCCESS(f"Added {user.email} to {organization.name} as {Role(role).label}.")
        )
        for line in login:
            self.stdout.write(line)
