"""Flows: reads for pages and the API (project-scoped querysets); for the dashboard also
the run's costs and decisions, PII-redacted views of step data, the DAG layout and the
trace waterfall."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.utils import timezone

from flows.definition import FlowDefinition, MapStep, RouterStep, parse_definition
from flows.models import Flow, FlowSchedule, FlowVersion, Run, Span, StepRun
from governance.models import AuditEvent, CostEntry


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


def flows_for_list(*, project) -> QuerySet[Flow]:
    """Flows with ``run_count``, ``last_run_at`` and ``last_run_status``."""
    last = Run.objects.filter(flow=OuterRef("pk")).order_by("-created_at", "-pk")
    return flows_for_project(project=project).annotate(
        run_count=Count("runs", distinct=True),
        last_run_at=Max("runs__created_at"),
        last_run_status=Subquery(last.values("status")[:1]),
    )


def schedules_for_flow(*, flow: Flow) -> QuerySet[FlowSchedule]:
    return FlowSchedule.objects.filter(flow=flow).select_related("last_run")


def run_costs(*, run: Run) -> QuerySet[CostEntry]:
    """Cost ledger entries of the run's model and tool calls (oldest first)."""
    return (
        CostEntry.objects.filter(project_id=run.project_id, run_id=str(run.pk))
        .select_related("agent", "tool")
        .order_by("occurred_at", "pk")
    )


def run_decisions(*, run: Run) -> QuerySet[AuditEvent]:
    """Audit events of the run: tool decisions of its steps' agent turns, and the run's
    own events (started, cancelled, finished...), oldest first."""
    from django.db.models import Q

    turn_ids = [t for t in run_steps(run=run).values_list("turn_id", flat=True) if t]
    run_events = Q(object_type="flows.run", object_id=str(run.pk))
    query = run_events
    if turn_ids:
        query |= Q(action__startswith="tool.", data__turn_id__in=turn_ids)
    return AuditEvent.objects.filter(project_id=run.project_id).filter(query).order_by("sequence")


# --- PII -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redacted:
    """A value as the dashboard may show it: ``value`` after the project's ``audit``
    direction PII rules; ``pii`` entity type -> count of what was acted on; ``withheld``
    the reason when nothing may be shown (a block rule, or the scan failed: fail closed)."""

    value: Any
    pii: dict[str, int] = field(default_factory=dict)
    withheld: str = ""


def redacted(value: Any, *, project) -> Redacted:
    """``value`` scanned with ``governance.pii.scan_data`` in the ``audit`` direction under
    the project's policy (as the audit log keeps data). Never returns the raw value when
    the scan cannot decide."""
    if value is None or value == "" or value == {} or value == []:
        return Redacted(value=value)
    from governance.pii import scan_data
    from governance.policies import audit_policy

    try:
        policy = audit_policy(project_id=project.pk)
        rules = policy.document.pii_policy if policy is not None else None
    except Exception as exc:  # noqa: BLE001 - no policy, no plain data
        return Redacted(
            value=None, withheld=f"the PII policy could not be read ({exc.__class__.__name__})"
        )
    result = scan_data(value, "audit", rules)
    counts: dict[str, int] = {}
    for finding in result.findings:
        if finding.action != "allow":
            counts[finding.entity_type] = counts.get(finding.entity_type, 0) + 1
    if result.error:
        return Redacted(value=None, pii=counts, withheld=result.error)
    if result.blocked:
        return Redacted(value=None, pii=counts, withheld="blocked by the PII policy")
    return Redacted(value=result.value_out, pii=counts)


# --- The DAG ---------------------------------------------------------------------------------

NODE_WIDTH = 150
NODE_HEIGHT = 44
GAP_X = 60
GAP_Y = 24
PAD = 16


@dataclass
class Node:
    id: str
    kind: str
    label: str
    layer: int
    row: int = 0
    x: int = 0
    y: int = 0
    status: str = ""

    @property
    def cx(self) -> int:
        return self.x + NODE_WIDTH // 2


@dataclass
class Edge:
    source: str
    target: str
    label: str = ""
    path: str = ""
    label_x: int = 0
    label_y: int = 0


@dataclass
class Diagram:
    """A layered drawing of a definition: steps left to right by the longest path from a
    start step; ``width``/``height`` in SVG user units."""

    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


def _kind_label(step) -> str:
    if isinstance(step, MapStep):
        return f"map · {step.step.kind}"
    return step.kind


def diagram(definition: FlowDefinition | dict, statuses: dict[str, str] | None = None) -> Diagram:
    """Lay out ``definition`` (parsed, or its stored JSON) as layers: a step's layer is
    one more than the deepest step it waits for; within a layer, steps keep definition
    order. ``statuses``: step id -> status to colour the nodes (a run's view)."""
    if not isinstance(definition, FlowDefinition):
        definition = parse_definition(definition)
    deps = definition.dependencies()
    layers: dict[str, int] = {}

    def layer_of(step_id: str, seen: tuple[str, ...] = ()) -> int:
        if step_id in layers:
            return layers[step_id]
        if step_id in seen:  # cannot happen for a valid definition; stay finite anyway
            return 0
        value = 1 + max((layer_of(d, (*seen, step_id)) for d in deps[step_id]), default=-1)
        layers[step_id] = value
        return value

    nodes: dict[str, Node] = {}
    rows: dict[int, int] = {}
    for step in definition.steps:
        layer = layer_of(step.id)
        node = Node(
            id=step.id,
            kind=step.kind,
            label=_kind_label(step),
            layer=layer,
            row=rows.get(layer, 0),
            status=(statuses or {}).get(step.id, ""),
        )
        rows[layer] = node.row + 1
        nodes[step.id] = node
    tallest = max(rows.values(), default=1)
    for node in nodes.values():
        offset = (tallest - rows[node.layer]) * (NODE_HEIGHT + GAP_Y) / 2
        node.x = PAD + node.layer * (NODE_WIDTH + GAP_X)
        node.y = int(PAD + offset + node.row * (NODE_HEIGHT + GAP_Y))

    branch_names: dict[tuple[str, str], str] = {}
    for step in definition.steps:
        if isinstance(step, RouterStep):
            for name, targets in step.branches.items():
                for target in targets:
                    branch_names[(step.id, target)] = name
    edges = []
    for step in definition.steps:
        for source in sorted(deps[step.id], key=lambda s: (nodes[s].layer, nodes[s].row)):
            a, b = nodes[source], nodes[step.id]
            x1, y1 = a.x + NODE_WIDTH, a.y + NODE_HEIGHT // 2
            x2, y2 = b.x, b.y + NODE_HEIGHT // 2
            mid = (x1 + x2) // 2
            edges.append(
                Edge(
                    source=source,
                    target=step.id,
                    label=branch_names.get((source, step.id), ""),
                    path=f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}",
                    label_x=mid,
                    label_y=(y1 + y2) // 2 - 4,
                )
            )
    width = PAD * 2 + (max(rows, default=0) + 1) * (NODE_WIDTH + GAP_X) - GAP_X
    height = PAD * 2 + tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y
    return Diagram(nodes=list(nodes.values()), edges=edges, width=width, height=height)


# --- The trace waterfall ---------------------------------------------------------------------


@dataclass
class Bar:
    span: Span
    depth: int
    left_pct: float
    width_pct: float
    duration_ms: float | None


@dataclass
class Waterfall:
    bars: list[Bar]
    total_ms: float
    start: datetime | None


def waterfall(spans: list[Span], *, now: datetime | None = None) -> Waterfall:
    """Spans as horizontal bars on one time axis from the earliest start to the latest
    end (an open span ends ``now``), children under their parent, depth-first by start.
    ``left_pct``/``width_pct``: percent of the axis; ``duration_ms`` None while open."""
    if not spans:
        return Waterfall(bars=[], total_ms=0.0, start=None)
    now = now or timezone.now()
    start = min(s.start_time for s in spans)
    end = max((s.end_time or now) for s in spans)
    total = max((end - start).total_seconds() * 1000, 1.0)
    children: dict[str, list[Span]] = {}
    ids = {s.span_id for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: (s.start_time, s.pk)):
        if s.parent_span_id and s.parent_span_id in ids:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            roots.append(s)
    bars: list[Bar] = []

    def visit(span: Span, depth: int) -> None:
        begin = (span.start_time - start).total_seconds() * 1000
        finish = ((span.end_time or now) - start).total_seconds() * 1000
        bars.append(
            Bar(
                span=span,
                depth=depth,
                left_pct=round(100 * begin / total, 3),
                width_pct=round(max(100 * (finish - begin) / total, 0.4), 3),
                duration_ms=round(finish - begin, 1) if span.end_time else None,
            )
        )
        for child in children.get(span.span_id, []):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    return Waterfall(bars=bars, total_ms=round(total, 1), start=start)
