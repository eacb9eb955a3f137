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


# A replay reads every recorded call of its range (about 150-600 calls per second, see
# bench/replay.py): an hour, not the global 5-minute limit; past it the job fails, saying so.
REPLAY_SOFT_TIME_LIMIT_SECONDS = 3600


@shared_task(
    name="agents.tasks.replay_job_run",
    ignore_result=True,
    soft_time_limit=REPLAY_SOFT_TIME_LIMIT_SECONDS,
    time_limit=REPLAY_SOFT_TIME_LIMIT_SECONDS + 60,
)
def replay_job_run(job_id: int) -> None:
    """Run the policy replay ``job_id`` (``agents.replay.replay_job_run``); returns quietly
    when the job is gone or another worker claimed it."""
    from agents.replay import replay_job_run as run

    run(job_id=job_id)
