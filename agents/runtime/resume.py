"""Resuming standalone parked turns when their approval requests are decided.

``approvals`` sends ``governance.approval_port.approval_decided`` after a request's final
status commits. Requests of a flow step (a non-empty ``step_id`` / ``step_run_id`` in the
payload) belong to the flow engine; the others name a standalone turn (``turn_id``), which
``on_approval_decided`` queues for ``resume_parked_turn`` in a worker. The turn resumes
only when every one of its requests is final, and ``run_agent_turn`` claims it with a
conditional UPDATE, so duplicate signals or racing workers resume it once.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.models import AgentTurn, TurnStatus
from agents.runtime.turn import ApprovalDecision, Resume, TurnResult, run_agent_turn
from governance.approval_port import ApprovalOutcome, approval_outcomes

logger = logging.getLogger(__name__)


def is_standalone_turn_payload(payload: dict[str, Any]) -> bool:
    """True when the request's payload names a turn that no flow step owns."""
    return bool(payload.get("turn_id")) and not (
        payload.get("step_id") or payload.get("step_run_id")
    )


def on_approval_decided(
    sender: Any, *, outcome: ApprovalOutcome, payload: dict[str, Any], project_id: int, **_: Any
) -> None:
    """``approval_decided`` receiver: queue the resume of a standalone parked turn."""
    if not is_standalone_turn_payload(payload):
        return
    from agents.tasks import resume_parked_turn

    resume_parked_turn.delay(int(payload["turn_id"]))


def decisions_for(outcomes: dict[int, ApprovalOutcome], pending: list[dict]) -> dict:
    """The runtime's decisions from the approval outcomes (``{request id: outcome}``) for
    a parked turn's ``pending`` entries: ``{tool call id: ApprovalDecision}``. Approved ->
    the call runs (with the edited arguments, if any); rejected -> a refusal carrying the
    approver's comment; expired / cancelled -> a refusal carrying the status and the
    reason (``"cancelled: <reason>"``). An entry without an outcome gets no decision (the
    runtime denies it). The one mapping for standalone turns, delegates and flow steps
    (``flows.engine``)."""
    decisions: dict[str, ApprovalDecision] = {}
    for entry in pending:
        outcome = outcomes.get(entry.get("approval_request_id"))
        if outcome is None:
            continue  # no decision: the runtime denies the call
        if outcome.approved:
            decisions[entry["tool_call_id"]] = ApprovalDecision(
                approved=True, arguments=outcome.arguments, comment=outcome.comment
            )
        else:
            comment = outcome.comment or outcome.status
            if outcome.status != "rejected":
                comment = f"{outcome.status}: {comment}" if comment != outcome.status else comment
            decisions[entry["tool_call_id"]] = ApprovalDecision(approved=False, comment=comment)
    return decisions


def resume_turn_if_decided(*, turn_id: int) -> TurnResult | None:
    """Resume the parked turn ``turn_id`` when all its approval requests are final.
    Returns the ``TurnResult``, or ``None`` when there is nothing to do (the turn is gone or
    not parked, a request is still pending, or another worker claimed the turn first)."""
    turn = AgentTurn.objects.filter(pk=turn_id).first()
    if turn is None or turn.status != TurnStatus.PARKED:
        return None
    ids = [e["approval_request_id"] for e in turn.pending if e.get("approval_request_id")]
    outcomes = approval_outcomes(ids)
    if any(i not in outcomes or not outcomes[i].final for i in ids):
        return None
    try:
        return run_agent_turn(
            agent_version=None,
            resume=Resume(turn_id=turn.pk, decisions=decisions_for(outcomes, turn.pending)),
        )
    except ValueError:
        logger.info("turn %s was resumed by another worker", turn_id)
        return None


def resume_decided_turns(*, older_than_seconds: int = 60, limit: int = 200) -> int:
    """The safety net behind the signal: queue ``resume_parked_turn`` for standalone turns
    parked for at least ``older_than_seconds`` whose approval requests are all final (a
    process that died between the decision's commit and the signal left them parked).
    Returns how many were queued; a turn resumes once whatever queues it (the conditional
    UPDATE in ``run_agent_turn``)."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.tasks import resume_parked_turn

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    turns = list(
        AgentTurn.objects.filter(status=TurnStatus.PARKED, step_id="", updated_at__lte=cutoff)
        .order_by("updated_at")
        .values_list("pk", "pending")[:limit]
    )
    ids = [e.get("approval_request_id") for _, pending in turns for e in pending]
    outcomes = approval_outcomes([i for i in ids if i])
    queued = 0
    for pk, pending in turns:
        wanted = [e.get("approval_request_id") for e in pending]
        if wanted and all(i in outcomes and outcomes[i].final for i in wanted):
            resume_parked_turn.delay(pk)
            queued += 1
    return queued
