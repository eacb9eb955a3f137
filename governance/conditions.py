"""CEL conditions for tool grants: compile with clear errors, evaluate ordered rules, fail closed.

Library: ``common-expression-language`` (import name ``cel``). A condition sees these
variables (all maps unless said otherwise):

- ``args``: the tool call's arguments, as validated against the tool's input schema
- ``agent``: ``{"slug", "version"}`` of the calling agent version
- ``run``: ``{"id", "trace_id", "tool_calls"}`` of the current run (counts are ints)
- ``project``: ``{"slug"}``
- ``user``: ``{"username", "role"}`` of the user the run acts for ("" when none)
- ``now``: the current time as an RFC 3339 string in UTC (compare with ``timestamp(now)``)
- ``usage``: ``{"cost_usd", "tokens"}`` spent so far in the run (cost as a decimal string)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel

CONDITION_VARIABLES = ("args", "agent", "run", "project", "user", "now", "usage")
EFFECTS = ("allow", "require_approval", "deny")
_POSITION_RE = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_MACRO_BINDING_RE = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)
MAX_EXPRESSION_LENGTH = 2000


class ConditionError(ValueError):
    """A condition that does not compile or names unknown variables.

    ``message`` is the CEL error text; ``line`` and ``column`` (1-based) locate it in
    the expression when CEL reports a position.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def compile_condition(expression: str) -> cel.Program:
    """Compile ``expression``; raise ``ConditionError`` with position for syntax errors,
    and for variables outside ``CONDITION_VARIABLES`` (comprehension variables allowed)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConditionError("A condition must be a non-empty CEL expression.")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ConditionError(f"A condition may be at most {MAX_EXPRESSION_LENGTH} characters.")
    try:
        program = cel.compile(expression)
    except ValueError as exc:
        text = str(exc)
        match = _POSITION_RE.search(text)
        if match:
            line, column, detail = int(match.group(1)), int(match.group(2)), match.group(3)
            raise ConditionError(
                f"CEL syntax error at line {line}, column {column}: {detail.strip()}",
                line=line,
                column=column,
            ) from exc
        raise ConditionError(f"CEL error: {text}") from exc
    bound = set(_MACRO_BINDING_RE.findall(expression))
    unknown = sorted(set(program.variables()) - set(CONDITION_VARIABLES) - bound)
    if unknown:
        raise ConditionError(
            f"Unknown variable(s) {', '.join(unknown)}; a condition may use "
            f"{', '.join(CONDITION_VARIABLES)}."
        )
    return program


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """The outcome of a grant's rules: ``effect`` is allow / require_approval / deny;
    ``rule_index`` is the 0-based index of the rule that decided (None: the default);
    ``reason`` says why, including any evaluation error (which denies)."""

    effect: str
    rule_index: int | None
    reason: str


def variables_used(programs: Sequence[cel.Program]) -> frozenset[str]:
    """The condition variables any of ``programs`` reads."""
    names = set().union(*(program.variables() for program in programs)) if programs else set()
    return frozenset(names & set(CONDITION_VARIABLES))


def evaluate_rules(
    rules: Sequence[Mapping[str, Any]],
    *,
    default_effect: str,
    variables: Mapping[str, Any],
    programs: Sequence[cel.Program] | None = None,
    used: frozenset[str] | None = None,
) -> RuleDecision:
    """Evaluate ordered ``rules`` (``[{"when": CEL, "then": effect}, ...]``): the first rule
    whose condition is true decides; none true -> ``default_effect``.

    ``programs`` are the rules' compiled conditions, in order, when the caller caches
    them (``governance.engine`` does, per grant), and ``used`` the variables they read
    (``variables_used``); otherwise each is compiled here.
    Fails closed: a condition that fails to compile or raises, or yields a non-boolean,
    decides ``deny`` with the error as the reason.
    """
    if programs is not None:
        # One CEL context holding only the variables the rules use: converting values to
        # CEL is most of an evaluation's cost, and a Context converts them once for all
        # the rules instead of once per rule.
        if used is None:
            used = variables_used(programs)
        try:
            context = cel.Context(
                {name: variables.get(name) for name in CONDITION_VARIABLES if name in used}
            )
        except Exception as exc:  # noqa: BLE001 - an unconvertible value denies
            return RuleDecision("deny", None, f"the rule variables could not be converted: {exc}")
    else:
        context = {name: variables.get(name) for name in CONDITION_VARIABLES}
    for index, rule in enumerate(rules):
        expression = rule.get("when", "")
        try:
            program = programs[index] if programs is not None else compile_condition(expression)
            result = program.execute(context)
        except Exception as exc:  # noqa: BLE001 - any failure denies; the reason is kept
            return RuleDecision("deny", index, f"rule {index + 1} could not be evaluated: {exc}")
        if not isinstance(result, bool):
            return RuleDecision(
                "deny", index, f"rule {index + 1} yielded {type(result).__name__}, not a boolean"
            )
        if result:
            return RuleDecision(rule["then"], index, f"rule {index + 1} matched: {expression}")
    return RuleDecision(default_effect, None, "no rule matched; the grant's effect applies")
