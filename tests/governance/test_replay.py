"""The policy side of the replay on plain data: simulated counters, recorded breaker states,
and the engine's dry run reading counters from the simulation instead of the database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from governance.engine import (
    Decision,
    GrantSpec,
    PolicySnapshot,
    ToolCallRequest,
    ToolSpec,
    decide_tool_call,
)
from governance.models import UsageCounter
from governance.policy import parse_policy_text
from governance.replay import (
    RecordedToolCall,
    ReplayReport,
    SimulatedCounters,
    ToolSide,
    effect_change,
    redecide_tool_call,
)

pytestmark = pytest.mark.django_db

TOOL = ToolSpec(id=7, name="send", input_schema={"type": "object"})
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def call(rule="grant.effect", effect="allow", run_id="r1", **args) -> RecordedToolCall:
    return RecordedToolCall(
        project_id=1,
        occurred_at=AT,
        tool=TOOL,
        arguments=args,
        agent={"slug": "a", "version": 1},
        run={"id": run_id, "trace_id": "", "tool_calls": 1},
        project={"slug": "p"},
        user={"username": "u", "role": "admin"},
        usage={"cost_usd": "0", "tokens": 0},
        recorded_effect=effect,
        recorded_rule=rule,
        ref={"tool": "send"},
    )


def policy(text: str = "") -> PolicySnapshot:
    return PolicySnapshot(version_id=None, label="draft", document=parse_policy_text(text).document)


def test_simulated_counters_enforce_per_run_caps_without_touching_the_database():
    side = ToolSide(grant=GrantSpec(id=-1, effect="allow", max_calls_per_run=1), policy=policy())
    counters = SimulatedCounters()
    first = redecide_tool_call(call(), side, counters)
    second = redecide_tool_call(call(), side, counters)
    other_run = redecide_tool_call(call(run_id="r2"), side, counters)
    assert (first.effect, second.rule, other_run.effect) == (
        "allow",
        "grant.max_calls_per_run",
        "allow",
    )
    assert not UsageCounter.objects.exists()


def test_the_policy_cap_counts_approval_calls_too():
    side = ToolSide(
        grant=GrantSpec(id=-2, effect="require_approval"),
        policy=policy("caps:\n  max_tool_calls_per_run: 1\n"),
    )
    counters = SimulatedCounters()
    assert redecide_tool_call(call(), side, counters).effect == "require_approval"
    assert redecide_tool_call(call(), side, counters).rule == "caps.max_tool_calls_per_run"


def test_a_call_the_breaker_refused_stays_refused_under_any_draft():
    side = ToolSide(grant=GrantSpec(id=-3, effect="allow"), policy=policy())
    decision = redecide_tool_call(
        call(rule="breaker.open", effect="deny"), side, SimulatedCounters()
    )
    assert (decision.effect, decision.rule) == ("deny", "breaker.open")


def test_the_report_compares_baseline_and_draft():
    report = ReplayReport()
    loose = ToolSide(grant=GrantSpec(id=-4, effect="allow"), policy=policy())
    strict = ToolSide(
        grant=GrantSpec(id=-5, effect="allow", rules=({"when": "args.n > 1", "then": "deny"},)),
        policy=policy(),
    )
    report.add_tool_call(call(n=5), loose, strict)
    report.add_tool_call(call(n=0), loose, strict)
    data = report.as_data()
    assert data["summary"]["tool_calls"] == 2 and data["summary"]["newly_denied"] == 1
    [change] = data["changes"]
    assert change["after"]["rule"] == "grant.rule.1" and change["changes"] == ["newly_denied"]


def test_effect_changes_are_named_by_the_drafts_effect():
    assert effect_change("allow", "deny") == "newly_denied"
    assert effect_change("deny", "require_approval") == "newly_requiring_approval"
    assert effect_change("require_approval", "allow") == "newly_allowed"
    assert effect_change("allow", "allow") is None


def test_simulated_counts_are_for_dry_runs_only():
    request = ToolCallRequest(
        project_id=1, tool=TOOL, grant=GrantSpec(id=-6, effect="allow"), arguments={}
    )
    with pytest.raises(ValueError):
        decide_tool_call(request, counts=lambda key, window: 0)
    assert isinstance(decide_tool_call(request, dry_run=True, counts=lambda k, w: 0), Decision)
