"""The people every permission test uses (STYLE 19)."""

from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.contrib.auth.models import Group

from orgs.choices import Plan, Role
from orgs.models import Membership, Organization, Team, User
from orgs.permissions import Principal

PASSWORD = "correct horse battery"
ROLES = [Role.ADMIN, Role.MANAGER, Role.OPERATOR, Role.VIEWER]


def make_user(email: str, password: str = PASSWORD, **fields) -> User:
    """A user whose address is verified, so they can sign in in every configuration."""
    user = User.objects.create_user(email, password, **fields)
    EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
    return user


def make_team(organization: Organization, name: str, members=()) -> Team:
    group = Group.objects.create(name=f"test-team-{organization.slug}-{name}")
    team = Team.objects.create(organization=organization, name=name, group=group)
    team.members.set(Membership.objects.filter(organization=organization, user__in=members))
    return team


@dataclass
class Personas:
    org_a: Organization
    org_b: Organization
    admin: User
    manager: User
    operator: User
    viewer: User
    outsider: User
    team_a: Team
    team_b: Team

    def user(self, role: str) -> User:
        return {
            Role.ADMIN: self.admin,
            Role.MANAGER: self.manager,
            Role.OPERATOR: self.operator,
            Role.VIEWER: self.viewer,
        }[role]

    def principal(self, who, **context) -> Principal:
        """A principal for a role of A (``"VIEWER"``), a user, or ``"outsider"``."""
        if who == "outsider":
            return Principal.member(self.outsider, self.org_b, **context)
        user = who if isinstance(who, User) else self.user(who)
        return Principal.member(user, self.org_a, **context)


def make_personas() -> Personas:
    # PRO: room for the rows permission tests create; limits have tests of their own.
    org_a = Organization.objects.create(name="Alpha", slug="alpha", plan=Plan.PRO)
    org_b = Organization.objects.create(name="Bravo", slug="bravo", plan=Plan.PRO)
    people = {}
    for role in ROLES:
        user = make_user(f"{role.lower()}@alpha.test", name=f"{role.title()} of Alpha")
        Membership.objects.create(user=user, organization=org_a, role=role)
        people[role] = user
    outsider = make_user("admin@bravo.test", name="Admin of Bravo")
    Membership.objects.create(user=outsider, organization=org_b, role=Role.ADMIN)
    return Personas(
        org_a=org_a,
        org_b=org_b,
        admin=people[Role.ADMIN],
        manager=people[Role.MANAGER],
        operator=people[Role.OPERATOR],
        viewer=people[Role.VIEWER],
        outsider=outsider,
        team_a=make_team(org_a, "Readers", [people[Role.VIEWER]]),
        team_b=make_team(org_b, "Bravo team", [outsider]),
    )
