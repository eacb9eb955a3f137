"""What governance adds to the dashboard: spend today against the budgets, and the recent
denials and PII blocks (each linking to its run's decision log or its audit event).

Registered in ``GovernanceConfig.ready()`` through ``controlplane.extensions``. Runs in
flight come from the flows app, which registers its own panel the same way.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from governance.models import AuditEvent, BudgetPeriodKind
from governance.reports import cost_report

RECENT_PROBLEMS = 10
PROBLEM_WINDOW_DAYS = 7


def spend_today_usd(project, *, now: datetime | None = None) -> Decimal:
    """The project's ledger spend since local midnight (Decimal USD)."""
    now = now or timezone.now()
    zone = project.zone
    midnight = datetime.combine(now.astimezone(zone).date(), time.min, zone)
    report = cost_report(
        projects=[project], zone=zone, start=midnight, end=now + timedelta(seconds=1)
    )
    return report.total_usd


def problems_query() -> Q:
    """Denials and PII blocks among the audit actions."""
    return (
        Q(action="tool.decision", data__effect="deny")
        | Q(action="model.call.refused")
        | Q(action="tool.pii_blocked")
        | Q(action="budget.reservation.denied")
        | Q(action="policy.error")
    )


def recent_problems(project, *, limit: int = RECENT_PROBLEMS) -> list[dict[str, Any]]:
    """The newest denials and PII blocks of the last 7 days: ``[{"event", "what", "rule",
    "run_id"}]``."""
    since = timezone.now() - timedelta(days=PROBLEM_WINDOW_DAYS)
    events = (
        AuditEvent.objects.filter(project=project, occurred_at__gte=since)
        .filter(problems_query())
        .order_by("-sequence")[:limit]
    )
    out = []
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        rule = str(data.get("rule") or "")
        if event.action == "tool.pii_blocked":
            rule = "pii." + str(data.get("direction", "tool_input"))
        elif event.action == "budget.reservation.denied":
            rule = "budget.exceeded"
        out.append(
            {
                "event": event,
                "what": str(data.get("tool") or event.object_repr),
                "rule": rule,
                "pii": rule.startswith("pii."),
                "run_id": str(data.get("run_id") or ""),
            }
        )
    return out


def budgets_today(project) -> list[dict[str, Any]]:
    """Active day and month budgets with their current usage (``BudgetUsage``)."""
    from governance.budgets import BudgetUsage, budgets_for_project, period_bounds

    rows = []
    for budget in budgets_for_project(project).filter(active=True):
        if budget.period == BudgetPeriodKind.TOTAL:
            continue
        begins, ends = period_bounds(budget.period, budget.current_period_start, project.zone)
        usage = BudgetUsage(
            period_start=budget.current_period_start,
            period_begins=begins,
            period_ends=ends,
            limit_usd=budget.limit_usd,
            spent_usd=budget.current_spent_usd,
            reserved_usd=budget.current_reserved_usd,
        )
        rows.append({"budget": budget, "usage": usage})
    return rows


def spend_panel(project, user, role) -> dict[str, Any]:
    return {"spent_today_usd": spend_today_usd(project), "budgets": budgets_today(project)}


def problems_panel(project, user, role) -> dict[str, Any]:
    return {"problems": recent_problems(project)}
