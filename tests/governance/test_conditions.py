"""CEL grant conditions: compile errors with positions, unknown variables, ordered rules, fail closed."""

from __future__ import annotations

import pytest

from governance.conditions import (
    CONDITION_VARIABLES,
    ConditionError,
    compile_condition,
    evaluate_rules,
)

RULES = [
    {"when": "args.amount > 10000", "then": "deny"},
    {"when": "args.amount > 100", "then": "require_approval"},
    {"when": "user.role == 'admin'", "then": "allow"},
]


@pytest.mark.parametrize(
    "expression",
    [
        "args.amount > 100",
        "args.to.endsWith('@example.com') && user.role in ['approver', 'admin']",
        "args.items.all(i, i.price < 50)",
        "size(args.recipients) <= 3 || project.slug == 'sandbox'",
        "timestamp(now) < timestamp('2030-01-01T00:00:00Z')",
        "usage.tokens < 100000 && run.tool_calls < 5 && agent.version >= 2",
    ],
)
def test_valid_conditions_compile(expression):
    compile_condition(expression)


def test_a_syntax_error_is_rejected_with_its_position():
    with pytest.raises(ConditionError) as info:
        compile_condition("args.amount >\n  && true")
    assert info.value.line == 2 and info.value.column is not None
    assert "line 2" in info.value.message


@pytest.mark.parametrize("expression", ["secrets.key == 'x'", "env.HOME != ''", "os"])
def test_unknown_variables_are_rejected(expression):
    with pytest.raises(ConditionError, match="Unknown variable"):
        compile_condition(expression)


def test_comprehension_variables_are_not_unknown():
    compile_condition("args.lines.exists(line, line.total > 10)")


@pytest.mark.parametrize("expression", ["", "   ", "x" * 2001])
def test_empty_or_huge_conditions_are_rejected(expression):
    with pytest.raises(ConditionError):
        compile_condition(expression)


@pytest.mark.parametrize(
    ("amount", "role", "effect", "rule_index"),
    [
        (20000, "admin", "deny", 0),
        (500, "admin", "require_approval", 1),
        (5, "admin", "allow", 2),
        (5, "viewer", "deny", None),
    ],
)
def test_the_first_matching_rule_decides_in_order(amount, role, effect, rule_index):
    decision = evaluate_rules(
        RULES, default_effect="deny", variables={"args": {"amount": amount}, "user": {"role": role}}
    )
    assert (decision.effect, decision.rule_index) == (effect, rule_index)


def test_an_evaluation_error_denies_and_says_why():
    decision = evaluate_rules(
        [{"when": "args.amount > 100", "then": "allow"}],
        default_effect="allow",
        variables={"args": {}},
    )
    assert decision.effect == "deny" and decision.rule_index == 0
    assert "could not be evaluated" in decision.reason


def test_a_non_boolean_result_denies():
    decision = evaluate_rules(
        [{"when": "args.amount", "then": "allow"}],
        default_effect="allow",
        variables={"args": {"amount": 3}},
    )
    assert decision.effect == "deny" and "not a boolean" in decision.reason


def test_the_documented_variables_are_the_ones_accepted():
    assert CONDITION_VARIABLES == ("args", "agent", "run", "project", "user", "now", "usage")
