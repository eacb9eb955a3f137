"""Agents: Celery entry points (thin: load by id, call a service)."""

from __future__ import annotations

from celery import shared_task

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
