"""Flows: reads for pages and the API (project-scoped querysets)."""

from __future__ import annotations

from django.db.models import QuerySet

from flows.models import Flow, FlowVersion, Run, Span, StepRun


def flows_for_project(*, project) -> QuerySet[Flow]:
    """The project's flows with their active version."""
    return Flow.objects.filter(project=project).select_related("active_version")


def flow_versions(*, flow: Flow) -> QuerySet[FlowVersion]:
    """A flow's versions, newest first."""
    return FlowVersion.objects.filter(flow=flow).select_related("created_by")


def runs_for_project(*, project) -> QuerySet[Run]:
    """The project's runs, newest first, with flow, version and starter."""
    return Run.objects.filter(project=project).select_related("flow", "flow_version", "started_by")


def run_steps(*, run: Run) -> QuerySet[StepRun]:
    """A run's step runs (map items after their map step, compensations last), with the
    agent version each used."""
    return (
        StepRun.objects.filter(run=run)
        .select_related("agent_version__agent")
        .order_by("created_at", "item_index", "pk")
    )


def run_spans(*, run: Run) -> QuerySet[Span]:
    """A run's spans in start order (the trace waterfall)."""
    return Span.objects.filter(run=run).order_by("start_time", "pk")
