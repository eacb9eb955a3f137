"""Tenancy: users, projects, memberships with roles, project-scoped API tokens, worker heartbeats."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """The project's user model (a plain Django user, swappable from day one)."""

    class Meta:
        db_table = "controlplane_user"


class Role(models.TextChoices):
    """Project roles, ordered: each role can do everything the roles before it can.

    viewer reads; operator changes agents, tools and flows and starts runs; approver also
    decides approval requests; admin also manages members, tokens and the project itself.
    """

    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.value]

    def includes(self, other: Role | str) -> bool:
        """True when this role is at least ``other``."""
        return ROLE_RANK[self.value] >= ROLE_RANK[Role(other).value]


ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.APPROVER: 2, Role.ADMIN: 3}

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and inner hyphens.",
)


@lru_cache(maxsize=1)
def time_zone_names() -> frozenset[str]:
    """IANA time zone names known to ``zoneinfo`` (system tz database or ``tzdata``)."""
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    """Raise ``ValidationError`` unless ``value`` is an IANA time zone name (``Europe/Berlin``)."""
    if value not in time_zone_names():
        raise ValidationError(
            f"{value!r} is not an IANA time zone name (for example UTC or Europe/Berlin).",
            code="invalid_time_zone",
        )


class Project(models.Model):
    """The tenant: every agent, flow, run, budget, approval and audit event belongs to one.

    ``time_zone`` (IANA name, default UTC) is where the project's days and months begin:
    daily and monthly budget periods are computed in it.
    """

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="IANA time zone name; budget days and months start at midnight there.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The project's time zone as a ``ZoneInfo``."""
        return zoneinfo.ZoneInfo(self.time_zone)


class Membership(models.Model):
    """A user's role in one project."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["project__slug", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user"),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class TokenScope(models.TextChoices):
    """What an API token may do, on top of its creator's role: read, write, approve."""

    READ = "read", "Read"
    WRITE = "write", "Write"
    APPROVE = "approve", "Approve"


class ApiToken(models.Model):
    """A bearer token scoped to one project, acting for the user who created it.

    Only a SHA-256 digest of the token is stored; the plaintext
    (``cpt_<prefix>_<secret>``, 43 random URL-safe characters of secret = 256 bits) is
    shown once at creation. A plain hash (not a slow KDF) is enough because the secret
    is random, not a password. Its power is the intersection of its scopes and its
    creator's current role in ``project``: a creator who leaves the project disables it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def clean(self) -> None:
        valid = {s.value for s in TokenScope}
        if not isinstance(self.scopes, list) or not self.scopes:
            raise ValidationError({"scopes": "Give at least one scope: read, write or approve."})
        unknown = [s for s in self.scopes if s not in valid]
        if unknown:
            raise ValidationError({"scopes": f"Unknown scope(s): {', '.join(map(str, unknown))}."})
        if len(set(self.scopes)) != len(self.scopes):
            raise ValidationError({"scopes": "Scopes must not repeat."})
        if self.expires_at is not None and self.expires_at <= timezone.now():
            raise ValidationError({"expires_at": "Expiry must be in the future."})

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

    def has_scope(self, scope: TokenScope | str) -> bool:
        return TokenScope(scope).value in self.scopes


class WorkerHeartbeat(models.Model):
    """Last time each Celery worker ran the periodic heartbeat task (shown by /readyz)."""

    hostname = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField()
    beats = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"{self.hostname} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"
