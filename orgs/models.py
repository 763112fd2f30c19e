"""People and organizations: users, organizations, memberships, teams, invitations,
API keys, per-object grants and the hash-chained audit log.
"""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import Group, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from orgs.choices import AuditChannel, InvitationStatus, Plan, Role
from orgs.permissions import Action, OrgQuerySet, action_permissions


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
    last_organization = models.ForeignKey(
        "Organization",
        verbose_name="last organization",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Where the console opens when a new session has not chosen one.",
    )

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
    """A tenant: every domain row belongs to exactly one organization.

    Per-object grants on the organization itself lift a member's rights on everything
    in it (a MANAGER granted ``manage`` reads the audit log, for instance).
    """

    name = models.CharField("name", max_length=100)
    slug = models.SlugField("slug", max_length=50, unique=True)
    plan = models.CharField("plan", max_length=20, choices=Plan.choices, default=Plan.FREE)
    four_eyes_approval = models.BooleanField(
        "four-eyes approval",
        default=True,
        help_text="Whoever requests an approval cannot also grant it.",
    )
    redaction_keys = models.JSONField(
        "extra redaction keys",
        default=list,
        blank=True,
        help_text="Argument and result keys redacted in recordings, on top of the defaults.",
    )
    retention_days = models.PositiveIntegerField(
        "recording retention (days)",
        null=True,
        blank=True,
        help_text="Empty means the longest the plan allows.",
    )
    record_raw_arguments = models.BooleanField(
        "keep raw arguments (encrypted)",
        default=True,
        help_text="Lets replays use real values; only people allowed to reveal can see them.",
    )
    # The kill switch: while set, every agent of the organization is paused and every
    # gate refuses its tool calls (agents.services.pause_agents / resume_agents).
    agents_paused_at = models.DateTimeField("agents paused", null=True, blank=True)
    agents_paused_by = models.ForeignKey(
        "orgs.User",
        verbose_name="agents paused by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    agents_paused_reason = models.CharField("why agents are paused", max_length=500, blank=True)
    created_at = models.DateTimeField("created", auto_now_add=True)

    # Actions on an organization are decided by its own role map and grants.
    organization_path = "pk"
    permission_map = {Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "organization"
        verbose_name_plural = "organizations"
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name", "id"], name="orgs_organization_name_idx")]
        default_permissions = ()
        permissions = action_permissions("organization")

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

    permission_map = {Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "membership"
        verbose_name_plural = "memberships"
        ordering = ["organization_id", "user_id"]
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"],
                name="%(app_label)s_%(class)s_unique_member",
                violation_error_message="This user is already a member of the organization.",
            )
        ]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.get_role_display()})"


class OrganizationUserGrant(UserObjectPermissionBase):
    """A per-object grant of an action on an organization to one user."""

    content_object = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE
    )

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "organization grant to a user"
        verbose_name_plural = "organization grants to users"


class OrganizationTeamGrant(GroupObjectPermissionBase):
    """A per-object grant of an action on an organization to a team (its group)."""

    content_object = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE
    )

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "organization grant to a team"
        verbose_name_plural = "organization grants to teams"


class Team(models.Model):
    """A named group of members, usable as the holder of per-object grants.

    Grants are stored by django-guardian against the team's own auth group; members
    are memberships, so leaving the organization leaves its teams too.
    """

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="teams"
    )
    name = models.CharField("name", max_length=100)
    description = models.TextField("description", blank=True)
    group = models.OneToOneField(
        Group, verbose_name="permission group", on_delete=models.CASCADE, related_name="team"
    )
    members = models.ManyToManyField(
        Membership, verbose_name="members", related_name="teams", blank=True
    )
    created_at = models.DateTimeField("created", auto_now_add=True)

    permission_map = {Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "team"
        verbose_name_plural = "teams"
        ordering = ["organization_id", "name"]
        default_permissions = ()
        permissions = action_permissions("team")
        constraints = [
            models.UniqueConstraint(
                Lower("name"),
                "organization",
                name="%(app_label)s_%(class)s_unique_name",
                violation_error_message="A team with this name already exists.",
            )
        ]
        indexes = [models.Index(fields=["organization", "name"], name="orgs_team_org_name_idx")]

    def __str__(self):
        return self.name


class TeamUserGrant(UserObjectPermissionBase):
    """A per-object grant of an action on a team to one user (a team lead, say)."""

    content_object = models.ForeignKey(Team, verbose_name="team", on_delete=models.CASCADE)

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "team grant to a user"
        verbose_name_plural = "team grants to users"


class TeamTeamGrant(GroupObjectPermissionBase):
    """A per-object grant of an action on a team to another team."""

    content_object = models.ForeignKey(Team, verbose_name="team", on_delete=models.CASCADE)

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "team grant to a team"
        verbose_name_plural = "team grants to teams"


class Invitation(models.Model):
    """An invitation to join an organization with a role; the token is kept only hashed."""

    organization = models.ForeignKey(
        Organization,
        verbose_name="organization",
        on_delete=models.CASCADE,
        related_name="invitations",
    )
    email = models.EmailField("email address")
    role = models.CharField("role", max_length=20, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField("token hash", max_length=64, unique=True, editable=False)
    status = models.CharField(
        "status",
        max_length=20,
        choices=InvitationStatus.choices,
        default=InvitationStatus.PENDING,
    )
    invited_by = models.ForeignKey(
        User,
        verbose_name="invited by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField("created", default=timezone.now)
    expires_at = models.DateTimeField("expires")
    sent_at = models.DateTimeField("last sent", default=timezone.now)
    send_count = models.PositiveIntegerField("times sent", default=1)
    decided_at = models.DateTimeField("accepted or revoked", null=True, blank=True)
    accepted_by = models.ForeignKey(
        User,
        verbose_name="accepted by",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    permission_map = {Action.VIEW: Action.MANAGE, Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "invitation"
        verbose_name_plural = "invitations"
        ordering = ["organization_id", "-created_at"]
        default_permissions = ()
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="orgs_invitation_org_idx")
        ]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                "organization",
                condition=models.Q(status="PENDING"),
                name="%(app_label)s_%(class)s_one_pending",
                violation_error_message="This address already has a pending invitation.",
            )
        ]

    def __str__(self):
        return f"{self.email} to {self.organization}"

    @property
    def is_expired(self):
        return self.status == InvitationStatus.PENDING and self.expires_at <= timezone.now()

    @property
    def effective_status(self):
        """The status as a person would read it: a lapsed pending invitation is expired."""
        return InvitationStatus.EXPIRED if self.is_expired else self.status


class ApiKey(models.Model):
    """A secret that acts for its creator in one organization, within scopes and a role cap.

    Only a keyed hash of the secret is kept. During a rotation's grace period the
    previous secret's hash is kept too, and either secret works.
    """

    organization = models.ForeignKey(
        Organization, verbose_name="organization", on_delete=models.CASCADE, related_name="api_keys"
    )
    created_by = models.ForeignKey(
        User, verbose_name="created by", on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField("name", max_length=100)
    prefix = models.CharField("prefix", max_length=24, editable=False)
    key_hash = models.CharField("key hash", max_length=64, unique=True, editable=False)
    previous_hash = models.CharField(
        "previous key hash", max_length=64, null=True, blank=True, unique=True, editable=False
    )
    previous_valid_until = models.DateTimeField("previous key valid until", null=True, blank=True)
    scopes = models.JSONField("scopes", default=list)
    role = models.CharField(
        "role cap",
        max_length=20,
        choices=Role.choices,
        help_text="The key never acts above this role, nor above its creator's current role.",
    )
    expires_at = models.DateTimeField("expires", null=True, blank=True)
    created_at = models.DateTimeField("created", default=timezone.now)
    rotated_at = models.DateTimeField("rotated", null=True, blank=True)
    last_used_at = models.DateTimeField("last used", null=True, blank=True)
    use_count = models.PositiveBigIntegerField("uses", default=0)
    revoked_at = models.DateTimeField("revoked", null=True, blank=True)

    # Everyone manages their own keys; ``manage`` sees everyone's. Never through a key.
    owner_field = "created_by"
    session_only = True
    permission_map = {Action.VIEW: Action.MANAGE, Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        ordering = ["organization_id", "-created_at"]
        default_permissions = ()
        indexes = [models.Index(fields=["organization", "-created_at"], name="orgs_apikey_org_idx")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self):
        return self.revoked_at is not None

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self):
        return not self.is_revoked and not self.is_expired


class AuditChainHead(models.Model):
    """The newest link of one audit chain (one per organization, one for the installation).

    Writers lock this row, so appends to a chain are serialized and never fork it.
    """

    key = models.CharField("chain", max_length=40, unique=True)
    seq = models.PositiveBigIntegerField("last sequence number", default=0)
    hash = models.CharField("last hash", max_length=64, blank=True)

    class Meta:
        verbose_name = "audit chain head"
        verbose_name_plural = "audit chain heads"
        ordering = ["key"]

    def __str__(self):
        return f"{self.key} at {self.seq}"


class AuditEvent(models.Model):
    """One audited write, hash-chained to the previous event of its organization.

    Actor and API key references keep their ids even if those rows are deleted
    (no database constraint), because the ids are part of the hashed record.
    """

    organization = models.ForeignKey(
        Organization,
        verbose_name="organization",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    seq = models.PositiveBigIntegerField("sequence number")
    actor = models.ForeignKey(
        User,
        verbose_name="actor",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField("actor", max_length=254, blank=True)
    api_key = models.ForeignKey(
        ApiKey,
        verbose_name="API key",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    channel = models.CharField("channel", max_length=10, choices=AuditChannel.choices)
    action = models.CharField("action", max_length=64)
    target_type = models.CharField("target type", max_length=64, blank=True)
    target_id = models.CharField("target id", max_length=64, blank=True)
    target_label = models.CharField("target", max_length=254, blank=True)
    changes = models.JSONField("changes", default=dict, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    user_agent = models.CharField("user agent", max_length=512, blank=True)
    request_id = models.CharField("request id", max_length=64, blank=True)
    created_at = models.DateTimeField("time")
    prev_hash = models.CharField("previous hash", max_length=64, blank=True)
    hash = models.CharField("hash", max_length=64)

    permission_map = {Action.VIEW: Action.MANAGE, Action.CHANGE: Action.MANAGE}
    objects = OrgQuerySet.as_manager()

    class Meta:
        verbose_name = "audit event"
        verbose_name_plural = "audit events"
        ordering = ["organization_id", "-seq"]
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "seq"],
                name="%(app_label)s_%(class)s_unique_seq",
                violation_error_message="This sequence number is already used.",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "-seq"], name="orgs_audit_org_seq_idx"),
            models.Index(fields=["organization", "action", "-seq"], name="orgs_audit_action_idx"),
            models.Index(fields=["organization", "-created_at"], name="orgs_audit_time_idx"),
        ]

    def __str__(self):
        return f"#{self.seq} {self.action}"
