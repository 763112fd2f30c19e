"""People and organizations.

The foundation holds what the demo organization and the ``org`` topic need: the user
(email is the login), the organization and its memberships. The identity issue adds
teams, invitations, API keys, audit and the permission framework.
"""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.utils import timezone

from orgs.choices import Plan, Role


class UserManager(BaseUserManager):
    """Creates users keyed by a normalized email address."""

    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra_fields)

    def get_by_natural_key(self, username):
        return self.get(**{f"{self.model.USERNAME_FIELD}__iexact": username})


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an email address."""

    email = models.EmailField("email address", unique=True)
    name = models.CharField("name", max_length=150, blank=True)
    is_staff = models.BooleanField(
        "staff", default=False, help_text="May sign in to the Django admin."
    )
    is_active = models.BooleanField("active", default=True)
    date_joined = models.DateTimeField("joined", default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = "user"
        verbose_name_plural = "users"
        ordering = ["email"]

    def __str__(self):
        return self.email

    def get_full_name(self):
        return self.name or self.email

    def get_short_name(self):
        return self.name or self.email.split("@")[0]


class Organization(models.Model):
    """A tenant: every domain row belongs to exactly one organization."""

    name = models.CharField("name", max_length=100)
    slug = models.SlugField("slug", max_length=50, unique=True)
    plan = models.CharField("plan", max_length=20, choices=Plan.choices, default=Plan.FREE)
    created_at = models.DateTimeField("created", auto_now_add=True)

    class Meta:
        verbose_name = "organization"
        verbose_name_plural = "organizations"
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name", "id"], name="orgs_organization_name_idx")]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A user's role inside one organization."""

    user = models.ForeignKey(
        User, verbose_name="user", on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization,
        verbose_name="organization",
        on_delete=models.CASCADE,
        related_name="memberships",
    )
    role = models.CharField("role", max_length=20, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField("joined", auto_now_add=True)

    class Meta:
        verbose_name = "membership"
        verbose_name_plural = "memberships"
        ordering = ["organization_id", "user_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"],
                name="%(app_label)s_%(class)s_unique_member",
                violation_error_message="This user is already a member of the organization.",
            )
        ]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.get_role_display()})"
