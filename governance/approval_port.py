"""The approval port: the agent runtime asks for a human decision through here.

``agents`` may not import ``approvals`` (imports point ``controlplane <- governance <-
agents``; ``approvals -> governance``). ``approvals`` registers its requester in
``ApprovalsConfig.ready()``; until then ``approval_request`` raises, so a call that needs
approval never runs without one being asked for (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_requester: Callable[..., int] | None = None


def register_approval_requester(requester: Callable[..., int]) -> None:
    """Register the function that creates an approval request; it takes the keyword
    arguments of ``approval_request`` and returns the request's id."""
    global _requester
    _requester = requester


def approval_request(
    *, project_id: int, summary: str, payload: dict[str, Any], approver_role: str | None = None
) -> int:
    """Create one pending approval request and return its id.

    ``summary`` is one line for the inbox; ``payload`` is JSON-able and binds the request to
    what was decided (tool, arguments, ``args_hash``, ``policy_version_id``, the turn and
    tool call ids). Raises ``ImproperlyConfigured`` when no requester is registered.
    """
    if _requester is None:
        raise ImproperlyConfigured(
            "No approval requester registered: is 'approvals' in INSTALLED_APPS?"
        )
    return _requester(
        project_id=project_id, summary=summary, payload=payload, approver_role=approver_role
    )
