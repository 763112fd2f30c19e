"""``argus createorg``: an organization and its owner, for a headless installation."""

from django.core.management.base import BaseCommand
from django.db import transaction

from orgs import services
from orgs.choices import Plan
from orgs.management import bootstrap


class Command(BaseCommand):
    help = (
        "Create an organization with OWNER as its admin, creating the owner's account "
        "when it does not exist (an existing account keeps its password)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", metavar="NAME", help="the organization's name")
        parser.add_argument(
            "--owner", required=True, metavar="EMAIL", help="email address of the first admin"
        )
        parser.add_argument(
            "--password-file",
            metavar="FILE",
            help="a new owner account's password, on the first line of FILE "
            "(default: generate one and print it once)",
        )
        parser.add_argument(
            "--plan",
            type=bootstrap.plan,
            default=Plan.FREE,
            help=f"one of {', '.join(Plan.values)}, any case (default {Plan.FREE})",
        )
        parser.add_argument("--slug", help="its name in URLs (default: derived from NAME)")

    def handle(self, *args, name, owner, password_file, plan, slug, **options):
        # One transaction: a refused organization leaves no new account behind.
        with bootstrap.service_errors(), transaction.atomic():
            user, login = bootstrap.ensure_account(owner, password_file)
            organization = services.create_organization(
                name, owner=user, slug=slug, plan=plan, channel="system"
            )
        self.stdout.write(
            self.style.SUCCESS(f"Created organization {organization.name}, {user.email} its admin.")
        )
        self.stdout.write(f"slug:     {organization.slug}")
        for line in login:
            self.stdout.write(line)
