"""Approvals reads."""

from __future__ import annotations

from approvals.models import ApprovalRequest, ApprovalStatus


def pending_approval_count(*, project) -> int:
    """Number of pending approval requests in ``project`` (the inbox badge)."""
    if project is None:
        return 0
    return ApprovalRequest.objects.filter(project=project, status=ApprovalStatus.PENDING).count()
