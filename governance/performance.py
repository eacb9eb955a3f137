"""The performance view: latency p50 / p95 and error rate per agent, tool and model endpoint,
the slowest calls and the open circuit breakers, read from the audit events the runtime
writes (``model.call`` with ``latency_ms``, ``model.call.failed``, ``tool.executed`` with
``duration_ms`` and ``ok``, ``agent.turn.*``), each row linking to example runs.

Flow steps (``StepRun``) are not stored yet: when the flows app lands, its step timings
join here (``register_performance_source``) without governance importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from governance.models import AuditEvent, BreakerState, CircuitBreaker

PERFORMANCE_ACTIONS = (
    "model.call",
    "model.call.failed",
    "tool.executed",
    "agent.turn.completed",
    "agent.turn.failed",
    "agent.turn.parked",
)
MAX_EVENTS = 20_000
EXAMPLE_RUNS = 3
SLOWEST = 10


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0..1) of sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(slots=True)
class PerformanceRow:
    """One agent, tool or model endpoint: calls, failures, latency in ms (p50 / p95 over
    the calls that reported one) and up to 3 example run ids (the slowest or failed)."""

    name: str
    calls: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    examples: list[tuple[float, str]] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.5)

    @property
    def p95_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.95)

    @property
    def example_runs(self) -> list[str]:
        seen: list[str] = []
        for _, run in sorted(self.examples, reverse=True):
            if run and run not in seen:
                seen.append(run)
            if len(seen) == EXAMPLE_RUNS:
                break
        return seen

    def add(self, *, latency_ms: float | None, failed: bool, run_id: str) -> None:
        self.calls += 1
        self.failures += int(failed)
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)
        weight = float("inf") if failed else (latency_ms or 0.0)
        self.examples.append((weight, run_id))
        if len(self.examples) > 50:
            self.examples = sorted(self.examples, reverse=True)[: EXAMPLE_RUNS * 3]


@dataclass(slots=True)
class SlowCall:
    kind: str
    name: str
    latency_ms: float
    run_id: str
    sequence: int
    occurred_at: datetime


@dataclass(slots=True)
class PerformanceReport:
    since: datetime
    events_read: int
    truncated: bool
    agents: list[PerformanceRow]
    tools: list[PerformanceRow]
    endpoints: list[PerformanceRow]
    slowest: list[SlowCall]
    open_breakers: list[CircuitBreaker]
    extra: dict[str, Any] = field(default_factory=dict)


_sources: dict[str, Callable[[Any, datetime], Any]] = {}


def register_performance_source(key: str, source: Callable[[Any, datetime], Any]) -> None:
    """Add a section (e.g. the flows app's slowest steps): ``source(project, since)``; its
    result is in ``PerformanceReport.extra[key]``."""
    _sources[key] = source


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _agent_of(object_repr: str) -> str:
    return object_repr.split("@v", 1)[0] if "@v" in object_repr else object_repr


def project_performance(
    project, *, hours: int = 24, now: datetime | None = None
) -> PerformanceReport:
    """Performance of ``project`` over the last ``hours`` (the newest 20,000 matching
    events at most; ``truncated`` says when there were more). Latencies in ms."""
    since = (now or timezone.now()) - timedelta(hours=hours)
    rows = list(
        AuditEvent.objects.filter(
            project=project, occurred_at__gte=since, action__in=PERFORMANCE_ACTIONS
        )
        .order_by("-sequence")
        .values_list("sequence", "occurred_at", "action", "object_repr", "data")[: MAX_EVENTS + 1]
    )
    truncated = len(rows) > MAX_EVENTS
    rows = rows[:MAX_EVENTS]
    agents: dict[str, PerformanceRow] = {}
    tools: dict[str, PerformanceRow] = {}
    endpoints: dict[str, PerformanceRow] = {}
    slow: list[SlowCall] = []

    def row(table: dict[str, PerformanceRow], name: str) -> PerformanceRow:
        if name not in table:
            table[name] = PerformanceRow(name=name)
        return table[name]

    for sequence, occurred_at, action, object_repr, data in rows:
        data = data if isinstance(data, dict) else {}
        run_id = str(data.get("run_id") or "")
        agent = _agent_of(object_repr)
        if action in ("model.call", "model.call.failed"):
            failed = action == "model.call.failed"
            latency = None if failed else _number(data.get("latency_ms"))
            endpoint = str(data.get("endpoint") or "(unknown)")
            row(endpoints, endpoint).add(latency_ms=latency, failed=failed, run_id=run_id)
            if latency is not None:
                slow.append(SlowCall("model", endpoint, latency, run_id, sequence, occurred_at))
        elif action == "tool.executed":
            failed = not data.get("ok", False)
            latency = _number(data.get("duration_ms"))
            tool = str(data.get("tool") or "(unknown)")
            row(tools, tool).add(latency_ms=latency, failed=failed, run_id=run_id)
            if latency is not None:
                slow.append(SlowCall("tool", tool, latency, run_id, sequence, occurred_at))
        elif action.startswith("agent.turn."):
            # Turns: the agent's calls and failures (no duration is recorded per turn).
            row(agents, agent).add(
                latency_ms=None, failed=action == "agent.turn.failed", run_id=run_id
            )
        if action == "model.call":
            latency = _number(data.get("latency_ms"))
            if latency is not None:
                row(agents, agent).latencies_ms.append(latency)
    slow.sort(key=lambda c: -c.latency_ms)
    breakers = list(
        CircuitBreaker.objects.filter(project=project)
        .exclude(state=BreakerState.CLOSED)
        .order_by("label", "key")
    )

    def ordered(table: dict[str, PerformanceRow]) -> list[PerformanceRow]:
        return sorted(table.values(), key=lambda r: (-(r.p95_ms or 0), r.name))

    return PerformanceReport(
        since=since,
        events_read=len(rows),
        truncated=truncated,
        agents=ordered(agents),
        tools=ordered(tools),
        endpoints=ordered(endpoints),
        slowest=slow[:SLOWEST],
        open_breakers=breakers,
        extra={key: source(project, since) for key, source in _sources.items()},
    )
