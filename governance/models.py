"""Governance data: the hash-chained audit log, policies and their versions, rate and cap
counters, circuit breakers (budgets and the cost ledger follow)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane.immutable import ImmutableModel
from governance.audit_chain import GENESIS_HASH_VALUE as GENESIS_HASH


class AuditLogImmutableError(Exception):
    """Raised when code tries to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogImmutableError("audit events are append-only")

    def delete(self):
        raise AuditLogImmutableError("audit events are append-only")


class AuditEvent(models.Model):
    """One audit event: who did what to which object, when, in which project and request.

    Append-only: the model refuses updates and deletes, and on PostgreSQL a trigger
    (migration 0002) rejects UPDATE, DELETE and TRUNCATE, except the ``SET NULL`` of the
    ``actor``/``project`` foreign keys when a user or project is deleted. Those two
    columns are not hashed; their frozen counterparts (``actor_name``, ``actor_ref``,
    ``project_ref``) are. ``hash`` is SHA-256 over the canonical encoding of the event
    including ``prev_hash`` (see ``governance.audit_chain``), so any change to a stored
    event, or a removed one, breaks the chain that ``manage.py audit_verify`` walks.
    """

    sequence = models.PositiveBigIntegerField(primary_key=True)
    occurred_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_kind = models.CharField(max_length=20)
    actor_name = models.CharField(max_length=200)
    actor_ref = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(
        "controlplane.Project",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    project_ref = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        indexes = [
            models.Index(fields=["project", "sequence"], name="audit_project_seq"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutableError("audit events are append-only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutableError("audit events are append-only")


class AuditChainHead(models.Model):
    """The single row holding the last sequence number and hash of the audit chain.

    Appending locks this row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite takes its
    database write lock at BEGIN IMMEDIATE), so concurrent writers form one chain.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_head_single")]

    def __str__(self) -> str:
        return f"audit head #{self.sequence}"


# --- Policies -----------------------------------------------------------------------------


class Policy(models.Model):
    """A named, versioned governance policy of a project (PII rules, caps, allowed model
    endpoints, default approver role, circuit breaker settings).

    The policy with slug ``default`` applies to every agent of the project; an agent
    version may reference another policy of the same project instead. ``active_version``
    is the version in force; an invalid document never becomes a version, so the previous
    good one stays active.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="policies"
    )
    slug = models.SlugField(max_length=50)
    description = models.CharField(max_length=500, blank=True)
    active_version = models.ForeignKey(
        "PolicyVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "slug"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="policy_unique_slug")
        ]

    def __str__(self) -> str:
        return self.slug


class PolicyVersion(ImmutableModel):
    """One immutable version of a policy: the YAML ``document`` as written (comments kept)
    and ``spec``, the validated document as JSON (what the engine reads)."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    document = models.TextField()
    spec = models.JSONField()
    change_note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="policy_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.policy.slug} v{self.number}"


class PolicyActivation(models.Model):
    """Append-only record that ``version`` became active for its policy at ``activated_at``."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="activations")
    version = models.ForeignKey(PolicyVersion, on_delete=models.CASCADE, related_name="+")
    activated_at = models.DateTimeField(default=timezone.now, db_index=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["policy", "-activated_at", "-id"]

    def __str__(self) -> str:
        return f"{self.version} at {self.activated_at:%Y-%m-%d %H:%M:%S}"


class UsageCounter(models.Model):
    """An atomic counter for rate limits (one row per key and fixed window) and per-run
    caps (``window_start`` 0, no expiry).

    Incremented with one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement
    (PostgreSQL and SQLite >= 3.35), so concurrent callers never read-then-write.
    ``window_start`` is in seconds since the Unix epoch; rows past ``expires_at`` are
    deleted by a beat task.
    """

    key = models.CharField(max_length=200)
    window_start = models.BigIntegerField(default=0)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="usage_counter_unique")
        ]

    def __str__(self) -> str:
        return f"{self.key}@{self.window_start}={self.count}"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"


class CircuitBreaker(models.Model):
    """The circuit breaker of one tool (``key`` ``tool:<id>``).

    Closed: calls pass; outcomes are counted in a fixed window of ``window_seconds``, and
    the breaker opens when at least ``min_calls`` ended with an error rate at or above the
    policy's ``error_rate``. Open: calls are denied until the cool-down has passed; then
    one probe call is let through (half-open). The probe's success closes the breaker,
    its failure opens it again.
    """

    key = models.CharField(max_length=200, unique=True)
    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="+", null=True
    )
    label = models.CharField(max_length=200, blank=True)
    state = models.CharField(
        max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED
    )
    window_started_at = models.DateTimeField(default=timezone.now)
    calls = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    probe_started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.label or self.key}: {self.state}"
