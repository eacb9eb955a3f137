"""Approvals reads: the inbox, one request's context, outcomes for the approval port."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db.models import Case, IntegerField, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from approvals.models import ApprovalDecision, ApprovalRequest, ApprovalSettings, ApprovalStatus
from governance.approval_port import ApprovalOutcome
from governance.models import AuditEvent, CostEntry

# The inbox's age filter: label -> minimum age.
AGE_FILTERS = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "24h": timedelta(hours=24),
}
TRACE_LIMIT = 200


def pending_approval_count(*, project) -> int:
    """Number of pending approval requests in ``project`` (the inbox badge)."""
    if project is None:
        return 0
    return ApprovalRequest.objects.filter(project=project, status=ApprovalStatus.PENDING).count()


def approval_settings_for(project) -> ApprovalSettings:
    """The project's ``ApprovalSettings``; an unsaved row with the defaults when the
    project never changed them (``approval_settings_update`` saves it)."""
    found = ApprovalSettings.objects.filter(project=project).first()
    return found or ApprovalSettings(project=project)


def approval_requests_for_project(project) -> QuerySet[ApprovalRequest]:
    """The project's approval requests: pending first, then newest first."""
    return (
        ApprovalRequest.objects.filter(project=project)
        .select_related("decided_by", "requested_by")
        .annotate(
            pending_first=Case(
                When(status=ApprovalStatus.PENDING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("pending_first", "-requested_at", "-pk")
    )


def inbox_requests(
    *,
    project,
    tab: str = "pending",
    agent: str = "",
    run: str = "",
    risk: str = "",
    age: str = "",
) -> QuerySet[ApprovalRequest]:
    """The inbox: ``tab`` ``pending`` (oldest first: the one waiting longest on top) or
    ``decided`` (latest decision first). Filters: ``agent`` slug, ``run`` (run id or flow
    step id), ``risk`` level, ``age`` (a key of ``AGE_FILTERS``: requested at least that
    long ago). Unknown filter values match nothing rather than everything."""
    qs = ApprovalRequest.objects.filter(project=project).select_related(
        "decided_by", "requested_by", "policy_version"
    )
    if tab == "decided":
        qs = qs.exclude(status=ApprovalStatus.PENDING).order_by("-decided_at", "-pk")
    else:
        qs = qs.filter(status=ApprovalStatus.PENDING).order_by("requested_at", "pk")
    if agent:
        qs = qs.filter(agent=agent)
    if run:
        qs = qs.filter(Q(run_id=run) | Q(step_id=run))
    if risk:
        qs = qs.filter(risk=risk)
    if age:
        minimum = AGE_FILTERS.get(age)
        if minimum is None:
            return qs.none()
        qs = qs.filter(requested_at__lte=timezone.now() - minimum)
    return qs


def inbox_filter_choices(project) -> dict[str, list[str]]:
    """Values the inbox filters offer: agents and risk levels seen in the project."""
    qs = ApprovalRequest.objects.filter(project=project)
    return {
        "agents": sorted(set(qs.exclude(agent="").values_list("agent", flat=True))),
        "risks": sorted(set(qs.exclude(risk="").values_list("risk", flat=True))),
        "ages": list(AGE_FILTERS),
    }


def approval_decisions(request: ApprovalRequest) -> list[ApprovalDecision]:
    return list(request.decisions.select_related("approver").order_by("decided_at", "pk"))


def run_cost_usd(request: ApprovalRequest) -> Decimal:
    """Decimal USD charged so far to the request's run (the cost ledger, by ``run_id``;
    a standalone turn's run is ``turn-<id>``)."""
    run_id = request.run_id or (f"turn-{request.turn_id}" if request.turn_id else "")
    if not run_id:
        return Decimal(0)
    total = CostEntry.objects.filter(project_id=request.project_id, run_id=run_id).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return total or Decimal(0)


def run_trace(request: ApprovalRequest) -> list[AuditEvent]:
    """The audit events of the request's turn so far (decisions, model and tool calls,
    the turn's end), oldest first; at most ``TRACE_LIMIT``."""
    if not request.turn_id:
        return []
    return list(
        AuditEvent.objects.filter(
            project_id=request.project_id, data__turn_id=request.turn_id
        ).order_by("sequence")[:TRACE_LIMIT]
    )


def turn_state(request: ApprovalRequest) -> str:
    """How the request's agent turn stands, from its last ``agent.turn.*`` audit event:
    ``parked`` / ``completed`` / ``failed`` / ``running``, or ``""`` when unknown."""
    if not request.turn_id:
        return ""
    last = (
        AuditEvent.objects.filter(
            project_id=request.project_id,
            data__turn_id=request.turn_id,
            action__startswith="agent.turn.",
        )
        .order_by("-sequence")
        .values_list("action", flat=True)
        .first()
    )
    return last.rsplit(".", 1)[-1] if last else ""


def outcome_of(request: ApprovalRequest) -> ApprovalOutcome:
    """The request as the approval port reports it."""
    return ApprovalOutcome(
        request_id=request.pk,
        status=request.status,
        arguments=request.final_arguments if request.status == ApprovalStatus.APPROVED else None,
        comment=request.reason,
    )


def approval_outcomes_read(request_ids: list[int]) -> dict[int, ApprovalOutcome]:
    """``governance.approval_port.approval_outcomes``: the outcome of each existing id."""
    return {r.pk: outcome_of(r) for r in ApprovalRequest.objects.filter(pk__in=request_ids)}
