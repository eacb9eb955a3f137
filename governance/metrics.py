"""Prometheus counters of the control plane, in one module every app may import (flows and
approvals sit above governance): decisions, model calls, PII blocks, approvals, cost, and
the run / step counters the flows app increments.

Decisions, model calls, PII blocks, budget denials, approval requests and cost are counted
from the audit log itself (``observe_audit_event``, hooked into ``audit_record`` and run
after the event commits), so every governed path is counted once, the same way it is
audited. Decided approvals are counted from ``approval_decided``. Served at ``/metrics``
(``governance.views_metrics``). With several processes (gunicorn workers, Celery), set
``PROMETHEUS_MULTIPROC_DIR`` so the counters are shared (prometheus_client multiprocess
mode; django-prometheus's exporter reads it).
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from typing import Any

from prometheus_client import Counter

DECISIONS = Counter(
    "controlplane_decisions",
    "Tool call decisions of the policy engine (not dry runs).",
    ["project", "effect", "rule"],
)
MODEL_CALLS = Counter(
    "controlplane_model_calls", "Governed model calls by outcome.", ["project", "outcome"]
)
PII_BLOCKS = Counter(
    "controlplane_pii_blocks", "Calls refused by a PII block rule.", ["project", "direction"]
)
BUDGET_DENIALS = Counter(
    "controlplane_budget_denials", "Model calls refused by a hard budget.", ["project"]
)
APPROVALS = Counter(
    "controlplane_approvals",
    "Approval requests by status: requested, then approved / rejected / expired / cancelled.",
    ["project", "status"],
)
COST_USD = Counter(
    "controlplane_cost_usd", "Spend recorded in the cost ledger, USD.", ["project", "kind"]
)
COST_ENTRIES = Counter(
    "controlplane_cost_entries", "Cost ledger entries written.", ["project", "kind"]
)
# For the flows app (it increments them; nothing here does).
RUNS = Counter("controlplane_runs", "Flow runs by final or current status.", ["project", "status"])
STEPS = Counter(
    "controlplane_steps",
    "Step runs by status (started, succeeded, failed, retried...).",
    ["project", "kind", "status"],
)


PROJECT_LABEL_CACHE_SECONDS = 60.0
_project_labels: dict[int, tuple[float, str]] = {}


def project_label(project_id: int | None) -> str:
    """The ``project`` label of ``project_id``: its slug, read at most once per
    ``PROJECT_LABEL_CACHE_SECONDS`` per process (counters are incremented after every
    step; a renamed project's label follows within the TTL). ``-`` when unknown."""
    if project_id is None:
        return "-"
    cached = _project_labels.get(project_id)
    now = time.monotonic()
    if cached is not None and now - cached[0] < PROJECT_LABEL_CACHE_SECONDS:
        return cached[1]
    from controlplane.models import Project

    slug = Project.objects.filter(pk=project_id).values_list("slug", flat=True).first() or "-"
    _project_labels[project_id] = (now, slug)
    return slug


def _rule_family(rule: str) -> str:
    """``grant.rules.3`` -> ``grant.rules`` (bounded label values)."""
    parts = [p for p in rule.split(".") if not p.isdigit()]
    return ".".join(parts[:2]) or "none"


def observe_audit_event(*, action: str, project_slug: str, data: dict[str, Any]) -> None:
    """Count one committed audit event. Never raises (metrics must not break a call)."""
    try:
        project = project_slug or "-"
        if action == "tool.decision":
            DECISIONS.labels(
                project,
                str(data.get("effect") or "unknown"),
                _rule_family(str(data.get("rule") or "")),
            ).inc()
        elif action == "model.call":
            MODEL_CALLS.labels(project, "ok").inc()
        elif action == "model.call.refused":
            MODEL_CALLS.labels(project, "refused").inc()
            if str(data.get("rule") or "").startswith("pii."):
                PII_BLOCKS.labels(project, str(data["rule"])[4:]).inc()
        elif action == "model.call.failed":
            MODEL_CALLS.labels(project, "failed").inc()
        elif action == "tool.pii_blocked":
            PII_BLOCKS.labels(project, str(data.get("direction") or "tool_input")).inc()
        elif action == "budget.reservation.denied":
            BUDGET_DENIALS.labels(project).inc()
        elif action == "approval.requested":
            APPROVALS.labels(project, "requested").inc()
        elif action == "cost.recorded":
            kind = str(data.get("kind") or "model")
            COST_USD.labels(project, kind).inc(float(Decimal(str(data.get("cost_usd") or 0))))
            COST_ENTRIES.labels(project, kind).inc()
    except Exception:  # noqa: BLE001, S110 - a metric is never worth a failed call
        pass


def observe_approval_decided(sender=None, *, outcome=None, project_id=None, **kwargs) -> None:
    """``approval_decided`` receiver: count the final status."""
    # A metric is never worth a failed decision.
    with contextlib.suppress(Exception):
        status = str(getattr(outcome, "status", "unknown"))
        APPROVALS.labels(project_label(project_id), status).inc()
