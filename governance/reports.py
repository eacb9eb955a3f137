"""Cost reports: the cost ledger summed per dimension (agent, agent version, project, user,
model, provider, kind, tool, run) and per interval (day, week, month in the project's time
zone) over any time range; top-N groups, chart series, budget burn-down with projection.

One aggregation path for the UI, the REST endpoint and CSV export: ``cost_report``. It
groups by foreign-key ids (no joins in the aggregate) and looks the labels up afterwards,
so a month of one project grouped by agent and day reads only the ``(project,
occurred_at)`` index range (see ``bench/costs.py``).

Extension point: apps above governance add dimensions with ``register_cost_dimension``
(the flows app: ``flow``, from ``run_id`` to its flow), without governance importing them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import Count, DateTimeField, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Trunc, TruncDate
from django.utils import timezone

from governance.models import (
    USD_DIGITS,
    Budget,
    BudgetPeriodKind,
    BudgetScope,
    CostEntry,
    CostRollup,
)

INTERVALS = ("day", "week", "month")
MAX_GROUP_BY = 2
MAX_PERIODS = 1000
OTHER = "(other)"
USD_PLACES = Decimal("0.00000001")
NONE_LABEL = "(none)"


class ReportError(ValueError):
    """A report request that cannot be answered; ``errors`` maps a field name to messages
    (the API returns it as a 400 keyed by field, forms show it in place)."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CostDimension:
    """A way to group the ledger: ``column`` is what the aggregate groups on (a column of
    ``CostEntry`` or an annotation added by ``annotate``); ``labels(values) -> {value:
    label}`` turns the grouped values into names (one query per dimension)."""

    name: str
    column: str
    labels: Callable[[set[Any]], dict[Any, str]] | None = None
    annotate: Callable[[QuerySet[CostEntry]], QuerySet[CostEntry]] | None = None
    description: str = ""
    rollup_column: str = ""


def _related_labels(field_name: str, label: Callable[[Any], str]):
    def lookup(values: set[Any]) -> dict[Any, str]:
        model = CostEntry._meta.get_field(field_name).related_model
        ids = [v for v in values if v is not None]
        return {obj.pk: label(obj) for obj in model.objects.filter(pk__in=ids)}

    return lookup


def _version_labels(values: set[Any]) -> dict[Any, str]:
    model = CostEntry._meta.get_field("agent_version").related_model
    ids = [v for v in values if v is not None]
    rows = model.objects.filter(pk__in=ids).values_list("pk", "agent__slug", "number")
    return {pk: f"{slug}@v{number}" for pk, slug, number in rows}


_dimensions: dict[str, CostDimension] = {}


def register_cost_dimension(dimension: CostDimension) -> None:
    """Add (or replace) a grouping dimension; idempotent per name."""
    _dimensions[dimension.name] = dimension


def cost_dimensions() -> dict[str, CostDimension]:
    """The dimensions reports may group by, by name."""
    return dict(_dimensions)


for _dimension in (
    CostDimension(
        "agent",
        "agent_id",
        _related_labels("agent", lambda a: a.slug),
        description="Agent slug.",
        rollup_column="agent_pk",
    ),
    CostDimension(
        "agent_version",
        "agent_version_id",
        _version_labels,
        description="Agent version (slug@vN).",
        rollup_column="agent_version_pk",
    ),
    CostDimension(
        "project",
        "project_id",
        _related_labels("project", lambda p: p.slug),
        description="Project slug.",
        rollup_column="project_id",
    ),
    CostDimension(
        "user",
        "user_id",
        _related_labels("user", lambda u: u.get_username()),
        description="Username the call was made for.",
        rollup_column="user_pk",
    ),
    CostDimension("model", "model", description="Model name.", rollup_column="model"),
    CostDimension("provider", "provider", description="Provider id.", rollup_column="provider"),
    CostDimension("kind", "kind", description="model or tool.", rollup_column="kind"),
    CostDimension(
        "tool",
        "tool_id",
        _related_labels("tool", lambda t: t.name),
        description="Tool name.",
        rollup_column="tool_pk",
    ),
    CostDimension("run", "run_id", description="Run id."),
):
    register_cost_dimension(_dimension)


@dataclass(frozen=True, slots=True)
class CostFilters:
    """Narrowing of the ledger; every field optional. Names are the registry's names
    (agent slug, username, tool name); ``agent_version`` is a version number of ``agent``."""

    agent: str = ""
    agent_version: int | None = None
    user: str = ""
    model: str = ""
    provider: str = ""
    kind: str = ""
    tool: str = ""
    run_id: str = ""
    step_id: str = ""
    price_source: str = ""

    @property
    def ledger_only(self) -> bool:
        """True when a filter has no rollup column (the report sums the ledger)."""
        return bool(self.run_id or self.step_id or self.price_source)

    def apply(self, entries: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        if self.agent:
            entries = entries.filter(agent__slug=self.agent)
        if self.agent_version is not None:
            entries = entries.filter(agent_version__number=self.agent_version)
        if self.user:
            entries = entries.filter(user__username=self.user)
        for name in ("model", "provider", "kind", "run_id", "step_id", "price_source"):
            if getattr(self, name):
                entries = entries.filter(**{name: getattr(self, name)})
        if self.tool:
            entries = entries.filter(tool__name=self.tool)
        return entries

    def as_params(self) -> dict[str, str]:
        """The non-empty filters as query parameters (links, CSV names)."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value not in ("", None):
                out[name] = str(value)
        return out


@dataclass(frozen=True, slots=True)
class CostReportRow:
    """One cell of a report: ``period`` (first local date of the day / week / month, None
    without an interval), ``group`` (one label per ``group_by`` dimension, ``(none)`` for
    entries without a value), sums in USD (Decimal) and counts."""

    period: date | None
    group: tuple[str, ...]
    cost_usd: Decimal
    entries: int
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class CostReport:
    """The answer of ``cost_report``. ``rows`` are sorted by period then cost (highest
    first); ``total_*`` sum all rows. ``periods`` lists every period of the range (also
    empty ones) when there is an interval."""

    group_by: tuple[str, ...]
    interval: str | None
    start: datetime
    end: datetime
    zone: ZoneInfo
    rows: list[CostReportRow]
    periods: list[date] = field(default_factory=list)

    @property
    def total_usd(self) -> Decimal:
        return sum((row.cost_usd for row in self.rows), Decimal(0)).quantize(USD_PLACES)

    @property
    def total_entries(self) -> int:
        return sum(row.entries for row in self.rows)

    def top(self, limit: int = 10) -> list[dict[str, Any]]:
        """Groups over the whole range, most expensive first: ``[{"group": tuple,
        "cost_usd": Decimal, "entries": int, "share": float 0..1}]``."""
        sums: dict[tuple[str, ...], list] = defaultdict(lambda: [Decimal(0), 0])
        for row in self.rows:
            sums[row.group][0] += row.cost_usd
            sums[row.group][1] += row.entries
        total = self.total_usd
        ordered = sorted(sums.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
        return [
            {
                "group": group,
                "cost_usd": cost,
                "entries": n,
                "share": float(cost / total) if total else 0.0,
            }
            for group, (cost, n) in ordered
        ]

    def series(self, limit: int = 8) -> tuple[list[date], list[tuple[str, list[Decimal]]]]:
        """Chart data: the periods and, per group (the ``limit`` most expensive, the rest
        summed as ``(other)``), the cost in each period (0 where none)."""
        periods = self.periods or sorted({row.period for row in self.rows if row.period})
        keep = {item["group"] for item in self.top(limit)}
        index = {p: i for i, p in enumerate(periods)}
        lines: dict[str, list[Decimal]] = {}
        for row in self.rows:
            if row.period not in index:
                continue
            name = " / ".join(row.group) if row.group in keep else OTHER
            values = lines.setdefault(name, [Decimal(0)] * len(periods))
            values[index[row.period]] += row.cost_usd
        ordered = sorted(lines.items(), key=lambda item: (item[0] == OTHER, -sum(item[1])))
        return periods, ordered


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """Midnight at the start of ``day`` in ``zone`` (aware)."""
    return datetime.combine(day, time.min, tzinfo=zone)


def period_start(day: date, interval: str) -> date:
    """The first day of the ``interval`` containing ``day`` (weeks start on Monday)."""
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def _next_period(day: date, interval: str) -> date:
    if interval == "month":
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return day + timedelta(days=7 if interval == "week" else 1)


def periods_between(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list[date]:
    """Every period start from the one containing ``start`` to the one containing the
    last instant before ``end`` (local dates in ``zone``)."""
    first = period_start(start.astimezone(zone).date(), interval)
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    out = []
    day = first
    while day <= last:
        out.append(day)
        day = _next_period(day, interval)
        if len(out) > MAX_PERIODS:
            break
    return out


def validate_report_request(
    *, group_by: Iterable[str], interval: str | None, start: datetime | None, end: datetime | None
) -> tuple[tuple[str, ...], str | None]:
    """Check a report request; returns ``(group_by, interval)`` cleaned. Raises
    ``ReportError`` keyed by ``group_by`` / ``interval`` / ``from`` / ``to``."""
    errors: dict[str, list[str]] = {}
    groups = tuple(g for g in group_by if g)
    known = cost_dimensions()
    unknown = [g for g in groups if g not in known]
    if unknown:
        errors.setdefault("group_by", []).append(
            f"Unknown dimension {', '.join(unknown)}; choose from {', '.join(sorted(known))}."
        )
    if len(groups) > MAX_GROUP_BY:
        errors.setdefault("group_by", []).append(f"At most {MAX_GROUP_BY} dimensions.")
    if len(set(groups)) != len(groups):
        errors.setdefault("group_by", []).append("A dimension is repeated.")
    interval = interval or None
    if interval is not None and interval not in INTERVALS:
        errors["interval"] = [f"Choose one of: {', '.join(INTERVALS)}."]
    if start is None:
        errors["from"] = ["Give the start of the range (ISO 8601)."]
    if end is None:
        errors["to"] = ["Give the end of the range (ISO 8601, excluded)."]
    if start is not None and end is not None:
        if start.tzinfo is None or end.tzinfo is None:
            errors["from"] = ["Give times with a UTC offset (e.g. 2026-01-01T00:00:00Z)."]
        elif end <= start:
            errors["to"] = ["The end must be after the start."]
        elif (
            interval in INTERVALS
            and len(periods_between(start, end, interval, ZoneInfo("UTC"))) > MAX_PERIODS
        ):
            errors["interval"] = [
                f"The range has more than {MAX_PERIODS} {interval}s; choose a longer interval."
            ]
    if errors:
        raise ReportError(errors)
    return groups, interval


def _ledger_cells(
    rows: QuerySet[CostEntry], dims: list[CostDimension], interval: str | None, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Aggregate ledger rows: ``[{"values": tuple, "day": datetime | None, sums...}]``."""
    rows = rows.order_by()
    for dim in dims:
        if dim.annotate is not None:
            rows = dim.annotate(rows)
    columns = [dim.column for dim in dims]
    if interval:
        rows = rows.annotate(
            report_period=Trunc("occurred_at", interval, output_field=DateTimeField(), tzinfo=zone)
        )
        columns.append("report_period")
    result = _grouped(rows, columns, "cost_usd", Count("*"))
    cells = []
    for row in result:
        period = None
        if interval:
            value = row["report_period"]
            period = value.astimezone(zone).date() if isinstance(value, datetime) else value
        cells.append(
            {
                "values": tuple(row[dim.column] for dim in dims),
                "period": period,
                "cost": row["cost"],
                "n": row["n"],
                "tin": row["tin"],
                "tout": row["tout"],
            }
        )
    return cells


def _grouped(rows: QuerySet, columns: list[str], cost: str, count) -> list[dict[str, Any]]:
    usd = DecimalField(**USD_DIGITS)
    tokens = "input_tokens"
    aggregates = {
        "cost": Coalesce(Sum(cost), Value(Decimal(0)), output_field=usd),
        "n": count,
        "tin": Coalesce(Sum(tokens), Value(0)),
        "tout": Coalesce(Sum("output_tokens"), Value(0)),
    }
    if columns:
        return list(rows.values(*columns).annotate(**aggregates))
    total = rows.aggregate(**aggregates)
    return [total] if total["n"] else []


def _rollup_cells(
    rollups: QuerySet[CostRollup], dims: list[CostDimension], interval: str | None
) -> list[dict[str, Any]]:
    columns = [dim.rollup_column for dim in dims]
    if interval:
        columns.append("day")
    result = _grouped(rollups.order_by(), columns, "cost_usd", Coalesce(Sum("entries"), Value(0)))
    return [
        {
            "values": tuple(row[dim.rollup_column] or None for dim in dims),
            "period": period_start(row["day"], interval) if interval else None,
            "cost": row["cost"],
            "n": row["n"],
            "tin": row["tin"],
            "tout": row["tout"],
        }
        for row in result
    ]


def _related_ids(field_name: str, **lookup: Any) -> QuerySet:
    """Ids of the ledger's related rows (agent, version, user, tool) matching ``lookup``."""
    model = CostEntry._meta.get_field(field_name).related_model
    return model.objects.filter(**lookup).values("pk")


def _rollup_filter(
    rollups: QuerySet[CostRollup], filters: CostFilters | None, project_ids: list[int]
) -> QuerySet[CostRollup]:
    if filters is None:
        return rollups
    if filters.agent:
        rollups = rollups.filter(
            agent_pk__in=_related_ids("agent", slug=filters.agent, project_id__in=project_ids)
        )
    if filters.agent_version is not None:
        lookup: dict[str, Any] = {"number": filters.agent_version}
        if filters.agent:
            lookup["agent__slug"] = filters.agent
        rollups = rollups.filter(
            agent_version_pk__in=_related_ids(
                "agent_version", agent__project_id__in=project_ids, **lookup
            )
        )
    if filters.user:
        rollups = rollups.filter(user_pk__in=_related_ids("user", username=filters.user))
    if filters.tool:
        rollups = rollups.filter(
            tool_pk__in=_related_ids("tool", name=filters.tool, project_id__in=project_ids)
        )
    for name in ("model", "provider", "kind"):
        if getattr(filters, name):
            rollups = rollups.filter(**{name: getattr(filters, name)})
    return rollups


def _full_days(start: datetime, end: datetime, zone: ZoneInfo) -> tuple[date, date] | None:
    """The local days wholly inside ``[start, end)`` as ``[first, stop)``, or None."""
    first = start.astimezone(zone).date()
    if local_midnight(first, zone) < start:
        first += timedelta(days=1)
    stop = end.astimezone(zone).date()
    return (first, stop) if first < stop else None


def cost_report(
    *,
    projects: Iterable[Any],
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    group_by: Iterable[str] = (),
    interval: str | None = None,
    filters: CostFilters | None = None,
    use_rollups: bool = True,
) -> CostReport:
    """Sum the ledger of ``projects`` (the caller checked access) in ``[start, end)`` per
    ``group_by`` dimensions (at most 2) and per ``interval`` (``day`` / ``week`` /
    ``month`` in ``zone``, weeks from Monday; None: the whole range).

    Whole local days come from ``CostRollup`` when every dimension and filter has a rollup
    column, all projects are in ``zone`` and the range's rollups were written in it; the
    partial days at the edges (and anything else) are summed from the ledger. The result
    is the same either way (tested): exact Decimal USD sums. Raises ``ReportError`` for an
    unknown dimension or interval, an empty or open range, or more than 1000 periods.
    """
    groups, interval = validate_report_request(
        group_by=group_by, interval=interval, start=start, end=end
    )
    projects = list(projects)
    project_ids = [p.pk for p in projects]
    dims = [cost_dimensions()[name] for name in groups]
    ledger = CostEntry.objects.filter(project_id__in=project_ids)
    if filters is not None:
        ledger = filters.apply(ledger)
    days = _full_days(start, end, zone) if use_rollups else None
    rollups = None
    if (
        days is not None
        and all(dim.rollup_column for dim in dims)
        and not (filters and filters.ledger_only)
        and all(p.time_zone == zone.key for p in projects)
    ):
        in_range = CostRollup.objects.filter(
            project_id__in=project_ids, day__gte=days[0], day__lt=days[1]
        )
        # Two index ranges (project, time_zone, day) rather than a scan for "<>".
        other_zone = in_range.filter(Q(time_zone__lt=zone.key) | Q(time_zone__gt=zone.key))
        if not other_zone.exists():
            rollups = in_range.filter(time_zone=zone.key)
        # else: the zone changed since they were written: sum the ledger
    cells: list[dict[str, Any]] = []
    if rollups is not None:
        first, stop = local_midnight(days[0], zone), local_midnight(days[1], zone)
        cells += _rollup_cells(_rollup_filter(rollups, filters, project_ids), dims, interval)
        for lo, hi in ((start, first), (stop, end)):
            if lo < hi:
                part = ledger.filter(occurred_at__gte=lo, occurred_at__lt=hi)
                cells += _ledger_cells(part, dims, interval, zone)
    else:
        part = ledger.filter(occurred_at__gte=start, occurred_at__lt=end)
        cells = _ledger_cells(part, dims, interval, zone)
    merged: dict[tuple, list] = {}
    for cell in cells:
        values = tuple(None if v in (0, "") else v for v in cell["values"])
        key = (cell["period"], values)
        sums = merged.setdefault(key, [Decimal(0), 0, 0, 0])
        sums[0] += cell["cost"]
        sums[1] += cell["n"]
        sums[2] += cell["tin"]
        sums[3] += cell["tout"]
    labels: list[dict[Any, str]] = []
    for i, dim in enumerate(dims):
        values = {values[i] for _, values in merged}
        labels.append(dim.labels(values) if dim.labels else {})
    out = [
        CostReportRow(
            period=period,
            group=tuple(_label(v, names) for v, names in zip(values, labels, strict=True)),
            cost_usd=sums[0].quantize(USD_PLACES),
            entries=sums[1],
            input_tokens=sums[2],
            output_tokens=sums[3],
        )
        for (period, values), sums in merged.items()
        if sums[1]
    ]
    out.sort(key=lambda r: (r.period or date.min, -r.cost_usd, r.group))
    return CostReport(
        group_by=groups,
        interval=interval,
        start=start,
        end=end,
        zone=zone,
        rows=out,
        periods=periods_between(start, end, interval, zone) if interval else [],
    )


def cost_report_csv_rows(report: CostReport):
    """The report as CSV lines, header first: period, one column per dimension, cost_usd,
    entries, input_tokens, output_tokens (labels are formula-safe)."""
    import csv
    import io

    from governance.audit_export import csv_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(["period", *report.group_by, "cost_usd", "entries", "input_tokens", "output_tokens"])
    for row in report.rows:
        yield line(
            [
                row.period.isoformat() if row.period else "",
                *(csv_cell(label) for label in row.group),
                f"{row.cost_usd:f}",
                row.entries,
                row.input_tokens,
                row.output_tokens,
            ]
        )


# --- the rollup (writes) --------------------------------------------------------------------

_ROLLUP_KEY = (
    "project_id",
    "time_zone",
    "day",
    "agent_pk",
    "agent_version_pk",
    "user_pk",
    "tool_pk",
    "model",
    "provider",
    "kind",
)
_ROLLUP_SUMS = ("cost_usd", "entries", "input_tokens", "output_tokens")


def cost_rollup_add(entry: CostEntry) -> None:
    """Add one new ledger entry to its rollup row (an atomic upsert; call in the entry's
    transaction, after its audit event, so the lock order stays entry -> audit head ->
    rollup row)."""
    project = entry.project
    zone = project.zone
    values = {
        "project_id": entry.project_id,
        "day": entry.occurred_at.astimezone(zone).date(),
        "time_zone": project.time_zone,
        "agent_pk": entry.agent_id or 0,
        "agent_version_pk": entry.agent_version_id or 0,
        "user_pk": entry.user_id or 0,
        "tool_pk": entry.tool_id or 0,
        "model": entry.model,
        "provider": entry.provider,
        "kind": entry.kind,
        "cost_usd": entry.cost_usd,
        "entries": 1,
        "input_tokens": entry.input_tokens,
        "output_tokens": entry.output_tokens,
    }
    table = connection.ops.quote_name(CostRollup._meta.db_table)
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    updates = ", ".join(f"{n} = {table}.{n} + EXCLUDED.{n}" for n in _ROLLUP_SUMS)
    # Only constant column names are interpolated; the values are parameters.
    sql = (
        f"INSERT INTO {table} ({names}) VALUES ({marks}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(values.values()))


def cost_rollup_rebuild(*, projects: Iterable[Any] | None = None, batch_size: int = 5000) -> int:
    """Recompute the rollup of ``projects`` (default all) from the ledger, in each
    project's current time zone, in one transaction; returns the rows written. Use after
    a bulk load or a change of ``Project.time_zone``."""
    from controlplane.models import Project

    targets = list(projects) if projects is not None else list(Project.objects.all())
    written = 0
    with transaction.atomic():
        for project in targets:
            CostRollup.objects.filter(project=project).delete()
            zone = project.zone
            grouped = (
                CostEntry.objects.filter(project=project)
                .order_by()
                .annotate(local_day=TruncDate("occurred_at", tzinfo=zone))
                .values(
                    "local_day",
                    "agent_id",
                    "agent_version_id",
                    "user_id",
                    "tool_id",
                    "model",
                    "provider",
                    "kind",
                )
                .annotate(
                    cost=Sum("cost_usd"),
                    n=Count("*"),
                    tin=Sum("input_tokens"),
                    tout=Sum("output_tokens"),
                )
            )
            batch: list[CostRollup] = []
            for row in grouped.iterator(chunk_size=batch_size):
                batch.append(
                    CostRollup(
                        project=project,
                        day=row["local_day"],
                        time_zone=project.time_zone,
                        agent_pk=row["agent_id"] or 0,
                        agent_version_pk=row["agent_version_id"] or 0,
                        user_pk=row["user_id"] or 0,
                        tool_pk=row["tool_id"] or 0,
                        model=row["model"],
                        provider=row["provider"],
                        kind=row["kind"],
                        cost_usd=row["cost"],
                        entries=row["n"],
                        input_tokens=row["tin"],
                        output_tokens=row["tout"],
                    )
                )
                if len(batch) >= batch_size:
                    CostRollup.objects.bulk_create(batch)
                    written += len(batch)
                    batch = []
            CostRollup.objects.bulk_create(batch)
            written += len(batch)
    return written


def _label(value: Any, names: Mapping[Any, str]) -> str:
    if value is None or value == "":
        return NONE_LABEL
    return names.get(value, str(value))


# --- budget burn-down ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BurnDown:
    """A budget's current period: cumulative ledger spend at the end of each elapsed step
    (hours for a day budget, days for a month budget), the limit, and the projection.

    ``projected_usd`` extrapolates the spend rate so far to the period's end (linear:
    spent / elapsed x length); ``exhausted_at`` is when that rate reaches the limit (None
    if it does not within the period, or no spend yet). ``total`` budgets have no end,
    hence no projection. USD as Decimal.
    """

    budget: Budget
    period_begins: datetime | None
    period_ends: datetime | None
    limit_usd: Decimal
    spent_usd: Decimal
    points: list[tuple[datetime, Decimal]]
    projected_usd: Decimal | None
    exhausted_at: datetime | None

    @property
    def projected_over(self) -> bool:
        return self.projected_usd is not None and self.projected_usd > self.limit_usd


def budget_entries(budget: Budget) -> QuerySet[CostEntry]:
    """The ledger entries that count against ``budget`` by its scope."""
    entries = CostEntry.objects.filter(project_id=budget.project_id)
    if budget.scope == BudgetScope.USER:
        entries = entries.filter(user_id=budget.user_id)
    elif budget.scope == BudgetScope.AGENT:
        entries = entries.filter(agent_version__budget=budget)
    return entries


def budget_burndown(budget: Budget, *, at: datetime | None = None) -> BurnDown:
    """The burn-down of ``budget``'s period containing ``at`` (default now) in the
    project's time zone, from the cost ledger."""
    from governance.budgets import period_bounds, period_start_for

    now = at or timezone.now()
    zone = budget.project.zone
    first = period_start_for(budget.period, at=now, zone=zone)
    begins, ends = period_bounds(budget.period, first, zone)
    entries = budget_entries(budget).filter(occurred_at__lte=now)
    if begins is not None:
        entries = entries.filter(occurred_at__gte=begins)
    step = "hour" if budget.period == BudgetPeriodKind.DAY else "day"
    per_step = (
        entries.order_by()
        .annotate(step=Trunc("occurred_at", step, output_field=DateTimeField(), tzinfo=zone))
        .values("step")
        .annotate(cost=Sum("cost_usd"))
        .order_by("step")
    )
    points: list[tuple[datetime, Decimal]] = []
    running = Decimal(0)
    for row in per_step:
        running += row["cost"] or Decimal(0)
        points.append((row["step"], running))
    projected = None
    exhausted = None
    if begins is not None and ends is not None:
        elapsed = (min(now, ends) - begins).total_seconds()
        length = (ends - begins).total_seconds()
        if elapsed > 0 and running > 0:
            rate = running / Decimal(elapsed)  # USD per second
            projected = (rate * Decimal(length)).quantize(Decimal("0.00000001"))
            if projected > budget.limit_usd:
                seconds = (
                    float((budget.limit_usd - running) / rate) if running < budget.limit_usd else 0
                )
                exhausted = min(now + timedelta(seconds=seconds), ends)
        elif running == 0:
            projected = Decimal(0)
    return BurnDown(
        budget=budget,
        period_begins=begins,
        period_ends=ends,
        limit_usd=budget.limit_usd,
        spent_usd=running,
        points=points,
        projected_usd=projected,
        exhausted_at=exhausted,
    )
