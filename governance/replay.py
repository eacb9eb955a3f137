"""Policy replay, the policy side: re-decide recorded calls under a draft, with no side
effects, and say what would have changed.

The caller (``agents.replay``, which knows agent versions and turns) turns each recorded
call into plain data (``RecordedToolCall``, ``RecordedModelCall``) and gives, per call,
the two sides to compare: the *baseline* (the grant and policy version that decided it)
and the *draft*. Both sides are decided here the same way, so a difference is the
draft's doing and not an artefact of what the record lacks:

- tool calls: ``governance.engine.decide_tool_call(dry_run=True)`` with simulated
  counters (``SimulatedCounters``: per-run caps and rate-limit windows counted from the
  calls replayed so far, starting at zero at the range's start) and without circuit
  breakers (a breaker that was open is a recorded fact: the call stays denied
  ``breaker.open`` on both sides); then the PII action on the arguments (``tool_input``)
  for calls that are not denied;
- model calls: the policy's ``allowed_model_endpoints``, the PII actions on the request
  (``model_input``) and the response (``model_output``) as stored, and the budget check of
  the worst case (prompt tokens as estimated at the time + the side's max output tokens)
  against the spend the cost ledger shows before the call in the budget's period.

Nothing is written: no counters, no breakers, no audit events, no reservations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum

from governance.engine import (
    ALLOW,
    DENY,
    REQUIRE_APPROVAL,
    Decision,
    GrantSpec,
    PolicySnapshot,
    ToolCallRequest,
    ToolSpec,
    counter_windows,
    decide_tool_call,
)
from governance.models import Budget, BudgetScope, CostEntry

MAX_CHANGES = 2000  # changes listed in a report; the summary counts all of them

CHANGE_KINDS = (
    "newly_denied",
    "newly_requiring_approval",
    "newly_allowed",
    "pii_changed",
    "budget_hit",
    "budget_cleared",
)


# --- recorded calls -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedToolCall:
    """A tool call as recorded: the arguments as the model proposed them (after the
    ``model_output`` PII scan, i.e. as they were decided), the CEL variables of the time
    (``agent``, ``run`` with ``tool_calls`` so far, ``project``, ``user`` with the role
    now, ``usage`` of the turn so far), the recorded decision and ``ref`` (ids for the
    report: turn, tool call id, agent, version, tool)."""

    project_id: int
    occurred_at: datetime
    tool: ToolSpec
    arguments: Any
    agent: Mapping[str, Any]
    run: Mapping[str, Any]
    project: Mapping[str, Any]
    user: Mapping[str, Any]
    usage: Mapping[str, Any]
    recorded_effect: str
    recorded_rule: str
    ref: Mapping[str, Any]


@dataclass(frozen=True)
class ToolSide:
    """One side of a tool call comparison: the grant (``None``: not granted) and policy."""

    grant: GrantSpec | None
    policy: PolicySnapshot


@dataclass(frozen=True)
class RecordedModelCall:
    """A model call as recorded: what was sent (``request_texts``: the new prompt parts of
    that request, as stored with the turn) and received (``response_data``: text and tool
    call arguments), the prompt tokens estimated at the time, the user the turn ran for
    (``user_id``), and ``ref`` for the report (turn, call id, agent, version)."""

    project_id: int
    occurred_at: datetime
    request_texts: tuple[str, ...]
    response_data: Any
    prompt_tokens: int
    user_id: int | None
    recorded_cost_usd: Decimal
    ref: Mapping[str, Any]


@dataclass(frozen=True)
class ModelSide:
    """One side of a model call comparison: the policy, the endpoint's name, the version's
    ``max_output_tokens``, the budgets that apply, and ``price`` (prompt tokens, max output
    tokens) -> worst-case USD (raises when the model has no price)."""

    policy: PolicySnapshot
    endpoint: str
    max_output_tokens: int
    budgets: tuple[Budget, ...]
    price: Callable[[int, int], Decimal]


# --- the simulation -------------------------------------------------------------------------


@dataclass
class SimulatedCounters:
    """In-memory stand-ins for ``UsageCounter`` rows: ``(key, window_start) -> count``."""

    counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def read(self, key: str, window_start: int) -> int:
        return self.counts.get((key, window_start), 0)

    def take(self, request: ToolCallRequest, now: datetime) -> None:
        for window in counter_windows(request, now):
            self.counts[window] = self.counts.get(window, 0) + 1


def redecide_tool_call(
    call: RecordedToolCall, side: ToolSide, counters: SimulatedCounters
) -> Decision:
    """Decide ``call`` again under ``side`` (a dry run on ``counters``; see the module
    docstring); an allowed or approval-requiring call takes its simulated counters."""
    request = ToolCallRequest(
        project_id=call.project_id,
        tool=call.tool,
        grant=side.grant,
        arguments=call.arguments,
        policy=side.policy,
        agent=call.agent,
        run=call.run,
        project=call.project,
        user=call.user,
        usage=call.usage,
        now=call.occurred_at,
    )
    decision = decide_tool_call(request, dry_run=True, counts=counters.read, breakers=False)
    if call.recorded_rule == "breaker.open" and decision.effect != DENY:
        decision = Decision(
            effect=DENY,
            rule="breaker.open",
            policy_version_id=side.policy.version_id,
            policy_label=side.policy.label,
            messages=("the tool's circuit breaker was open at the time (recorded)",),
            grant_id=side.grant.id if side.grant else None,
        )
    if decision.effect in (ALLOW, REQUIRE_APPROVAL):
        counters.take(request, call.occurred_at)
    return decision


def pii_action(value: Any, direction: str, policy: PolicySnapshot) -> str:
    """The action the policy's PII rules take on ``value`` (a text or JSON-like data) in
    ``direction``: ``allow`` (nothing found), ``redact`` ... ``block``; a failed scan is
    ``block`` (fail closed), as on the live path."""
    from governance.pii import scan, scan_data

    rules = policy.document.pii_policy
    result = (
        scan(value, direction, rules)
        if isinstance(value, str)
        else scan_data(value, direction, rules)
    )
    return "block" if result.error else result.action


def _strongest(actions) -> str:
    from governance.pii import strongest_action

    return strongest_action(actions)


def budget_spent_before(budget: Budget, at: datetime) -> Decimal:
    """USD the cost ledger charged to ``budget``'s scope in its period before ``at``:
    every entry of the project (scope project), the user's (scope user), or those of agent
    versions naming the budget (scope agent)."""
    from governance.budgets import period_bounds, period_start_for

    zone = budget.project.zone
    begins, _ = period_bounds(
        budget.period, period_start_for(budget.period, at=at, zone=zone), zone
    )
    entries = CostEntry.objects.filter(project_id=budget.project_id, occurred_at__lt=at)
    if begins is not None:
        entries = entries.filter(occurred_at__gte=begins)
    if budget.scope == BudgetScope.USER:
        entries = entries.filter(user_id=budget.user_id)
    elif budget.scope == BudgetScope.AGENT:
        entries = entries.filter(Q(agent_version__budget=budget))
    return entries.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def _budget_outcome(call: RecordedModelCall, side: ModelSide, spent: dict) -> dict[str, Any]:
    """``{"denied": [hard budgets over], "over": [soft budgets over], "error": str|None}``."""
    try:
        worst = side.price(call.prompt_tokens, side.max_output_tokens)
    except Exception as exc:  # noqa: BLE001 - no price, no call (as on the live path)
        return {"denied": [], "over": [], "error": f"unpriced ({type(exc).__name__})"}
    denied, over = [], []
    for budget in side.budgets:
        key = (budget.pk, call.occurred_at)
        if key not in spent:
            spent[key] = budget_spent_before(budget, call.occurred_at)
        if spent[key] + worst > budget.limit_usd:
            (denied if budget.hard else over).append(budget.name)
    return {"denied": sorted(denied), "over": sorted(over), "error": None}


# --- the report -----------------------------------------------------------------------------


def effect_change(before: str, after: str) -> str | None:
    """The change kind when the effect differs: by the draft's effect."""
    if before == after:
        return None
    return {
        DENY: "newly_denied",
        REQUIRE_APPROVAL: "newly_requiring_approval",
        ALLOW: "newly_allowed",
    }[after]


@dataclass
class ReplayReport:
    """What a replay found: counts per change kind, the changed calls (at most
    ``MAX_CHANGES``), calls whose baseline re-decision differs from the recorded decision
    (``baseline_mismatches``: what the record cannot reproduce, e.g. counters taken before
    the range) and calls that could not be replayed (``skipped`` with reasons)."""

    tool_calls: int = 0
    model_calls: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    changed_calls: int = 0
    baseline_mismatches: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)
    tool_counters: tuple[SimulatedCounters, SimulatedCounters] = field(
        default_factory=lambda: (SimulatedCounters(), SimulatedCounters())
    )
    _spent: dict = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _record(self, kinds: list[str], entry: dict[str, Any]) -> None:
        if not kinds:
            return
        self.changed_calls += 1
        for kind in kinds:
            self.counts[kind] += 1
        if len(self.changes) < MAX_CHANGES:
            self.changes.append({**entry, "changes": kinds})

    def add_tool_call(self, call: RecordedToolCall, baseline: ToolSide, draft: ToolSide) -> None:
        """Re-decide ``call`` on both sides and record what differs."""
        self.tool_calls += 1
        before = redecide_tool_call(call, baseline, self.tool_counters[0])
        after = redecide_tool_call(call, draft, self.tool_counters[1])
        if (before.effect, before.rule) != (call.recorded_effect, call.recorded_rule):
            self.baseline_mismatches += 1
        pii_before = (
            pii_action(call.arguments, "tool_input", baseline.policy)
            if (before.effect != DENY)
            else None
        )
        pii_after = (
            pii_action(call.arguments, "tool_input", draft.policy)
            if (after.effect != DENY)
            else None
        )
        kinds = []
        change = effect_change(before.effect, after.effect)
        if change:
            kinds.append(change)
        if pii_before is not None and pii_after is not None and pii_before != pii_after:
            kinds.append("pii_changed")
        self._record(
            kinds,
            {
                "kind": "tool_call",
                "at": call.occurred_at.isoformat(),
                **call.ref,
                "recorded": {"effect": call.recorded_effect, "rule": call.recorded_rule},
                "before": {"effect": before.effect, "rule": before.rule, "pii": pii_before},
                "after": {
                    "effect": after.effect,
                    "rule": after.rule,
                    "pii": pii_after,
                    "messages": list(after.messages),
                },
            },
        )

    def _model_side(self, call: RecordedModelCall, side: ModelSide) -> dict[str, Any]:
        if not side.policy.document.allows_model_endpoint(side.endpoint):
            return {"effect": DENY, "rule": "model.endpoint_not_allowed", "budgets": []}
        pii_in = _strongest(pii_action(t, "model_input", side.policy) for t in call.request_texts)
        if pii_in == "block":
            return {"effect": DENY, "rule": "pii.model_input", "pii_in": pii_in, "budgets": []}
        budget = _budget_outcome(call, side, self._spent)
        if budget["error"]:
            return {"effect": DENY, "rule": "budget.unpriced", "pii_in": pii_in, "budgets": []}
        hit = sorted({*budget["denied"], *budget["over"]})
        if budget["denied"]:
            return {"effect": DENY, "rule": "budget.exceeded", "pii_in": pii_in, "budgets": hit}
        pii_out = pii_action(call.response_data, "model_output", side.policy)
        effect, rule = ALLOW, "model.call"
        if pii_out == "block":
            effect, rule = DENY, "pii.model_output"
        return {
            "effect": effect,
            "rule": rule,
            "pii_in": pii_in,
            "pii_out": pii_out,
            "budgets": hit,
        }

    def add_model_call(self, call: RecordedModelCall, baseline: ModelSide, draft: ModelSide):
        """Check ``call`` on both sides: endpoint, PII in, budgets (``budgets`` lists the
        hard budgets it would exceed and the soft ones it would take over), PII out."""
        self.model_calls += 1
        before = self._model_side(call, baseline)
        after = self._model_side(call, draft)
        if before["effect"] != ALLOW:
            self.baseline_mismatches += 1
        kinds = []
        change = effect_change(before["effect"], after["effect"])
        if change:
            kinds.append(change)
        if set(after["budgets"]) - set(before["budgets"]):
            kinds.append("budget_hit")
        if set(before["budgets"]) - set(after["budgets"]):
            kinds.append("budget_cleared")
        for key in ("pii_in", "pii_out"):
            if key in before and key in after and before[key] != after[key]:
                kinds.append("pii_changed")
                break
        self._record(
            kinds,
            {
                "kind": "model_call",
                "at": call.occurred_at.isoformat(),
                **call.ref,
                "recorded": {"effect": ALLOW, "rule": "model.call"},
                "before": before,
                "after": after,
            },
        )

    def as_data(self) -> dict[str, Any]:
        """The JSON stored with the replay job and shown by the API and the page."""
        return {
            "summary": {
                "tool_calls": self.tool_calls,
                "model_calls": self.model_calls,
                "changed_calls": self.changed_calls,
                **self.counts,
                "baseline_mismatches": self.baseline_mismatches,
                "skipped": dict(sorted(self.skipped.items())),
            },
            "changes": self.changes,
            "changes_truncated": self.changed_calls > len(self.changes),
            "limitations": self.limitations,
        }
