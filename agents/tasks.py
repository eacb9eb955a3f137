"""Agents: Celery entry points (thin: load by id, call a service)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="agents.tasks.replay_job_run", ignore_result=True)
def replay_job_run(job_id: int) -> None:
    """Run the policy replay ``job_id`` (``agents.replay.replay_job_run``); returns quietly
    when the job is gone or another worker claimed it."""
    from agents.replay import replay_job_run as run

    run(job_id=job_id)
