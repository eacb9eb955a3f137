"""Governance Celery entry points (thin: load by id, call a service)."""

from __future__ import annotations

from celery import shared_task

from governance.services import budget_expire_reservations


@shared_task(name="governance.tasks.budget_expire_reservations", ignore_result=True)
def expire_budget_reservations() -> int:
    """Give back budget reservations nobody settled before they expired (run by beat every
    ``BUDGET_EXPIRE_INTERVAL_SECONDS``); returns how many expired."""
    return budget_expire_reservations()
