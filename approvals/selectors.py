"""Approvals reads."""

from __future__ import annotations

from django.db.models import Case, IntegerField, QuerySet, Value, When

from approvals.models import ApprovalRequest, ApprovalStatus


def pending_approval_count(*, project) -> int:
    """Number of pending approval requests in ``project`` (the inbox badge)."""
    if project is None:
        return 0
    return ApprovalRequest.objects.filter(project=project, status=ApprovalStatus.PENDING).count()


def approval_requests_for_project(project) -> QuerySet[ApprovalRequest]:
    """The project's approval requests: pending first, then newest first."""
    return (
        ApprovalRequest.objects.filter(project=project)
        .select_related("decided_by")
        .annotate(
            pending_first=Case(
                When(status=ApprovalStatus.PENDING, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("pending_first", "-requested_at", "-pk")
    )
