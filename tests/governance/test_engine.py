"""The policy engine: decision table, rule order, counters, circuit breaker, fail closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from governance import engine
from governance.engine import (
    GrantSpec,
    PolicySnapshot,
    ToolCallRequest,
    ToolSpec,
    consume_run_cap,
    counter_value,
    decide_tool_call,
    record_tool_outcome,
)
from governance.models import AuditEvent, BreakerState, CircuitBreaker, UsageCounter
from governance.policy import PolicyDocument
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
REFUND = ToolSpec(
    id=7,
    name="issue_refund",
    input_schema={
        "type": "object",
        "properties": {"amount": {"type": "number", "minimum": 0}, "note": {"type": "string"}},
        "required": ["amount"],
        "additionalProperties": False,
    },
    schema_key="v1",
)
# The demo's refund ladder: deny above 5,000; quorum-2 approval above 500; approval above 50.
LADDER = (
    {"when": "args.amount > 5000.0", "then": "deny"},
    {"when": "args.amount > 500.0", "then": "require_approval"},
    {"when": "args.amount > 50.0", "then": "require_approval"},
)


@pytest.fixture(autouse=True)
def _fresh_breaker_cache():
    engine._breaker_cache.clear()
    yield
    engine._breaker_cache.clear()


def policy(**spec) -> PolicySnapshot:
    return PolicySnapshot(
        version_id=None, label="test", document=PolicyDocument.model_validate(spec)
    )


def request(arguments, *, grant=None, tool=REFUND, run_id="run-1", pol=None, now=NOW, **extra):
    return ToolCallRequest(
        project_id=extra.pop("project_id", 1),
        tool=tool,
        grant=grant,
        arguments=arguments,
        policy=pol or PolicySnapshot.defaults(),
        agent={"slug": "refunds", "version": 1},
        run={"id": run_id, "trace_id": "t", "tool_calls": 0} if run_id else {},
        project={"slug": "acme"},
        user={"username": "alice", "role": "operator"},
        usage={"cost_usd": "0", "tokens": 0},
        now=now,
        **extra,
    )


def grant(effect="allow", rules=(), **fields) -> GrantSpec:
    return GrantSpec(id=fields.pop("id", 11), effect=effect, rules=tuple(rules), **fields)


class TestDecisionTable:
    @pytest.mark.parametrize(
        ("effect", "expected"),
        [("allow", "allow"), ("require_approval", "require_approval"), ("deny", "deny")],
    )
    def test_grant_effect_applies_when_no_rule_matches(self, effect, expected):
        decision = decide_tool_call(request({"amount": 10}, grant=grant(effect)))
        assert (decision.effect, decision.rule) == (expected, "grant.effect")
        assert decision.grant_id == 11

    @pytest.mark.parametrize(
        ("amount", "effect", "rule"),
        [
            (10, "allow", "grant.effect"),
            (50, "allow", "grant.effect"),
            (50.01, "require_approval", "grant.rule.3"),
            (500, "require_approval", "grant.rule.3"),
            (501, "require_approval", "grant.rule.2"),
            (5000, "require_approval", "grant.rule.2"),
            (5000.5, "deny", "grant.rule.1"),
        ],
    )
    def test_ordered_rules_first_true_rule_decides(self, amount, effect, rule):
        decision = decide_tool_call(request({"amount": amount}, grant=grant("allow", LADDER)))
        assert (decision.effect, decision.rule) == (effect, rule)

    def test_rule_order_matters(self):
        reversed_ladder = tuple(reversed(LADDER))
        decision = decide_tool_call(
            request({"amount": 9000}, grant=grant("allow", reversed_ladder))
        )
        # "amount > 50" now comes first and asks for approval instead of denying.
        assert (decision.effect, decision.rule) == ("require_approval", "grant.rule.1")

    def test_require_approval_carries_role_and_quorum(self):
        g = grant("allow", LADDER, approver_role="admin", approval_quorum=2)
        decision = decide_tool_call(request({"amount": 700}, grant=g))
        assert decision.effect == "require_approval"
        assert (decision.approver_role, decision.approval_quorum) == ("admin", 2)
        allowed = decide_tool_call(request({"amount": 5}, grant=g))
        assert (allowed.approver_role, allowed.approval_quorum) == (None, None)

    def test_no_grant_is_default_deny(self):
        decision = decide_tool_call(request({"amount": 1}, grant=None))
        assert (decision.effect, decision.rule) == ("deny", "grant.missing")
        assert "default deny" in decision.messages[0]

    def test_removed_tool_is_denied_even_with_a_grant(self):
        removed = ToolSpec(id=8, name="gone", input_schema={}, removed=True)
        decision = decide_tool_call(request({}, grant=grant(), tool=removed))
        assert (decision.effect, decision.rule) == ("deny", "tool.removed")

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({}, "$: 'amount' is a required property"),
            ({"amount": -1}, "$.amount: -1 is less than the minimum of 0"),
            (
                {"amount": 1, "x": 2},
                "$: Additional properties are not allowed ('x' was unexpected)",
            ),
            ("not an object", "$: 'not an object' is not of type 'object'"),
        ],
    )
    def test_arguments_must_match_the_tool_schema(self, arguments, message):
        decision = decide_tool_call(request(arguments, grant=grant()))
        assert (decision.effect, decision.rule) == ("deny", "schema")
        assert decision.messages == (message,)

    def test_cel_variables_reach_the_rules(self):
        rules = ({"when": "user.role == 'operator' && project.slug == 'acme'", "then": "deny"},)
        assert (
            decide_tool_call(request({"amount": 1}, grant=grant("allow", rules))).effect == "deny"
        )
        time_rule = (
            {"when": "timestamp(now) > timestamp('2026-11-22T12:00:00Z')", "then": "deny"},
        )
        assert (
            decide_tool_call(request({"amount": 1}, grant=grant("allow", time_rule, id=12))).effect
            == "deny"
        )
        early = NOW - timedelta(hours=1)
        assert (
            decide_tool_call(
                request({"amount": 1}, grant=grant("allow", time_rule, id=12), now=early)
            ).effect
            == "allow"
        )

    def test_decision_names_the_policy_version(self):
        pol = PolicySnapshot(version_id=42, label="default v3", document=policy().document)
        decision = decide_tool_call(request({"amount": 1}, grant=grant(), pol=pol))
        assert (decision.policy_version_id, decision.policy_label) == (42, "default v3")
        assert decision.as_data()["policy"] == "default v3"


class TestFailClosed:
    def test_a_rule_that_errors_denies(self):
        rules = ({"when": "args.note.size() > 3", "then": "allow"},)  # note is optional
        decision = decide_tool_call(request({"amount": 1}, grant=grant("allow", rules)))
        assert (decision.effect, decision.rule) == ("deny", "grant.rule.1")
        assert "could not be evaluated" in decision.messages[0]

    def test_a_non_boolean_rule_denies(self):
        rules = ({"when": "args.amount", "then": "allow"},)
        decision = decide_tool_call(request({"amount": 1}, grant=grant("allow", rules)))
        assert decision.effect == "deny"
        assert "not a boolean" in decision.messages[0]

    def test_an_engine_error_denies_and_is_audited(self, project):
        # A corrupt grant (a rule without its condition) makes the engine itself fail.
        broken = grant("allow", ({"then": "allow"},), id=99)
        decision = decide_tool_call(request({"amount": 1}, grant=broken, project_id=project.pk))
        assert (decision.effect, decision.rule) == ("deny", "policy.error")
        assert "KeyError" in decision.messages[0]
        event = AuditEvent.objects.get(action="policy.error")
        assert event.project_id == project.pk
        assert event.data["error"] == "KeyError" and event.data["effect"] == "deny"

    def test_dry_run_engine_error_denies_without_audit(self, project):
        broken = grant("allow", ({"then": "allow"},), id=98)
        decision = decide_tool_call(
            request({"amount": 1}, grant=broken, project_id=project.pk), dry_run=True
        )
        assert decision.rule == "policy.error"
        assert not AuditEvent.objects.filter(action="policy.error").exists()

    def test_cel_programs_are_cached_per_grant(self):
        engine._grant_programs.cache_clear()
        g = grant("allow", LADDER, id=500)
        for amount in (1, 60, 600):
            decide_tool_call(request({"amount": amount}, grant=g))
        info = engine._grant_programs.cache_info()
        assert (info.misses, info.hits) == (1, 2)


class TestCounters:
    def test_rate_limit_per_window(self):
        g = grant(rate_limit_calls=3, rate_limit_window_seconds=60)
        effects = [decide_tool_call(request({"amount": 1}, grant=g)).effect for _ in range(4)]
        assert effects == ["allow", "allow", "allow", "deny"]
        denied = decide_tool_call(request({"amount": 1}, grant=g))
        assert denied.rule == "grant.rate_limit"
        assert "3 calls per 60 s" in denied.messages[0]
        next_window = NOW + timedelta(seconds=60)
        assert decide_tool_call(request({"amount": 1}, grant=g, now=next_window)).effect == "allow"

    def test_max_calls_per_run(self):
        g = grant(max_calls_per_run=2)
        run1 = [decide_tool_call(request({"amount": 1}, grant=g)).rule for _ in range(3)]
        assert run1 == ["grant.effect", "grant.effect", "grant.max_calls_per_run"]
        assert decide_tool_call(request({"amount": 1}, grant=g, run_id="run-2")).effect == "allow"

    def test_no_run_means_no_per_run_caps(self):
        g = grant(max_calls_per_run=1)
        for _ in range(3):
            assert decide_tool_call(request({"amount": 1}, grant=g, run_id=None)).effect == "allow"

    def test_policy_cap_on_tool_calls_per_run(self):
        pol = policy(caps={"max_tool_calls_per_run": 2})
        other = ToolSpec(id=9, name="kb_search", input_schema={"type": "object"})
        assert decide_tool_call(request({"amount": 1}, grant=grant(), pol=pol)).allowed
        assert decide_tool_call(request({}, grant=grant(id=12), tool=other, pol=pol)).allowed
        third = decide_tool_call(request({}, grant=grant(id=12), tool=other, pol=pol))
        assert (third.effect, third.rule) == ("deny", "caps.max_tool_calls_per_run")

    def test_a_denied_call_gives_back_the_counters_it_took(self):
        pol = policy(caps={"max_tool_calls_per_run": 10})
        g = grant(max_calls_per_run=1)
        assert decide_tool_call(request({"amount": 1}, grant=g, pol=pol)).allowed
        assert decide_tool_call(request({"amount": 1}, grant=g, pol=pol)).rule == (
            "grant.max_calls_per_run"
        )
        assert counter_value("run:run-1:tool_calls") == 1
        assert counter_value("run:run-1:tool:7") == 1

    def test_denied_by_rule_takes_no_counter(self):
        g = grant("deny", max_calls_per_run=5)
        decide_tool_call(request({"amount": 1}, grant=g))
        assert not UsageCounter.objects.exists()

    def test_dry_run_reads_counters_but_changes_nothing(self):
        g = grant(max_calls_per_run=1, rate_limit_calls=5, rate_limit_window_seconds=60)
        assert decide_tool_call(request({"amount": 1}, grant=g), dry_run=True).allowed
        assert not UsageCounter.objects.exists()
        assert decide_tool_call(request({"amount": 1}, grant=g)).allowed
        snapshot = list(UsageCounter.objects.order_by("key").values_list("key", "count"))
        dry = decide_tool_call(request({"amount": 1}, grant=g), dry_run=True)
        assert (dry.effect, dry.rule) == ("deny", "grant.max_calls_per_run")
        assert list(UsageCounter.objects.order_by("key").values_list("key", "count")) == snapshot

    def test_consume_run_cap(self):
        pol = policy(caps={"max_steps_per_run": 2})
        results = [
            consume_run_cap(run_id="r", cap="max_steps_per_run", policy=pol) for _ in range(3)
        ]
        assert [r.effect for r in results] == ["allow", "allow", "deny"]
        assert counter_value("run:r:steps") == 2
        unlimited = consume_run_cap(run_id="r", cap="max_agent_invocations_per_run", policy=pol)
        assert unlimited.allowed
        unknown = consume_run_cap(run_id="r", cap="max_bogus", policy=pol)
        assert (unknown.effect, unknown.rule) == ("deny", "policy.error")


class TestCircuitBreaker:
    POL = None

    @pytest.fixture(autouse=True)
    def _policy(self):
        self.pol = policy(
            circuit_breaker={
                "error_rate": 0.5,
                "min_calls": 4,
                "window_seconds": 60,
                "cooldown_seconds": 30,
            }
        )

    def outcome(self, ok, at=NOW):
        return record_tool_outcome(
            tool_id=REFUND.id, ok=ok, policy=self.pol, label="issue_refund", now=at
        )

    def decide(self, at=NOW, dry_run=False):
        return decide_tool_call(
            request({"amount": 1}, grant=grant(), pol=self.pol, now=at), dry_run=dry_run
        )

    def test_opens_at_the_error_rate_and_denies(self, project):
        assert [self.outcome(ok) for ok in (True, False, True)] == ["closed"] * 3
        assert self.outcome(False) == "open"  # 2 of 4 failed: 50 %
        decision = self.decide()
        assert (decision.effect, decision.rule) == ("deny", "breaker.open")
        assert AuditEvent.objects.filter(action="breaker.opened").count() == 1

    def test_below_min_calls_it_stays_closed(self):
        assert [self.outcome(False) for _ in range(3)] == ["closed"] * 3
        assert self.decide().allowed

    def test_window_resets_the_counts(self):
        for ok in (False, False, True):
            self.outcome(ok)
        later = NOW + timedelta(seconds=61)
        assert self.outcome(False, at=later) == "closed"
        assert CircuitBreaker.objects.get().calls == 1

    def test_half_open_lets_one_probe_through_then_closes_on_success(self):
        for _ in range(4):
            self.outcome(False)
        after = NOW + timedelta(seconds=31)
        assert self.decide(at=after + timedelta(seconds=-2)).rule == "breaker.open"
        assert self.decide(at=after, dry_run=True).allowed  # dry run: no transition
        assert CircuitBreaker.objects.get().state == BreakerState.OPEN
        probe = self.decide(at=after)
        assert probe.allowed
        second = self.decide(at=after)
        assert (second.effect, second.rule) == ("deny", "breaker.open")
        assert "half-open" in second.messages[0]
        assert self.outcome(True, at=after) == "closed"
        assert self.decide(at=after).allowed
        assert AuditEvent.objects.filter(action="breaker.closed").count() == 1

    def test_a_failed_probe_opens_it_again(self):
        for _ in range(4):
            self.outcome(False)
        after = NOW + timedelta(seconds=31)
        assert self.decide(at=after).allowed
        assert self.outcome(False, at=after) == "open"
        assert self.decide(at=after + timedelta(seconds=29)).rule == "breaker.open"

    def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(self):
        for _ in range(4):
            self.outcome(False)
        after = NOW + timedelta(seconds=31)
        assert self.decide(at=after).allowed
        assert not self.decide(at=after + timedelta(seconds=10)).allowed
        assert self.decide(at=after + timedelta(seconds=31)).allowed


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rate_limit_and_run_caps_hold_with_20_concurrent_workers():
    """20 workers x 5 calls: exactly the limits' worth is allowed, never more."""
    g = grant(rate_limit_calls=30, rate_limit_window_seconds=3600, max_calls_per_run=1000)
    pol = policy(caps={"max_tool_calls_per_run": 45})

    def calls(i: int) -> list[str]:
        # Workers 0-9 share run A (cap 45 tool calls); 10-19 share run B.
        run = "A" if i < 10 else "B"
        return [
            decide_tool_call(request({"amount": 1}, grant=g, pol=pol, run_id=run)).rule
            for _ in range(5)
        ]

    rules = [rule for batch in run_concurrently(20, calls) for rule in batch]
    assert rules.count("grant.effect") == 30  # the rate limit is the binding constraint
    assert rules.count("grant.rate_limit") == 70
    assert counter_value("run:A:tool_calls") + counter_value("run:B:tool_calls") == 30

    g2 = grant(id=13, max_calls_per_run=7)

    def capped(i: int) -> list[str]:
        return [
            decide_tool_call(request({"amount": 1}, grant=g2, run_id="C")).rule for _ in range(3)
        ]

    rules = [rule for batch in run_concurrently(20, capped) for rule in batch]
    assert rules.count("grant.effect") == 7
    assert rules.count("grant.max_calls_per_run") == 53
    assert counter_value("run:C:tool:7") == 7
