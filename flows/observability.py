"""The flows app's contributions to governance's observability (registered in
``FlowsConfig.ready()``; governance never imports flows):

- the ``flow`` cost dimension: cost ledger entries carry ``run_id`` = ``str(Run.pk)``; the
  report maps each entry's run to its flow **in the entry's own project** (a run id of
  another project never lends its flow);
- the dashboard's *runs in flight* stat and panel (pending, running, waiting for approval;
  each links to the run page);
- the performance view's *slowest steps* (``StepRun.started_at`` -> ``finished_at`` of
  finished top-level and map-item steps in the window, each linking to its run);
- ``count_run_final`` / ``count_steps_final``: the Prometheus ``RUNS`` / ``STEPS``
  counters, incremented after the transaction that finished the run or step commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import BigIntegerField, Case, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Cast

from flows.models import STEP_FINAL, Flow, Run, RunStatus, StepRun

IN_FLIGHT = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)
DASHBOARD_RUNS = 10
SLOWEST_STEPS = 10


# --- cost dimension ---------------------------------------------------------------------------


def annotate_flow(rows: QuerySet) -> QuerySet:
    """Annotate cost entries with ``flow_pk``: the flow of the run named by ``run_id`` in
    the entry's project (``None`` for entries outside a flow run). A ``run_id`` that is not
    a run's primary key (digits) never matches; the lookup uses the run's primary key."""
    rows = rows.annotate(
        flow_run_pk=Case(
            When(run_id__regex=r"^[1-9][0-9]{0,17}$", then=Cast("run_id", BigIntegerField())),
            default=Value(None),
            output_field=BigIntegerField(),
        )
    )
    flow_of_run = Run.objects.filter(
        pk=OuterRef("flow_run_pk"), project_id=OuterRef("project_id")
    ).values("flow_id")[:1]
    return rows.annotate(flow_pk=Subquery(flow_of_run))


def flow_labels(values: set[Any]) -> dict[Any, str]:
    """``{flow pk: flow slug}`` for the grouped values (one query)."""
    ids = [v for v in values if v is not None]
    return dict(Flow.objects.filter(pk__in=ids).values_list("pk", "slug"))


def register_flow_cost_dimension() -> None:
    from governance.reports import CostDimension, register_cost_dimension

    register_cost_dimension(
        CostDimension(
            "flow",
            "flow_pk",
            flow_labels,
            annotate=annotate_flow,
            description="Flow slug (the flow of the entry's run).",
        )
    )


# --- dashboard --------------------------------------------------------------------------------


def runs_in_flight(project) -> QuerySet[Run]:
    """The project's runs not final yet, newest first."""
    return (
        Run.objects.filter(project=project, status__in=IN_FLIGHT)
        .select_related("flow", "started_by")
        .order_by("-created_at", "-pk")
    )


def in_flight_panel(project, user, role) -> dict[str, Any]:
    """Dashboard panel context: ``runs`` (the newest 10 in flight) and ``count``."""
    runs = runs_in_flight(project)
    return {"runs": list(runs[:DASHBOARD_RUNS]), "count": runs.count()}


def register_dashboard() -> None:
    from controlplane.extensions import (
        DashboardPanel,
        DashboardStat,
        register_dashboard_panel,
        register_dashboard_stat,
    )

    register_dashboard_stat(
        DashboardStat(
            key="flows.in_flight",
            label="Runs in flight",
            url_name="runs",
            value=lambda project, user, role: runs_in_flight(project).count(),
            order=20,
        )
    )
    register_dashboard_panel(
        DashboardPanel(
            key="flows.in_flight",
            template="flows/partials/dashboard_runs.html",
            context=in_flight_panel,
            order=20,
        )
    )


# --- performance ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlowStep:
    """One finished step run: ``duration_ms`` from its ``started_at`` to ``finished_at``."""

    run_id: int
    flow: str
    step_id: str
    kind: str
    status: str
    item_index: int
    duration_ms: float
    finished_at: datetime


def slowest_steps(project, since: datetime, *, limit: int = SLOWEST_STEPS) -> dict[str, Any]:
    """Performance section: the ``limit`` slowest step runs of ``project`` finished since
    ``since`` (durations in ms, the last attempt's start to the step's finish)."""
    rows = (
        StepRun.objects.filter(
            run__project=project,
            finished_at__gte=since,
            started_at__isnull=False,
            status__in=list(STEP_FINAL),
        )
        .values_list(
            "run_id",
            "run__flow__slug",
            "step_id",
            "kind",
            "status",
            "item_index",
            "started_at",
            "finished_at",
        )
        .order_by("-finished_at")[:20_000]
    )
    steps = [
        SlowStep(run, flow, step, kind, status, index, (end - start).total_seconds() * 1000, end)
        for run, flow, step, kind, status, index, start, end in rows
        if end >= start
    ]
    steps.sort(key=lambda s: (-s.duration_ms, s.run_id))
    return {"template": "flows/partials/performance_steps.html", "steps": steps[:limit]}


def register_performance() -> None:
    from governance.performance import register_performance_source

    register_performance_source("flows.slowest_steps", slowest_steps)


# --- metrics ----------------------------------------------------------------------------------


def _project_slug(project_id: int) -> str:
    from governance.metrics import project_label

    return project_label(project_id)


def count_run_final(run: Run) -> None:
    """Increment ``RUNS{project, status}`` once the current transaction commits."""
    project_id, status = run.project_id, str(run.status)

    def inc() -> None:
        try:
            from governance.metrics import RUNS

            RUNS.labels(_project_slug(project_id), status).inc()
        except Exception:  # noqa: BLE001, S110 - a metric is never worth a failed run
            pass

    transaction.on_commit(inc)


def count_steps_final(project_id: int, steps: Iterable[tuple[str, str]]) -> None:
    """Increment ``STEPS{project, kind, status}`` for each ``(kind, status)`` once the
    current transaction commits."""
    steps = [(str(kind), str(status)) for kind, status in steps]
    if not steps:
        return

    def inc() -> None:
        try:
            from governance.metrics import STEPS

            slug = _project_slug(project_id)
            for kind, status in steps:
                STEPS.labels(slug, kind, status).inc()
        except Exception:  # noqa: BLE001, S110
            pass

    transaction.on_commit(inc)
