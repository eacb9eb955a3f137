"""Approvals: writes (keyword-only, typed, audited)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from approvals.models import ApprovalRequest
from governance.services import audit_record


@transaction.atomic
def approval_request_create(
    *,
    project_id: int,
    summary: str,
    payload: dict[str, Any],
    approver_role: str | None = None,
    **_extra: Any,
) -> int:
    """Create a pending ``ApprovalRequest`` (the runtime reaches this through
    ``governance.approval_port``) and return its id. ``approver_role`` is kept in the
    payload until the inbox issue gives it a column. Audited ``approval.requested``."""
    request = ApprovalRequest.objects.create(
        project_id=project_id,
        summary=summary[:300],
        payload={**payload, "approver_role": approver_role},
    )
    audit_record(
        action="approval.requested",
        obj=request,
        data={
            key: payload.get(key)
            for key in ("tool", "args_hash", "policy_version_id", "turn_id", "tool_call_id")
        },
    )
    return request.pk
