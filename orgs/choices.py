"""Vocabularies of the orgs app, with the badge colours the console renders them in."""

from django.db import models

from argus.choices import register_colors


class Role(models.TextChoices):
    """A member's role in an organization; each grants a baseline of actions."""

    ADMIN = "ADMIN", "Admin"
    MANAGER = "MANAGER", "Manager"
    OPERATOR = "OPERATOR", "Operator"
    VIEWER = "VIEWER", "Viewer"


ROLE_COLORS = register_colors(
    Role, {Role.ADMIN: "red", Role.MANAGER: "orange", Role.OPERATOR: "blue", Role.VIEWER: "gray"}
)


class Plan(models.TextChoices):
    """An organization's plan; the identity issue attaches limits to each."""

    FREE = "FREE", "Free"
    STARTER = "STARTER", "Starter"
    PRO = "PRO", "Pro"
    ENTERPRISE = "ENTERPRISE", "Enterprise"


PLAN_COLORS = register_colors(
    Plan, {Plan.FREE: "gray", Plan.STARTER: "blue", Plan.PRO: "purple", Plan.ENTERPRISE: "green"}
)
