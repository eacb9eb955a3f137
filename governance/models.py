"""Governance data: the hash-chained audit log, policies and their versions, rate and cap
counters, circuit breakers, budgets with their reservations, and the cost ledger."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from controlplane.immutable import ImmutableModel
from controlplane.models import Membership, slug_validator
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
            # The run filter and the decision log: the runtime writes run_id in the data.
            models.Index(KeyTransform("run_id", "data"), name="audit_data_run"),
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


# --- Budgets and the cost ledger --------------------------------------------------------------

# USD amounts: Decimal with 8 places (1e-8 USD, the precision costs are computed to).
USD_DIGITS = {"max_digits": 20, "decimal_places": 8}
DEFAULT_ALERT_THRESHOLDS = (50, 80, 100)
MAX_ALERT_THRESHOLD_PERCENT = 1000
MAX_ALERT_THRESHOLDS = 10
RESERVED_BUDGET_NAMES = frozenset({"new"})  # budgets/new/ is the create page


def default_alert_thresholds() -> list[int]:
    return list(DEFAULT_ALERT_THRESHOLDS)


class BudgetScope(models.TextChoices):
    PROJECT = "project", "Project"
    AGENT = "agent", "Agent"
    USER = "user", "User"


class BudgetPeriodKind(models.TextChoices):
    DAY = "day", "Day"
    MONTH = "month", "Month"
    TOTAL = "total", "Total"


class Budget(models.Model):
    """A spending limit in USD for one period (day, month or all time) of a project.

    Scope says which calls count against it: ``project`` (every model and priced tool call
    of the project), ``user`` (calls made for ``user``) or ``agent`` (calls of agent versions
    that reference this budget; the reference lives on the agent version). Days and months
    start at midnight in the project's time zone. A ``hard`` budget denies a call whose
    worst-case cost would take spent + reserved above ``limit_usd``; a soft one allows it
    and alerts. ``alert_thresholds`` are percentages of the limit (each alerts once per
    period). Usage lives in ``BudgetPeriod`` rows, one per period, so a new period starts
    at zero without resetting anything.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="budgets"
    )
    name = models.CharField(
        max_length=50,
        validators=[slug_validator],
        help_text="Unique in the project; 1-50 lowercase letters, digits and inner hyphens.",
    )
    description = models.CharField(max_length=500, blank=True)
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="budgets",
        help_text="The user whose calls count (user scope only).",
    )
    period = models.CharField(max_length=16, choices=BudgetPeriodKind.choices)
    limit_usd = models.DecimalField(**USD_DIGITS)
    hard = models.BooleanField(
        default=True, help_text="Hard: deny calls that would exceed the limit. Soft: allow, alert."
    )
    alert_thresholds = models.JSONField(
        default=default_alert_thresholds,
        blank=True,
        help_text="Percentages of the limit that alert once per period, e.g. [50, 80, 100].",
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="budget_unique_name"),
            models.CheckConstraint(
                condition=models.Q(limit_usd__gt=0), name="budget_limit_positive"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(scope=BudgetScope.USER, user__isnull=False)
                    | (~models.Q(scope=BudgetScope.USER) & models.Q(user__isnull=True))
                ),
                name="budget_user_iff_user_scope",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.name in RESERVED_BUDGET_NAMES:
            errors["name"] = f"{self.name!r} is reserved (it names a page); choose another name."
        if self.limit_usd is not None and self.limit_usd <= 0:
            errors["limit_usd"] = "The limit must be more than 0 USD."
        if self.scope == BudgetScope.USER and self.user_id is None:
            errors["user"] = "A user budget needs a user."
        elif self.scope and self.scope != BudgetScope.USER and self.user_id is not None:
            errors["user"] = f"Only user budgets name a user (this one has scope {self.scope})."
        if (
            self.scope == BudgetScope.USER
            and self.user_id is not None
            and self.project_id
            and not Membership.objects.filter(
                project_id=self.project_id, user_id=self.user_id
            ).exists()
        ):
            errors["user"] = "The user is not a member of this project."
        message = alert_thresholds_error(self.alert_thresholds)
        if message:
            errors["alert_thresholds"] = message
        else:
            self.alert_thresholds = sorted(self.alert_thresholds)
        if errors:
            raise ValidationError(errors)


def alert_thresholds_error(value) -> str | None:
    """Why ``value`` is not a valid threshold list (None when it is): a list of at most 10
    distinct whole percentages from 1 to 1000."""
    if not isinstance(value, list):
        return "Give a list of percentages, e.g. [50, 80, 100]."
    if len(value) > MAX_ALERT_THRESHOLDS:
        return f"At most {MAX_ALERT_THRESHOLDS} thresholds."
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            return f"Item {index}: {item!r} is not a whole percentage."
        if not 1 <= item <= MAX_ALERT_THRESHOLD_PERCENT:
            return f"Item {index}: {item} is not between 1 and {MAX_ALERT_THRESHOLD_PERCENT}."
    if len(set(value)) != len(value):
        return "Thresholds must not repeat."
    return None


class BudgetPeriod(models.Model):
    """Usage of one budget in one period: ``spent_usd`` (settled costs) and ``reserved_usd``
    (worst-case amounts of calls in flight).

    ``period_start`` is the first local date of the period in the project's time zone (the
    day itself, the first of the month, or 1970-01-01 for ``total``). Rows are created on
    first use with ``INSERT ... ON CONFLICT DO NOTHING`` and changed only under
    ``SELECT ... FOR UPDATE`` by the budget services.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="periods")
    period_start = models.DateField()
    spent_usd = models.DecimalField(**USD_DIGITS, default=Decimal(0))
    reserved_usd = models.DecimalField(**USD_DIGITS, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["budget", "-period_start"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start"], name="budget_period_unique"),
            models.CheckConstraint(
                condition=models.Q(reserved_usd__gte=0), name="budget_period_reserved_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id}@{self.period_start}"


class ReservationStatus(models.TextChoices):
    RESERVED = "reserved", "Reserved"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class BudgetReservation(models.Model):
    """The worst-case amount held for one call (``call_id``, unique) against every budget
    that applied to it (``lines``), until the call is settled with its real cost, released
    (the call failed) or expired (nobody settled it before ``expires_at``)."""

    call_id = models.CharField(max_length=200, unique=True)
    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="budget_reservations"
    )
    amount_usd = models.DecimalField(**USD_DIGITS)
    status = models.CharField(
        max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.RESERVED
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    settled_usd = models.DecimalField(**USD_DIGITS, null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="budget_resv_status_expiry"),
            models.Index(fields=["project", "status"], name="budget_resv_project_status"),
        ]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.status}"


class BudgetReservationLine(models.Model):
    """One budget a reservation holds ``amount_usd`` against, in the period row it used."""

    reservation = models.ForeignKey(
        BudgetReservation, on_delete=models.CASCADE, related_name="lines"
    )
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="reservation_lines")
    period = models.ForeignKey(BudgetPeriod, on_delete=models.CASCADE, related_name="+")
    amount_usd = models.DecimalField(**USD_DIGITS)

    class Meta:
        ordering = ["budget_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reservation", "budget"], name="budget_resv_line_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} -> {self.budget_id}: {self.amount_usd}"


class BudgetAlert(models.Model):
    """A threshold (percent of the limit) that the period's spent amount reached. Unique per
    (budget, period, threshold): each threshold alerts once per period."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateField()
    threshold = models.PositiveSmallIntegerField()
    spent_usd = models.DecimalField(**USD_DIGITS)
    limit_usd = models.DecimalField(**USD_DIGITS)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold"], name="budget_alert_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget_id}@{self.period_start}: {self.threshold}%"


class CostKind(models.TextChoices):
    MODEL = "model", "Model call"
    TOOL = "tool", "Tool call"


class PriceSource(models.TextChoices):
    GENAI_PRICES = "genai-prices", "genai-prices"
    OVERRIDE = "override", "Override"


class CostEntry(models.Model):
    """The cost ledger: one row per model call and per priced tool call.

    ``call_id`` is unique, so a retried step never charges twice. The price used is frozen
    with the row: ``price_source`` (genai-prices' bundled data, or an override), the rates
    in USD per million tokens and the genai-prices version. Agent, version and tool are
    nullable links (``SET_NULL``) so the ledger outlives them; ``run_id`` and ``step_id``
    are plain strings until runs are stored.
    """

    call_id = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=8, choices=CostKind.choices)
    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="cost_entries"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    agent_version = models.ForeignKey(
        "agents.AgentVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    tool = models.ForeignKey(
        "agents.Tool", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    run_id = models.CharField(max_length=64, blank=True, db_index=True)
    step_id = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(**USD_DIGITS)
    price_source = models.CharField(max_length=16, choices=PriceSource.choices)
    input_usd_per_mtok = models.DecimalField(**USD_DIGITS, null=True, blank=True)
    output_usd_per_mtok = models.DecimalField(**USD_DIGITS, null=True, blank=True)
    cache_read_usd_per_mtok = models.DecimalField(**USD_DIGITS, null=True, blank=True)
    cache_write_usd_per_mtok = models.DecimalField(**USD_DIGITS, null=True, blank=True)
    price_library_version = models.CharField(max_length=32, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "cost entries"
        indexes = [
            models.Index(fields=["project", "occurred_at"], name="cost_project_time"),
            models.Index(fields=["agent", "occurred_at"], name="cost_agent_time"),
            models.Index(fields=["user", "occurred_at"], name="cost_user_time"),
            models.Index(fields=["model", "occurred_at"], name="cost_model_time"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(cost_usd__gte=0), name="cost_usd_gte_0")
        ]

    def __str__(self) -> str:
        return f"{self.call_id}: {self.cost_usd} USD"


class CostRollup(models.Model):
    """The cost ledger summed per local day and dimension combination, kept in step by
    ``cost_record`` (one upsert in the entry's transaction) and rebuilt from the ledger by
    ``cost_rollup_rebuild`` (``manage.py cost_rollup_rebuild``), e.g. after bulk loads.

    ``day`` is the date in ``time_zone`` (the project's zone when the entry was written);
    reports read rollups only when every row of the range has the project's current zone,
    else they sum the ledger itself. Ids are plain integers (0 = none) so the unique key
    has no NULLs; the ledger stays the source of truth. USD as Decimal.
    """

    project = models.ForeignKey("controlplane.Project", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    time_zone = models.CharField(max_length=64)
    agent_pk = models.BigIntegerField(default=0)
    agent_version_pk = models.BigIntegerField(default=0)
    user_pk = models.BigIntegerField(default=0)
    tool_pk = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=8, choices=CostKind.choices)
    cost_usd = models.DecimalField(**USD_DIGITS, default=Decimal(0))
    entries = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["project", "day"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "project",
                    "time_zone",
                    "day",
                    "agent_pk",
                    "agent_version_pk",
                    "user_pk",
                    "tool_pk",
                    "model",
                    "provider",
                    "kind",
                ],
                name="cost_rollup_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.project_id}@{self.day}: {self.cost_usd} USD"
