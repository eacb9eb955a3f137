"""The decision log of a run, read from the audit events the agent runtime writes.

Every governed step of a run is audited with the run id in its data (``tool.decision``,
``tool.approval.recheck``, ``tool.pii_blocked``, ``tool.executed``, ``model.call``,
``model.call.refused``, ``model.call.failed``, ``agent.turn.*``, ``agent.delegated``,
``agent.delegation.refused``); approval requests are linked through their ids. This module
turns those events into one ordered list of decisions: rule, policy version, approval,
PII findings as ``{entity_type: count}`` (never values) and the model's stated reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q

from governance.models import AuditEvent

RUN_ACTIONS = (
    "tool.decision",
    "tool.approval.recheck",
    "tool.pii_blocked",
    "tool.executed",
    "model.call",
    "model.call.refused",
    "model.call.failed",
    "agent.turn.",
    "agent.delegated",
    "agent.delegation.refused",
)
APPROVAL_OBJECT_TYPE = "approvals.approvalrequest"
MAX_DECISIONS = 5000


@dataclass(frozen=True, slots=True)
class Decision:
    """One entry of a run's decision log (see ``DecisionSerializer`` for the fields)."""

    sequence: int
    occurred_at: datetime
    action: str
    kind: str
    outcome: str
    subject: str
    actor_name: str
    rule: str = ""
    policy: str = ""
    policy_version_id: int | None = None
    approval_request_ids: list[int] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    messages: list[str] = field(default_factory=list)
    turn_id: int | None = None


@dataclass(frozen=True, slots=True)
class DecisionLog:
    run_id: str
    decisions: list[Decision]

    @property
    def summary(self) -> dict[str, int]:
        """Decisions per outcome, e.g. ``{"allow": 3, "deny": 1}``."""
        return dict(Counter(d.outcome for d in self.decisions))


def run_events(project, run_id: str):
    """The audit events of ``run_id`` in ``project``, in chain order."""
    return AuditEvent.objects.filter(project=project, data__run_id=run_id).order_by("sequence")


def _counts(*values: Any) -> dict[str, int]:
    """Merge PII findings given as ``{type: count}`` dicts or lists of types."""
    out: Counter[str] = Counter()
    for value in values:
        if isinstance(value, dict):
            for key, n in value.items():
                if isinstance(n, int) and not isinstance(n, bool):
                    out[str(key)] += n
        elif isinstance(value, list):
            out.update(str(v) for v in value)
    return dict(out)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decision_from_event(event: AuditEvent) -> Decision:
    """One audit event as a decision log entry."""
    data = event.data if isinstance(event.data, dict) else {}
    action = event.action
    base = {
        "sequence": event.sequence,
        "occurred_at": event.occurred_at,
        "action": action,
        "actor_name": event.actor_name,
        "turn_id": _int_or_none(data.get("turn_id")),
        "messages": [str(m) for m in data.get("messages") or [] if m],
    }
    audit_pii = data.get("pii") if isinstance(data.get("pii"), dict) else None

    def make(**fields: Any) -> Decision:
        return Decision(**{**base, **fields})

    if "withheld" in data:
        return make(
            kind="audit",
            outcome="withheld",
            subject=event.object_repr,
            messages=[str(data["withheld"])],
            pii=_counts(data.get("pii")),
        )

    if action == "tool.decision":
        return make(
            kind="tool",
            outcome=str(data.get("effect", "")),
            subject=str(data.get("tool", "")),
            rule=str(data.get("rule") or ""),
            policy=str(data.get("policy") or ""),
            policy_version_id=_int_or_none(data.get("policy_version_id")),
        )
    if action == "tool.approval.recheck":
        return make(
            kind="approval",
            outcome="recheck_same" if data.get("matches") else "recheck_changed",
            subject=str(data.get("tool", "")),
        )
    if action == "tool.pii_blocked":
        return make(
            kind="tool",
            outcome="blocked",
            subject=str(data.get("tool", "")),
            rule=f"pii.{data.get('direction', 'tool_input')}",
            pii=_counts(data.get("pii_counts") or data.get("entities")),
        )
    if action == "tool.executed":
        return make(
            kind="tool",
            outcome="executed" if data.get("ok") else "failed",
            subject=str(data.get("tool", "")),
            messages=[str(data["error"])] if data.get("error") else [],
            pii=_counts(data.get("pii_counts") or data.get("pii"), audit_pii),
        )
    if action == "model.call":
        return make(
            kind="model",
            outcome="called",
            subject=f"{data.get('endpoint', '')}/{data.get('model', '')}",
            reason=str(data.get("reason") or ""),
            pii=_counts(
                data.get("pii_in_counts") or data.get("pii_in"),
                data.get("pii_out_counts") or data.get("pii_out"),
            ),
        )
    if action in ("model.call.refused", "model.call.failed"):
        return make(
            kind="model",
            outcome="refused" if action.endswith("refused") else "failed",
            subject=event.object_repr,
            rule=str(data.get("rule") or ""),
            messages=[str(m) for m in (data.get("message"), data.get("error")) if m],
        )
    if action.startswith("agent.turn."):
        return make(
            kind="turn",
            outcome=action.rsplit(".", 1)[-1],
            subject=event.object_repr,
            rule=str(data.get("rule") or ""),
            approval_request_ids=[
                i for i in data.get("approval_request_ids") or [] if _int_or_none(i) is not None
            ],
            messages=[str(data["reason"])] if data.get("reason") else [],
        )
    if action.startswith("agent.delegat"):
        return make(
            kind="delegation",
            outcome="refused" if action.endswith("refused") else "delegated",
            subject=event.object_repr,
            rule=str(data.get("rule") or ""),
        )
    if event.object_type == APPROVAL_OBJECT_TYPE:
        ids = [int(event.object_id)] if event.object_id.isdigit() else []
        return make(
            kind="approval",
            outcome=action.removeprefix("approval."),
            subject=str(data.get("tool") or event.object_repr),
            policy_version_id=_int_or_none(data.get("policy_version_id")),
            approval_request_ids=ids,
            messages=[str(data["comment"])] if data.get("comment") else base["messages"],
        )
    return make(kind="other", outcome=action, subject=event.object_repr)


def run_decision_log(*, project, run_id: str) -> DecisionLog | None:
    """Every decision of ``run_id`` in ``project``, in the order they were made (audit
    sequence), with the approval requests' own events (requested, decided) in place.
    None when the project has no event of that run. At most 5,000 entries."""
    events = list(run_events(project, run_id).filter(_run_actions())[:MAX_DECISIONS])
    if not events:
        return None
    approval_ids: set[str] = set()
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        for value in data.get("approval_request_ids") or []:
            approval_ids.add(str(value))
    if approval_ids:
        approvals = AuditEvent.objects.filter(
            project=project, object_type=APPROVAL_OBJECT_TYPE, object_id__in=approval_ids
        )
        seen = {e.sequence for e in events}
        events += [e for e in approvals if e.sequence not in seen]
        events.sort(key=lambda e: e.sequence)
    return DecisionLog(run_id=run_id, decisions=[decision_from_event(e) for e in events])


def _run_actions() -> Q:
    condition = Q()
    for action in RUN_ACTIONS:
        if action.endswith("."):
            condition |= Q(action__startswith=action)
        else:
            condition |= Q(action=action)
    return condition
