"""The approval port: the agent runtime and the flow engine ask for human decisions
through here, and learn of them through the ``approval_decided`` signal.

``agents`` and ``flows`` may not import ``approvals`` (imports point ``controlplane <-
governance <- agents <- flows``; ``approvals -> governance``). ``approvals`` registers its
requester and its outcome reader in ``ApprovalsConfig.ready()``; until then
``approval_request`` raises, so a call that needs approval never runs without one being
asked for (fail closed).

The contract:

- ``approval_request(...)`` creates one pending request and returns its id. ``payload``
  says what it is about: for a tool call ``{"tool", "arguments", "args_hash",
  "policy_version_id", "rule", "turn_id", "tool_call_id", "agent", "agent_version",
  "run_id", "step_id"}``; for a flow approval step ``{"run_id", "step_run_id", "step"}``.
- When a request reaches a final status (approved / rejected / expired / cancelled),
  ``approvals`` sends ``approval_decided`` **after its transaction commits**, with
  ``outcome`` (an ``ApprovalOutcome``), ``payload`` (the request's payload) and
  ``project_id``. Receivers resume what waited (``flows`` a parked step, ``agents`` a
  standalone parked turn); they must tolerate a duplicate signal (claim the resume with a
  conditional UPDATE).
- ``approval_outcomes(ids)`` reads the current outcome of several requests (a parked
  turn resumes only when every one of its requests is final).
- ``approval_cancel(ids, reason)`` cancels those still pending (the flow run that asked
  was cancelled); each cancelled request sends ``approval_decided`` like any outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.dispatch import Signal

# Sent with keyword arguments ``outcome`` (ApprovalOutcome), ``payload`` (dict) and
# ``project_id`` (int) once a request's final decision has committed.
approval_decided = Signal()

FINAL_STATUSES = frozenset({"approved", "rejected", "expired", "cancelled"})


@dataclass(frozen=True)
class ApprovalOutcome:
    """Where one approval request stands. ``status``: pending / approved / rejected /
    expired / cancelled; ``arguments``: the edited arguments an approver approved (``None``
    for the proposed ones); ``comment``: the deciding approver's comment or the reason
    (``expired``)."""

    request_id: int
    status: str
    arguments: dict[str, Any] | None = None
    comment: str = ""

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def approved(self) -> bool:
        return self.status == "approved"


_requester: Callable[..., int] | None = None
_outcome_reader: Callable[[list[int]], dict[int, ApprovalOutcome]] | None = None
_canceller: Callable[..., list[int]] | None = None


def register_approval_requester(requester: Callable[..., int]) -> None:
    """Register the function that creates an approval request; it takes the keyword
    arguments of ``approval_request`` and returns the request's id."""
    global _requester
    _requester = requester


def register_outcome_reader(reader: Callable[[list[int]], dict[int, ApprovalOutcome]]) -> None:
    """Register the function behind ``approval_outcomes``."""
    global _outcome_reader
    _outcome_reader = reader


def register_approval_canceller(canceller: Callable[..., list[int]]) -> None:
    """Register the function behind ``approval_cancel``: it takes ``request_ids`` and
    ``reason`` (keywords) and returns the ids it cancelled."""
    global _canceller
    _canceller = canceller


def approval_request(
    *,
    project_id: int,
    summary: str,
    payload: dict[str, Any],
    approver_role: str | None = None,
    quorum: int = 1,
    subject_kind: str = "tool_call",
    risk: str = "",
    requested_by_user_id: int | None = None,
    agent_version_id: int | None = None,
) -> int:
    """Create one pending approval request and return its id.

    ``summary`` is one line for the inbox; ``payload`` is JSON-able and binds the request to
    what was decided (see the module docstring). ``approver_role``: the least role that may
    decide (``None``: the project's default); ``quorum``: distinct approvers needed;
    ``subject_kind``: ``tool_call`` / ``flow_step`` / ``budget_override``; ``risk``: the
    tool's risk level; ``requested_by_user_id``: the user the run acts for (who may not
    approve it). Raises ``ImproperlyConfigured`` when no requester is registered.
    """
    if _requester is None:
        raise ImproperlyConfigured(
            "No approval requester registered: is 'approvals' in INSTALLED_APPS?"
        )
    return _requester(
        project_id=project_id,
        summary=summary,
        payload=payload,
        approver_role=approver_role,
        quorum=quorum,
        subject_kind=subject_kind,
        risk=risk,
        requested_by_user_id=requested_by_user_id,
        agent_version_id=agent_version_id,
    )


def approval_outcomes(request_ids: Iterable[int]) -> dict[int, ApprovalOutcome]:
    """The current outcome of each request id (missing ids are left out). Raises
    ``ImproperlyConfigured`` when no reader is registered."""
    if _outcome_reader is None:
        raise ImproperlyConfigured("No approval outcome reader registered.")
    return _outcome_reader(list(request_ids))


def approval_cancel(request_ids: Iterable[int], reason: str = "cancelled") -> list[int]:
    """Cancel the requests of ``request_ids`` that are still pending (status
    ``cancelled``, ``reason`` kept, audited, ``approval_decided`` sent after commit); final
    ones and unknown ids are left alone. Returns the ids cancelled. Raises
    ``ImproperlyConfigured`` when no canceller is registered."""
    if _canceller is None:
        raise ImproperlyConfigured("No approval canceller registered.")
    return _canceller(request_ids=list(request_ids), reason=reason)
