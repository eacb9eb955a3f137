"""Flows: Celery entry points (thin: load by id, call a service). Ids only, JSON only."""

from __future__ import annotations

from celery import shared_task

from flows import engine


@shared_task(name="flows.tasks.step_execute", ignore_result=True, acks_late=True)
def step_execute(step_run_id: int) -> None:
    """Claim and run one attempt of a step run (a duplicate delivery does nothing)."""
    engine.step_execute(step_run_id=step_run_id)


@shared_task(name="flows.tasks.step_resume", ignore_result=True, acks_late=True)
def step_resume(step_run_id: int) -> None:
    """Continue a step run whose approval requests are all decided."""
    engine.step_resume(step_run_id=step_run_id)


@shared_task(name="flows.tasks.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Requeue step runs whose lease expired or whose task was lost (beat)."""
    return engine.sweep()


@shared_task(name="flows.tasks.schedule_fire", ignore_result=True)
def schedule_fire(schedule_id: int) -> int | None:
    """Start a run for a flow schedule (beat, django-celery-beat); returns the run id."""
    from flows.services import flow_schedule_fire

    run = flow_schedule_fire(schedule_id=schedule_id)
    return run.pk if run is not None else None
