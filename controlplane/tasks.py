"""Controlplane Celery entry points."""

from __future__ import annotations

from celery import shared_task

from controlplane.services import worker_heartbeat_record


@shared_task(name="controlplane.tasks.worker_heartbeat", ignore_result=True)
def worker_heartbeat(hostname: str | None = None) -> None:
    """Record that a worker is alive (run by beat every CELERY_WORKER_HEARTBEAT_INTERVAL_SECONDS)."""
    worker_heartbeat_record(hostname=hostname or worker_heartbeat.request.hostname or "unknown")
