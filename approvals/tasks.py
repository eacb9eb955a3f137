"""Approvals: Celery entry points (thin: load by id, call a service)."""

from __future__ import annotations

from celery import shared_task

from approvals.notifications import (
    NotificationTransientError,
    approval_notify_email_send,
    approval_notify_webhook_send,
)
from approvals.services import approvals_escalate, approvals_expire

NOTIFY_RETRY = {
    "autoretry_for": (NotificationTransientError,),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="approvals.tasks.approvals_expire", ignore_result=True)
def expire_approvals() -> int:
    """Expire pending requests past ``expires_at`` (beat, every
    ``APPROVALS_SWEEP_INTERVAL_SECONDS``); returns how many expired."""
    return approvals_expire()


@shared_task(name="approvals.tasks.approvals_escalate", ignore_result=True)
def escalate_approvals() -> int:
    """Escalate pending requests past their SLA (beat); returns how many."""
    return approvals_escalate()


@shared_task(name="approvals.tasks.approval_notify_email", ignore_result=True, **NOTIFY_RETRY)
def approval_notify_email(request_id: int, event: str) -> int:
    """Email ``event`` (requested / escalated / decided) on approval ``request_id``."""
    return approval_notify_email_send(request_id=request_id, event=event)


@shared_task(name="approvals.tasks.approval_notify_webhook", ignore_result=True, **NOTIFY_RETRY)
def approval_notify_webhook(request_id: int, event: str) -> int | None:
    """POST ``event`` on approval ``request_id`` to the project's webhook."""
    return approval_notify_webhook_send(request_id=request_id, event=event)
