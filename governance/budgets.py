"""Budgets and the cost ledger: budget writes, reservations, settlement, alerts, cost entries.

Writes are re-exported by ``governance.services``, reads by ``governance.selectors``.

The model-call path (see ``docs/architecture.md``)::

    budgets = applicable_budgets(project, user=user, agent_budget=version.budget)
    worst = estimate_worst_case_usd(provider, model, prompt_tokens=..., max_output_tokens=...)
    budget_reserve(call_id=call_id, project=project, budgets=budgets,
                   amount_usd=worst.cost_usd)          # BudgetExceeded: do not call
    ... provider call ...                                # failure: budget_release(call_id=...)
    priced = price_usage(provider, model, input_tokens=..., output_tokens=...)
    with transaction.atomic():
        cost_record(call_id=call_id, kind="model", project=project, priced=priced, ...)
        budget_settle(call_id=call_id, actual_usd=priced.cost_usd)

Concurrency. A reservation checks and holds money against every applicable budget in one
transaction. Each budget's usage for the current period is one ``BudgetPeriod`` row,
created race-free (``INSERT ... ON CONFLICT DO NOTHING``) and then locked with
``SELECT ... FOR UPDATE`` in ascending budget id order, so two calls sharing budgets
never deadlock and never both see the same headroom. On SQLite the whole database is
locked at ``BEGIN IMMEDIATE``, which serializes the same way.

Lock order, everywhere: the reservation row (a new one is inserted first, which claims
its call id), then the period rows (by budget id), then the audit chain head
(``audit_record`` runs last). Rows are locked before any of them is changed. Do not call
these services inside a transaction that has already appended audit events: it would hold
the chain head before the period rows.

Alerts are evaluated on settled spend (``spent_usd``) only, never on reservations: a
reservation is a worst-case estimate that is usually released in part, so alerting on it
would report spend that never happened. A soft budget that a reservation takes over its
limit is named in the ``budget.reserved`` audit event (``soft_over_limit``) and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    Case,
    Count,
    DateField,
    DecimalField,
    Exists,
    OuterRef,
    ProtectedError,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from controlplane.db import fetch_instances, insert_unless_exists, instance_from_row, select_clause
from governance.models import (
    USD_DIGITS,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    BudgetPeriodKind,
    BudgetReservation,
    BudgetReservationLine,
    BudgetScope,
    CostEntry,
    CostKind,
    ReservationStatus,
)
from governance.pricing import PricedUsage

logger = logging.getLogger(__name__)

DEFAULT_RESERVATION_TTL_SECONDS = 15 * 60
MAX_RESERVATION_TTL_SECONDS = 24 * 60 * 60
TOTAL_PERIOD_START = date(1970, 1, 1)
MAX_USD = Decimal("999999999999.99999999")  # 20 digits, 8 decimal places
USD_PLACES = Decimal("0.00000001")
EXPIRE_BATCH_SIZE = 500


def format_usd(value: Decimal) -> str:
    """A USD amount for people: at least 2 and at most 8 decimal places, no exponent
    (``Decimal("0E-8")`` -> ``"0.00"``, ``Decimal("0.12345678")`` -> ``"0.12345678"``)."""
    amount = Decimal(value).quantize(USD_PLACES).normalize()
    if amount.as_tuple().exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return f"{amount:f}"


class BudgetExceeded(Exception):
    """A hard budget would go over its limit; nothing was reserved anywhere.

    ``budget`` is the first such budget (by id); amounts are Decimal USD for the period
    starting ``period_start``: ``spent_usd`` + ``reserved_usd`` + ``amount_usd`` >
    ``limit_usd``.
    """

    def __init__(
        self,
        *,
        budget: Budget,
        period_start: date,
        limit_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        amount_usd: Decimal,
    ):
        self.budget = budget
        self.period_start = period_start
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.amount_usd = amount_usd
        super().__init__(
            f"budget {budget.name!r} ({budget.period} from {period_start}) would exceed its "
            f"limit: spent {format_usd(spent_usd)} + reserved {format_usd(reserved_usd)} + "
            f"this call {format_usd(amount_usd)} > limit {format_usd(limit_usd)} USD"
        )

    def as_data(self) -> dict[str, Any]:
        return {
            "budget": self.budget.name,
            "budget_id": self.budget.pk,
            "period_start": self.period_start,
            "limit_usd": self.limit_usd,
            "spent_usd": self.spent_usd,
            "reserved_usd": self.reserved_usd,
            "amount_usd": self.amount_usd,
        }


class ReservationNotFound(LookupError):
    """No reservation has this call id."""


# --- periods ----------------------------------------------------------------------------


def period_start_for(period: str, *, at: datetime, zone: ZoneInfo) -> date:
    """The first local date of the ``period`` (day / month / total) containing ``at`` in
    ``zone``: the date itself, the first of its month, or 1970-01-01 for ``total``."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    local = at.astimezone(zone).date()
    if period == BudgetPeriodKind.DAY:
        return local
    if period == BudgetPeriodKind.MONTH:
        return local.replace(day=1)
    if period == BudgetPeriodKind.TOTAL:
        return TOTAL_PERIOD_START
    raise ValueError(f"unknown budget period {period!r}")


def period_bounds(
    period: str, start: date, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """The period starting ``start`` as aware datetimes ``[begin, end)`` (local midnights in
    ``zone``; a DST change makes a day 23 or 25 hours). ``(None, None)`` for ``total``."""
    if period == BudgetPeriodKind.TOTAL:
        return None, None
    if period == BudgetPeriodKind.DAY:
        end = start + timedelta(days=1)
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (
        datetime.combine(start, time.min, tzinfo=zone),
        datetime.combine(end, time.min, tzinfo=zone),
    )


# --- argument checks --------------------------------------------------------------------


def _usd(value: Any, name: str) -> Decimal:
    """``value`` as a Decimal USD amount >= 0 with at most 8 decimal places."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be a Decimal (USD), got {type(value).__name__}")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite amount >= 0, got {value}")
    if amount > MAX_USD:
        raise ValueError(f"{name} is too large ({value} > {MAX_USD})")
    if amount != amount.quantize(USD_PLACES):
        raise ValueError(f"{name} has more than 8 decimal places: {value}")
    return amount.quantize(USD_PLACES)


def _check_call_id(call_id: Any) -> str:
    if not isinstance(call_id, str) or not call_id.strip():
        raise ValueError("call_id must be a non-empty string")
    if len(call_id) > 200:
        raise ValueError("call_id must be at most 200 characters")
    return call_id


# --- budgets: writes --------------------------------------------------------------------

BUDGET_EDITABLE = ("name", "description", "limit_usd", "hard", "alert_thresholds", "active")
BUDGET_FIXED = ("scope", "period", "user")


def _budget_data(budget: Budget) -> dict[str, Any]:
    return {
        "name": budget.name,
        "scope": budget.scope,
        "user": budget.user.get_username() if budget.user_id else None,
        "period": budget.period,
        "limit_usd": Decimal(budget.limit_usd).quantize(USD_PLACES),
        "hard": budget.hard,
        "alert_thresholds": list(budget.alert_thresholds or []),
        "active": budget.active,
    }


def _validate_budget(budget: Budget) -> None:
    errors: dict[str, list[str]] = {}
    try:
        # Unique name and the scope/user rule are checked in clean() with field keys; the
        # database constraints stay as the backstop.
        budget.full_clean(validate_constraints=False)
    except ValidationError as exc:
        errors = exc.message_dict
    taken = (
        Budget.objects.filter(project_id=budget.project_id, name=budget.name)
        .exclude(pk=budget.pk)
        .exists()
    )
    if budget.name and taken and "name" not in errors:
        errors["name"] = [f"A budget named {budget.name!r} already exists in this project."]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def budget_create(
    *,
    project,
    name: str,
    scope: str,
    period: str,
    limit_usd: Decimal,
    hard: bool = True,
    alert_thresholds: list[int] | None = None,
    user=None,
    description: str = "",
    active: bool = True,
) -> Budget:
    """Create a budget (audited ``budget.created``). ``limit_usd`` is Decimal USD > 0;
    ``alert_thresholds`` percentages (default [50, 80, 100]); ``user`` only for scope
    ``user`` (a member of the project). Raises ``ValidationError`` keyed by field."""
    from governance.services import audit_record

    budget = Budget(
        project=project,
        name=name,
        description=description,
        scope=scope,
        user=user,
        period=period,
        limit_usd=limit_usd,
        hard=hard,
        active=active,
    )
    if alert_thresholds is not None:
        budget.alert_thresholds = alert_thresholds
    _validate_budget(budget)
    budget.save()
    audit_record(action="budget.created", obj=budget, data=_budget_data(budget))
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, **changes: Any) -> Budget:
    """Change ``name``, ``description``, ``limit_usd``, ``hard``, ``alert_thresholds`` and/or
    ``active`` (audited ``budget.updated`` with before/after). Scope, period and user are
    fixed: a different one is a different budget. Usage already recorded stays; a new
    limit or threshold applies from the next check. Raises ``ValidationError``."""
    from governance.services import audit_record

    fixed = {
        key: "This cannot be changed; create another budget."
        for key in changes
        if key in BUDGET_FIXED
    }
    unknown = {
        key: "Unknown field."
        for key in changes
        if key not in BUDGET_EDITABLE and key not in BUDGET_FIXED
    }
    if fixed or unknown:
        raise ValidationError({**fixed, **unknown})
    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    before = _budget_data(budget)
    for key, value in changes.items():
        setattr(budget, key, value)
    _validate_budget(budget)
    budget.save()
    after = _budget_data(budget)
    changed = {key for key in after if after[key] != before[key]}
    if changed:
        audit_record(
            action="budget.updated",
            obj=budget,
            data={
                "before": {k: before[k] for k in sorted(changed)},
                "after": {k: after[k] for k in sorted(changed)},
            },
        )
    return budget


@transaction.atomic
def budget_deactivate(*, budget: Budget) -> Budget:
    """Stop applying the budget to new calls (audited ``budget.deactivated``; idempotent).
    Reservations already made against it are still settled, released or expired."""
    from governance.services import audit_record

    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    if budget.active:
        budget.active = False
        budget.save(update_fields=["active", "updated_at"])
        audit_record(action="budget.deactivated", obj=budget, data={"name": budget.name})
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget) -> None:
    """Delete a budget that was never used (audited ``budget.deleted``). Raises
    ``ValidationError`` when it has recorded usage or reservations, or something (an agent
    version) still refers to it: deactivate it instead, so its history stays."""
    from governance.services import audit_record

    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    used = (
        budget.reservation_lines.exists()
        or budget.periods.filter(Q(spent_usd__gt=0) | Q(reserved_usd__gt=0)).exists()
    )
    if used:
        raise ValidationError(
            {"budget": "This budget has recorded usage; deactivate it instead of deleting it."}
        )
    audit_record(action="budget.deleted", obj=budget, data=_budget_data(budget))
    try:
        with transaction.atomic():
            budget.delete()
    except ProtectedError as exc:
        raise ValidationError(
            {"budget": "This budget is still referenced (e.g. by an agent version); deactivate it."}
        ) from exc


# --- budgets: reads ---------------------------------------------------------------------


@cache
def _budgets_sql(vendor: str) -> tuple[str, tuple]:
    qn = connection.ops.quote_name
    select, parts = select_clause((Budget, "b"))
    sql = (
        f"{select} FROM {qn(Budget._meta.db_table)} b "  # noqa: S608 - names are ours
        f"WHERE b.{qn('project_id')} = %s AND b.{qn('active')} = %s "
        f"AND (b.{qn('scope')} = %s OR (b.{qn('scope')} = %s AND b.{qn('user_id')} = %s)) "
        f"ORDER BY b.{qn('id')}"
    )
    return sql, parts


def applicable_budgets(project, user=None, agent_budget: Budget | None = None) -> list[Budget]:
    """The active budgets a call of ``project`` counts against, ordered by id: every
    project-scope budget, the user-scope budgets of ``user``, and ``agent_budget`` (the
    agent version's budget, scope ``agent``) when active.

    Raises ``ValueError`` when ``agent_budget`` belongs to another project or is not an
    agent budget (fail closed: a misconfigured reference never silently drops a limit).
    """
    user_pk = getattr(user, "pk", None) if user is not None else None
    sql, parts = _budgets_sql(connection.vendor)
    params = [project.pk, True, BudgetScope.PROJECT.value, BudgetScope.USER.value, user_pk]
    budgets = [budget for (budget,) in fetch_instances(sql, params, parts)]
    if agent_budget is not None:
        if agent_budget.project_id != project.pk:
            raise ValueError(f"budget {agent_budget.name!r} belongs to another project")
        if agent_budget.scope != BudgetScope.AGENT:
            raise ValueError(
                f"budget {agent_budget.name!r} has scope {agent_budget.scope}, not agent"
            )
        if agent_budget.active and all(b.pk != agent_budget.pk for b in budgets):
            budgets.append(agent_budget)
    return sorted(budgets, key=lambda b: b.pk)


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """A budget's usage in one period. USD as Decimal; ``available_usd`` = limit - spent -
    reserved (negative when a soft budget is over); ``percent_spent`` and
    ``percent_reserved`` of the limit (floats for display only)."""

    period_start: date
    period_begins: datetime | None
    period_ends: datetime | None
    limit_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def available_usd(self) -> Decimal:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    @property
    def percent_spent(self) -> float:
        return float(self.spent_usd * 100 / self.limit_usd) if self.limit_usd else 0.0

    @property
    def percent_reserved(self) -> float:
        return float(self.reserved_usd * 100 / self.limit_usd) if self.limit_usd else 0.0

    @property
    def over_limit(self) -> bool:
        return self.spent_usd + self.reserved_usd > self.limit_usd

    @property
    def bar_spent_percent(self) -> float:
        """Width of the spent part of a usage bar (0-100)."""
        return min(100.0, max(0.0, self.percent_spent))

    @property
    def bar_reserved_percent(self) -> float:
        """Width of the reserved part, after the spent part (the two never pass 100)."""
        return min(max(0.0, self.percent_reserved), 100.0 - self.bar_spent_percent)


def budget_usage(budget: Budget, *, at: datetime | None = None) -> BudgetUsage:
    """The budget's usage in the period containing ``at`` (default now), in the project's
    time zone. A period nobody used yet reads as zero."""
    zone = budget.project.zone
    start = period_start_for(budget.period, at=at or timezone.now(), zone=zone)
    row = budget.periods.filter(period_start=start).values("spent_usd", "reserved_usd").first()
    begins, ends = period_bounds(budget.period, start, zone)
    return BudgetUsage(
        period_start=start,
        period_begins=begins,
        period_ends=ends,
        limit_usd=budget.limit_usd,
        spent_usd=row["spent_usd"] if row else Decimal(0),
        reserved_usd=row["reserved_usd"] if row else Decimal(0),
    )


def budgets_for_project(project, *, at: datetime | None = None) -> QuerySet[Budget]:
    """The project's budgets, annotated with their current period (``at``, default now, in
    the project's time zone): ``current_period_start``, ``current_spent_usd`` and
    ``current_reserved_usd`` (Decimal USD, 0 when unused). One query."""
    local = (at or timezone.now()).astimezone(project.zone).date()
    start = Case(
        When(period=BudgetPeriodKind.DAY, then=Value(local)),
        When(period=BudgetPeriodKind.MONTH, then=Value(local.replace(day=1))),
        default=Value(TOTAL_PERIOD_START),
        output_field=DateField(),
    )
    current = BudgetPeriod.objects.filter(
        budget=OuterRef("pk"), period_start=OuterRef("current_period_start")
    )
    usd = DecimalField(**USD_DIGITS)
    return (
        Budget.objects.filter(project=project)
        .select_related("user")
        .annotate(current_period_start=start)
        .annotate(
            current_spent_usd=Coalesce(
                Subquery(current.values("spent_usd")[:1]), Value(Decimal(0)), output_field=usd
            ),
            current_reserved_usd=Coalesce(
                Subquery(current.values("reserved_usd")[:1]), Value(Decimal(0)), output_field=usd
            ),
        )
        .order_by("name")
    )


def reservations_for_project(project) -> QuerySet[BudgetReservation]:
    """The project's reservations, newest first, with their lines and budgets."""
    return (
        BudgetReservation.objects.filter(project=project)
        .prefetch_related("lines__budget", "lines__period")
        .order_by("-id")
    )


def reservations_in_flight(budget: Budget) -> QuerySet[BudgetReservation]:
    """Reservations still holding money against ``budget`` (status reserved), oldest first."""
    holds = BudgetReservationLine.objects.filter(reservation=OuterRef("pk"), budget=budget)
    return (
        BudgetReservation.objects.filter(status=ReservationStatus.RESERVED)
        .filter(Exists(holds))
        .order_by("created_at", "id")
    )


def budget_periods(budget: Budget) -> QuerySet[BudgetPeriod]:
    """The budget's usage rows, newest period first."""
    return budget.periods.order_by("-period_start")


def budget_alerts(budget: Budget) -> QuerySet[BudgetAlert]:
    return budget.alerts.order_by("-created_at", "-id")


# --- reservations -----------------------------------------------------------------------


def _lock_periods(budgets: list[Budget], starts: dict[int, date]) -> list[BudgetPeriod]:
    """Create missing period rows race-free, then lock them in ascending budget id order."""
    ordered = sorted(budgets, key=lambda b: b.pk)
    BudgetPeriod.objects.bulk_create(
        [BudgetPeriod(budget_id=b.pk, period_start=starts[b.pk]) for b in ordered],
        ignore_conflicts=True,  # INSERT ... ON CONFLICT DO NOTHING
    )
    return [
        BudgetPeriod.objects.select_for_update().get(budget_id=b.pk, period_start=starts[b.pk])
        for b in ordered
    ]


def budget_reserve(
    *,
    call_id: str,
    project,
    budgets: Iterable[Budget],
    amount_usd: Decimal,
    ttl_seconds: int = DEFAULT_RESERVATION_TTL_SECONDS,
    now: datetime | None = None,
) -> BudgetReservation:
    """Hold ``amount_usd`` (Decimal USD, the call's worst case) against every active budget
    in ``budgets`` for the current period, all or nothing, in one transaction.

    For each budget (ascending id) the period row is created if missing and locked; a hard
    budget whose spent + reserved + amount would exceed its limit raises
    ``BudgetExceeded`` (nothing is reserved anywhere; audited ``budget.reservation.denied``).
    A soft budget allows it (named in the audit event, logged). Inactive budgets are
    skipped. The reservation expires after ``ttl_seconds`` unless settled or released.

    Idempotent: a second call with the same ``call_id`` returns the first reservation and
    holds nothing more. Audited ``budget.reserved``. Raises ``ValueError`` / ``TypeError``
    for a bad call id, a float or negative amount, a bad TTL or a budget of another project.
    """
    from governance.services import audit_record

    _check_call_id(call_id)
    amount = _usd(amount_usd, "amount_usd")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise TypeError("ttl_seconds must be an int")
    if not 0 < ttl_seconds <= MAX_RESERVATION_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be between 1 and {MAX_RESERVATION_TTL_SECONDS}")
    budgets = list(budgets)
    foreign = [b.name for b in budgets if b.project_id != project.pk]
    if foreign:
        raise ValueError(f"budgets of another project: {', '.join(foreign)}")
    now = now or timezone.now()
    exceeded: BudgetExceeded | None = None
    # No savepoint: the governed call path reserves inside its batch, and nothing here
    # raises after writing (a repeated call id is an INSERT that does nothing; a hard budget
    # over its limit deletes the row it inserted and raises after the block).
    with transaction.atomic(savepoint=False):
        # Claim the call id first: a concurrent claimer of the same id makes this insert
        # wait (holding nothing else) and then do nothing; the lock order stays reservation
        # row, then period rows, as in settle / release / expire.
        reservation = BudgetReservation(
            call_id=call_id,
            project=project,
            amount_usd=amount,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        created = insert_unless_exists(reservation)
        if created:
            # Re-read: a budget switched off since the caller read it holds nothing.
            active = (
                list(
                    Budget.objects.filter(pk__in={b.pk for b in budgets}, active=True).order_by(
                        "pk"
                    )
                )
                if budgets
                else []
            )
            zone = project.zone
            starts = {b.pk: period_start_for(b.period, at=now, zone=zone) for b in active}
            periods = _lock_periods(active, starts)
            soft_over: list[str] = []
            for budget, period in zip(active, periods, strict=True):
                if period.spent_usd + period.reserved_usd + amount <= budget.limit_usd:
                    continue
                if budget.hard:
                    exceeded = BudgetExceeded(
                        budget=budget,
                        period_start=period.period_start,
                        limit_usd=budget.limit_usd,
                        spent_usd=period.spent_usd,
                        reserved_usd=period.reserved_usd,
                        amount_usd=amount,
                    )
                    break
                soft_over.append(budget.name)
            if exceeded is not None:
                BudgetReservation.objects.filter(pk=reservation.pk).delete()
            else:
                _hold(reservation, active, periods, amount, soft_over)
    if exceeded is not None:
        logger.info("budget reservation denied: %s", exceeded)
        audit_record(
            action="budget.reservation.denied",
            project=project,
            obj=exceeded.budget,
            data={"call_id": call_id, **exceeded.as_data()},
        )
        raise exceeded
    if not created:
        # The call id was reserved before (a retry) or by a concurrent caller that
        # committed first: theirs is the reservation.
        existing = BudgetReservation.objects.filter(call_id=call_id).first()
        if existing is None:  # pragma: no cover - the conflicting row was just seen
            raise ReservationNotFound(f"no budget reservation has call id {call_id!r}")
        return _same_project(existing, project)
    return reservation


def _hold(reservation, active, periods, amount: Decimal, soft_over: list[str]) -> None:
    """Add ``amount`` to each locked period's reserved total, write the reservation's
    lines and audit ``budget.reserved`` (inside ``budget_reserve``'s transaction)."""
    from governance.services import audit_record

    for period in periods:
        period.reserved_usd += amount
        period.save(update_fields=["reserved_usd", "updated_at"])
    BudgetReservationLine.objects.bulk_create(
        BudgetReservationLine(
            reservation=reservation, budget=budget, period=period, amount_usd=amount
        )
        for budget, period in zip(active, periods, strict=True)
    )
    if soft_over:
        logger.warning(
            "reservation %s takes soft budget(s) %s over their limit",
            reservation.call_id,
            ", ".join(soft_over),
        )
    audit_record(
        action="budget.reserved",
        obj=reservation,
        project=reservation.project,
        data={
            "call_id": reservation.call_id,
            "amount_usd": amount,
            "budgets": [b.name for b in active],
            "soft_over_limit": soft_over,
            "expires_at": reservation.expires_at,
        },
    )


def _same_project(reservation: BudgetReservation, project) -> BudgetReservation:
    if reservation.project_id != project.pk:
        raise ValueError(f"call id {reservation.call_id!r} is reserved in another project")
    return reservation


def _locked_lines(
    reservation: BudgetReservation,
) -> list[tuple[BudgetReservationLine, BudgetPeriod]]:
    """The reservation's lines with their period rows locked (ascending budget id); none
    read when the lock query said it holds no budget (``held``)."""
    if not getattr(reservation, "held", True):
        return []
    lines = list(reservation.lines.select_related("budget").order_by("budget_id"))
    return [
        (line, BudgetPeriod.objects.select_for_update().get(pk=line.period_id)) for line in lines
    ]


_LOCKED_COLUMNS = ("id", "call_id", "project_id", "amount_usd", "status")


def _locked_reservation(call_id: str) -> BudgetReservation | None:
    """The reservation of ``call_id`` locked (``FOR UPDATE``), None if there is none, with
    ``held``: whether it holds any budget (one query: a call under no budget reads no
    lines). SQL by hand, with the other fields deferred: the settlement runs for every
    model call."""
    qn = connection.ops.quote_name
    table = qn(BudgetReservation._meta.db_table)
    lines = qn(BudgetReservationLine._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    columns = ", ".join(f"r.{qn(c)}" for c in _LOCKED_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns}, EXISTS (SELECT 1 FROM {lines} l WHERE l.reservation_id = r.id) "  # noqa: S608
            f"FROM {table} r WHERE r.call_id = %s{lock}",
            [call_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    reservation = instance_from_row(BudgetReservation, _LOCKED_COLUMNS, row[:-1])
    reservation.held = bool(row[-1])
    return reservation


def _lock_reservation(call_id: str) -> BudgetReservation:
    reservation = _locked_reservation(call_id)
    if reservation is None:
        raise ReservationNotFound(f"no budget reservation has call id {call_id!r}")
    return reservation


def _move_status(reservation: BudgetReservation, new_status: str, **fields: Any) -> None:
    """Conditional UPDATE out of the status read under the row lock: exactly one caller
    moves a reservation out of a status. SQL by hand (values through the fields'
    ``get_db_prep_save``), as ``_locked_reservation``."""
    meta = BudgetReservation._meta
    qn = connection.ops.quote_name
    sets = ", ".join(f"{qn(meta.get_field(name).column)} = %s" for name in ["status", *fields])
    values = [
        meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in {"status": new_status, **fields}.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {qn(meta.db_table)} SET {sets} WHERE id = %s AND status = %s",  # noqa: S608
            [*values, reservation.pk, reservation.status],
        )
        changed = cursor.rowcount
    if changed != 1:  # pragma: no cover - the row lock makes this unreachable
        raise RuntimeError(f"reservation {reservation.call_id} changed under its lock")
    reservation.status = new_status
    for key, value in fields.items():
        setattr(reservation, key, value)


def budget_settle(
    *, call_id: str, actual_usd: Decimal, now: datetime | None = None, project=None
) -> BudgetReservation:
    """Replace the reservation of ``call_id`` with the call's real cost ``actual_usd``
    (Decimal USD): for each budget it held, reserved -= reserved amount and spent +=
    actual, once. Then the thresholds of each budget are checked (see
    ``_record_alerts``). Audited ``budget.settled``.

    Idempotent: settling a settled reservation changes nothing and returns it. A
    reservation that was already released or expired (its hold given back) is still
    charged: spent += actual, since the money was spent (``after`` in the audit event
    says from which status). The actual cost may exceed the reserved amount; spent then
    goes over the limit, as it really did.

    ``project`` (optional) is the reservation's project when the caller has it loaded
    (saves reading it again for the audit event). Runs in the caller's transaction when
    there is one (no savepoint: the governed call path settles inside its batch, and an
    error here fails that whole batch); ``ReservationNotFound`` is raised after the block,
    so a caller may catch it and go on.

    Raises ``ReservationNotFound``, and ``ValueError`` / ``TypeError`` for a bad amount.
    """
    from governance.services import audit_record

    _check_call_id(call_id)
    actual = _usd(actual_usd, "actual_usd")
    now = now or timezone.now()
    alerts: list[tuple[Budget, BudgetAlert]] = []
    with transaction.atomic(savepoint=False):
        reservation = _locked_reservation(call_id)
        if reservation is None or reservation.status == ReservationStatus.SETTLED:
            locked = None
        else:
            if project is not None and project.pk == reservation.project_id:
                reservation.project = project
            before = reservation.status
            locked = _locked_lines(reservation)
            _move_status(
                reservation, ReservationStatus.SETTLED, settled_usd=actual, finished_at=now
            )
            for line, period in locked:
                if before == ReservationStatus.RESERVED:
                    period.reserved_usd -= line.amount_usd
                period.spent_usd += actual
                period.save(update_fields=["reserved_usd", "spent_usd", "updated_at"])
                alerts.extend(
                    (line.budget, alert) for alert in _record_alerts(line.budget, period, now)
                )
            audit_record(
                action="budget.settled",
                obj=reservation,
                data={
                    "call_id": call_id,
                    "reserved_usd": reservation.amount_usd,
                    "actual_usd": actual,
                    "after": before,
                    "budgets": [line.budget.name for line, _ in locked],
                },
            )
            for budget, alert in alerts:
                transaction.on_commit(lambda b=budget, a=alert: _send_alert(b, a))
    if reservation is None:
        raise ReservationNotFound(f"no budget reservation has call id {call_id!r}")
    return reservation


def _give_back(reservation: BudgetReservation, new_status: str, now: datetime) -> None:
    locked = _locked_lines(reservation)
    _move_status(reservation, new_status, finished_at=now)
    for line, period in locked:
        period.reserved_usd -= line.amount_usd
        period.save(update_fields=["reserved_usd", "updated_at"])


def budget_release(*, call_id: str, now: datetime | None = None) -> BudgetReservation:
    """Give back the hold of ``call_id`` (the call failed before costing anything):
    reserved -= amount on each budget, once. Audited ``budget.released``. A reservation
    that is no longer reserved (settled, released, expired) is returned unchanged.
    Raises ``ReservationNotFound``."""
    from governance.services import audit_record

    _check_call_id(call_id)
    now = now or timezone.now()
    with transaction.atomic():
        reservation = _lock_reservation(call_id)
        if reservation.status != ReservationStatus.RESERVED:
            return reservation
        _give_back(reservation, ReservationStatus.RELEASED, now)
        audit_record(
            action="budget.released",
            obj=reservation,
            data={"call_id": call_id, "amount_usd": reservation.amount_usd},
        )
    return reservation


def budget_expire_reservations(
    *, now: datetime | None = None, batch_size: int = EXPIRE_BATCH_SIZE
) -> int:
    """Expire reservations still held past their ``expires_at`` (their caller died or
    hung): give back their holds, status expired, audited ``budget.reservation.expired``
    each. Each reservation is its own transaction. Returns how many expired (at most
    ``batch_size`` per call; the beat task runs it every minute)."""
    from governance.services import audit_record

    now = now or timezone.now()
    ids = list(
        BudgetReservation.objects.filter(status=ReservationStatus.RESERVED, expires_at__lte=now)
        .order_by("id")
        .values_list("id", flat=True)[:batch_size]
    )
    expired = 0
    for pk in ids:
        with transaction.atomic():
            reservation = BudgetReservation.objects.select_for_update().filter(pk=pk).first()
            if reservation is None or reservation.status != ReservationStatus.RESERVED:
                continue  # settled or released meanwhile
            _give_back(reservation, ReservationStatus.EXPIRED, now)
            audit_record(
                action="budget.reservation.expired",
                obj=reservation,
                data={
                    "call_id": reservation.call_id,
                    "amount_usd": reservation.amount_usd,
                    "expires_at": reservation.expires_at,
                },
            )
            expired += 1
    if expired:
        logger.warning("expired %d budget reservation(s) nobody settled", expired)
    return expired


# --- alerts -----------------------------------------------------------------------------


def _record_alerts(budget: Budget, period: BudgetPeriod, now: datetime) -> list[BudgetAlert]:
    """Insert a ``BudgetAlert`` for each threshold the period's spent amount has reached
    (spent >= limit x threshold / 100) and that has not alerted in this period yet.

    Runs under the period row lock, so concurrent settles of the budget take turns; the
    unique (budget, period, threshold) constraint is the backstop. Only the inserter audits
    ``budget.alert`` and (after commit) sends ``governance.signals.budget_alert``.
    """
    from governance.services import audit_record

    thresholds = budget.alert_thresholds or []
    reached = [t for t in thresholds if period.spent_usd * 100 >= budget.limit_usd * t]
    if not reached:
        return []
    done = set(
        BudgetAlert.objects.filter(
            budget=budget, period_start=period.period_start, threshold__in=reached
        ).values_list("threshold", flat=True)
    )
    inserted = []
    for threshold in sorted(set(reached) - done):
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget=budget,
                    period_start=period.period_start,
                    threshold=threshold,
                    spent_usd=period.spent_usd,
                    limit_usd=budget.limit_usd,
                    created_at=now,
                )
        except IntegrityError:
            continue  # another writer recorded it: it alerts, not us
        inserted.append(alert)
        logger.warning(
            "budget %s reached %d%% of %s USD (spent %s, %s budget, period from %s)",
            budget.name,
            threshold,
            format_usd(budget.limit_usd),
            format_usd(period.spent_usd),
            "hard" if budget.hard else "soft",
            period.period_start,
        )
        audit_record(
            action="budget.alert",
            obj=budget,
            data={
                "threshold_percent": threshold,
                "period_start": period.period_start,
                "spent_usd": period.spent_usd,
                "limit_usd": budget.limit_usd,
                "hard": budget.hard,
            },
        )
    return inserted


def _send_alert(budget: Budget, alert: BudgetAlert) -> None:
    from governance.signals import budget_alert

    for receiver, result in budget_alert.send_robust(
        sender=Budget, budget=budget, alert=alert, project=budget.project
    ):
        if isinstance(result, Exception):
            logger.error(
                "budget_alert receiver %r failed for budget %s",
                receiver,
                budget.name,
                exc_info=result,
            )


# --- the cost ledger --------------------------------------------------------------------


def cost_record(
    *,
    call_id: str,
    kind: str,
    project,
    priced: PricedUsage,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    provider: str | None = None,
    model: str | None = None,
    user=None,
    agent=None,
    agent_version=None,
    tool=None,
    run_id: str = "",
    step_id: str = "",
    occurred_at: datetime | None = None,
) -> CostEntry:
    """Write the ledger entry of one model call (``kind="model"``) or priced tool call
    (``"tool"``) with the cost and price in ``priced`` (from ``governance.pricing``).

    Idempotent by ``call_id``: when an entry exists, it is returned and nothing more is
    charged (the first entry wins even if this call's numbers differ). ``provider`` and
    ``model`` default to the priced provider id and model reference. ``agent``,
    ``agent_version`` and ``tool`` are registry objects of the same project (or None).
    Audited ``cost.recorded``. Raises ``ValueError`` / ``TypeError`` for bad arguments.
    """
    from governance.reports import cost_rollup_add
    from governance.services import audit_record

    _check_call_id(call_id)
    if kind not in CostKind.values:
        raise ValueError(f"kind must be one of {', '.join(CostKind.values)}, got {kind!r}")
    cost = _usd(priced.cost_usd, "priced.cost_usd")
    tokens = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
    }
    for name, value in tokens.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    for name, obj in (("agent", agent), ("tool", tool)):
        if obj is not None and obj.project_id != project.pk:
            raise ValueError(f"{name} {obj} belongs to another project")
    if agent_version is not None and agent is not None and agent_version.agent_id != agent.pk:
        raise ValueError(f"agent version {agent_version} is not a version of {agent}")
    # A repeated call id is found by the unique constraint on insert (below).
    rates = priced.rates
    entry = CostEntry(
        call_id=call_id,
        kind=kind,
        project=project,
        user=user if getattr(user, "pk", None) is not None else None,
        agent=agent,
        agent_version=agent_version,
        tool=tool,
        run_id=run_id,
        step_id=step_id,
        provider=priced.provider_id if provider is None else provider,
        model=priced.model_ref if model is None else model,
        cost_usd=cost,
        price_source=priced.source,
        input_usd_per_mtok=rates.input_usd_per_mtok if rates else None,
        output_usd_per_mtok=rates.output_usd_per_mtok if rates else None,
        cache_read_usd_per_mtok=rates.cache_read_usd_per_mtok if rates else None,
        cache_write_usd_per_mtok=rates.cache_write_usd_per_mtok if rates else None,
        price_library_version=priced.library_version,
        occurred_at=occurred_at or timezone.now(),
        **tokens,
    )
    try:
        entry.full_clean(
            exclude=["project", "user", "agent", "agent_version", "tool"],
            validate_unique=False,
            validate_constraints=False,
        )
    except ValidationError as exc:
        raise ValueError(f"invalid cost entry: {exc.message_dict}") from exc
    # No savepoint (the model call path records inside its batch): a repeated call id is
    # an INSERT that does nothing.
    with transaction.atomic(savepoint=False):
        if created := insert_unless_exists(entry):
            audit_record(
                action="cost.recorded",
                obj=entry,
                project=project,
                data={
                    "call_id": call_id,
                    "kind": kind,
                    "cost_usd": cost,
                    "provider": entry.provider,
                    "model": entry.model,
                    "price_source": entry.price_source,
                    # Token counts as "usage" {"input", "output", ...}: audit data masks
                    # the value of any key naming a token.
                    "usage": {name.removesuffix("_tokens"): n for name, n in tokens.items()},
                    "run_id": run_id,
                },
            )
            cost_rollup_add(entry)
    if not created:
        existing = CostEntry.objects.filter(call_id=call_id).first()
        if existing is None:  # pragma: no cover - the conflicting row was just seen
            raise ValueError(f"cost entry {call_id!r} conflicts with another unique value")
        return existing
    return entry


def cost_entries_for_project(project) -> QuerySet[CostEntry]:
    """The project's ledger, newest first, with user, agent, version and tool loaded."""
    return (
        CostEntry.objects.filter(project=project)
        .select_related("user", "agent", "agent_version", "tool")
        .order_by("-occurred_at", "-id")
    )


@dataclass(frozen=True, slots=True)
class CostTotals:
    """Sums over a set of ledger entries: ``cost_usd`` (Decimal USD), ``entries`` and
    token counts."""

    cost_usd: Decimal
    entries: int
    input_tokens: int
    output_tokens: int


def cost_totals(entries: QuerySet[CostEntry]) -> CostTotals:
    """Totals of ``entries`` (one aggregate query)."""
    usd = DecimalField(**USD_DIGITS)
    row = entries.order_by().aggregate(
        cost=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=usd),
        entries=Count("id"),
        input_tokens=Coalesce(Sum("input_tokens"), Value(0)),
        output_tokens=Coalesce(Sum("output_tokens"), Value(0)),
    )
    return CostTotals(
        cost_usd=row["cost"],
        entries=row["entries"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )


COST_GROUPS = {
    "agent": "agent__slug",
    "model": "model",
    "provider": "provider",
    "user": "user__username",
    "kind": "kind",
    "day": "day",
}


def cost_breakdown(
    entries: QuerySet[CostEntry], *, by: str, zone: ZoneInfo | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """``entries`` summed per ``by`` (``agent``, ``model``, ``provider``, ``user``, ``kind``
    or ``day``; days in ``zone``, default UTC), most expensive first: ``[{"key": ...,
    "cost_usd": Decimal, "entries": int}]``. Raises ``ValueError`` for another ``by``."""
    if by not in COST_GROUPS:
        raise ValueError(f"by must be one of {', '.join(COST_GROUPS)}")
    usd = DecimalField(**USD_DIGITS)
    rows = entries.order_by()
    if by == "day":
        rows = rows.annotate(day=TruncDate("occurred_at", tzinfo=zone))
    field = COST_GROUPS[by]
    grouped = (
        rows.values(field)
        .annotate(
            cost=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=usd), n=Count("id")
        )
        .order_by("-cost", field)[:limit]
    )
    return [{"key": row[field], "cost_usd": row["cost"], "entries": row["n"]} for row in grouped]
