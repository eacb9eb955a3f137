"""Agents: Celery entry points (thin: load by id, call a service)."""

from __future__ import annotations

from celery import shared_task

from agents.runtime.resume import resume_decided_turns, resume_turn_if_decided


@shared_task(name="agents.tasks.resume_parked_turn", ignore_result=True)
def resume_parked_turn(turn_id: int) -> str:
    """Resume the standalone parked turn ``turn_id`` once all its approvals are final
    (queued by ``agents.runtime.resume.on_approval_decided``); returns how it ended, or
    ``""`` when there was nothing to do."""
    result = resume_turn_if_decided(turn_id=turn_id)
    return result.status if result is not None else ""


@shared_task(name="agents.tasks.resume_decided_turns", ignore_result=True)
def resume_decided_turns_task() -> int:
    """Beat: queue the resume of standalone turns whose approvals are all final but that
    are still parked (``agents.runtime.resume.resume_decided_turns``)."""
    return resume_decided_turns()
