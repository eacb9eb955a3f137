"""The registry's JSON documents as pydantic schemas: the agent version config, price overrides.

One shape everywhere: ``agent_version_create`` takes the config, ``version_snapshot``
returns it, ``agents_export`` writes it and ``agents_apply`` reads it, and diffs compare it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import pydantic
import pydantic_core
from django.core.exceptions import ValidationError

from governance.conditions import ConditionError, compile_condition

Effect = Literal["allow", "require_approval", "deny"]
RoleName = Literal["viewer", "operator", "approver", "admin"]


def decimal_text(value: Decimal) -> str:
    """A decimal as plain text, no exponent, no trailing zeros: ``Decimal("0.010000")`` -> ``"0.01"``."""
    return format(value.normalize(), "f")


# USD amounts: parsed from decimal strings or numbers (not NaN or infinite), written back as
# strings so JSON and YAML never turn a price into a binary float.
DecimalText = Annotated[Decimal, pydantic.PlainSerializer(decimal_text, return_type=str)]


class PriceOverride(pydantic.BaseModel):
    """One model's price in ``ModelEndpoint.price_overrides``: USD per million tokens, both
    required, each a decimal string or number >= 0 (``{"input_per_mtok": "2.50",
    "output_per_mtok": "10"}``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    input_per_mtok: DecimalText = pydantic.Field(ge=0)
    output_per_mtok: DecimalText = pydantic.Field(ge=0)
    # Optional, as in governance.pricing.OVERRIDE_KEYS: cached prompt tokens are priced at
    # the input rate when absent.
    cache_read_per_mtok: DecimalText | None = pydantic.Field(default=None, ge=0)
    cache_write_per_mtok: DecimalText | None = pydantic.Field(default=None, ge=0)

    @pydantic.model_serializer(mode="wrap")
    def _without_unset_rates(self, handler):
        # Stored, exported and diffed without the optional rates that are not set.
        return {key: value for key, value in handler(self).items() if value is not None}


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True)


class GrantRule(_Strict):
    """One grant rule: when the CEL condition ``when`` is true, ``then`` is the effect;
    ``quorum`` (require_approval only) overrides the grant's ``approval_quorum`` for the
    calls this rule decides (``refund above $500: two approvers``).

    The condition is compiled as the config is validated, so its errors (syntax, with line
    and column; unknown variables) come back with every other error of the config, each at
    its path: ``grants.0.rules.1.when``."""

    when: str = pydantic.Field(min_length=1, max_length=2000)
    then: Effect
    quorum: int | None = pydantic.Field(default=None, ge=1, le=10)

    @pydantic.model_validator(mode="after")
    def _quorum_only_for_approval(self) -> GrantRule:
        if self.quorum is not None and self.then != "require_approval":
            raise ValueError("quorum applies only to a require_approval rule")
        return self

    @pydantic.model_serializer(mode="wrap")
    def _without_unset_quorum(self, handler):
        # Stored, exported and diffed as {when, then} unless the rule sets a quorum.
        data = handler(self)
        if data.get("quorum") is None:
            data.pop("quorum", None)
        return data

    @pydantic.field_validator("when")
    @classmethod
    def _compiles(cls, when: str) -> str:
        try:
            compile_condition(when)
        except ConditionError as exc:
            # A custom error: pydantic would prefix a ValueError's text with "Value error, ".
            raise pydantic_core.PydanticCustomError(
                "cel_condition", "{message}", {"message": exc.message}
            ) from exc
        return when


class GrantConfig(_Strict):
    """One tool grant; see ``agents.models.ToolGrant`` for the meaning of each field."""

    tool: str = pydantic.Field(min_length=1, max_length=64)
    effect: Effect = "allow"
    rules: list[GrantRule] = []
    rate_limit_calls: int | None = pydantic.Field(default=None, ge=1)
    rate_limit_window_seconds: int | None = pydantic.Field(default=None, ge=1)
    max_calls_per_run: int | None = pydantic.Field(default=None, ge=1)
    approver_role: RoleName = "approver"
    approval_quorum: int = pydantic.Field(default=1, ge=1, le=10)


class AgentVersionConfig(_Strict):
    """Everything an agent version holds. ``temperature`` is 0-2 or null (provider default);
    ``max_output_tokens`` bounds each model response (and the budget reservation).
    ``policy`` is the slug of a project policy (null: the project's ``default``);
    ``budget`` the name of an agent-scope budget of the project (null: none)."""

    model_endpoint: str = pydantic.Field(min_length=1, max_length=50)
    model_name: str = pydantic.Field(min_length=1, max_length=200)
    instructions: str = pydantic.Field(min_length=1)
    temperature: float | None = pydantic.Field(default=None, ge=0, le=2)
    max_output_tokens: int = pydantic.Field(default=1024, ge=1, le=1_000_000)
    max_tool_calls_per_turn: int = pydantic.Field(default=10, ge=0, le=1000)
    delegates: list[str] = []
    grants: list[GrantConfig] = []
    policy: str | None = pydantic.Field(default=None, min_length=1, max_length=50)
    budget: str | None = pydantic.Field(default=None, min_length=1, max_length=100)

    @pydantic.field_validator("grants")
    @classmethod
    def _one_grant_per_tool(cls, grants: list[GrantConfig]) -> list[GrantConfig]:
        seen: set[str] = set()
        for grant in grants:
            if grant.tool in seen:
                raise ValueError(f"tool {grant.tool!r} is granted twice")
            seen.add(grant.tool)
        return grants

    @pydantic.field_validator("delegates")
    @classmethod
    def _unique_delegates(cls, delegates: list[str]) -> list[str]:
        if len(set(delegates)) != len(delegates):
            raise ValueError("an agent is listed twice")
        return sorted(delegates)


def error_path(loc: tuple[Any, ...]) -> str:
    """pydantic's location tuple as a dotted field path: ``grants.0.rules.1.when``."""
    return ".".join(str(part) for part in loc) or "non_field_errors"


def parse_config(data: Any) -> AgentVersionConfig:
    """Validate ``data`` as an ``AgentVersionConfig``.

    Raises ``django.core.exceptions.ValidationError`` keyed by field path, so the API
    answers 400 ``{"grants.0.effect": ["..."]}`` and forms show errors in place.
    """
    try:
        return AgentVersionConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            errors.setdefault(error_path(error["loc"]), []).append(error["msg"])
        raise ValidationError(errors) from exc


# --- The scripted model ----------------------------------------------------------------------


class ScriptedToolCall(_Strict):
    """One tool call the scripted model proposes: the tool's name and its arguments."""

    name: str = pydantic.Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = {}


class ScriptedResponse(_Strict):
    """One model response: either ``tool_calls`` (one or more, proposed together) or the
    final ``text`` of the turn, not both."""

    tool_calls: list[ScriptedToolCall] = []
    text: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ScriptedResponse:
        if bool(self.tool_calls) == (self.text is not None):
            raise ValueError("give either tool_calls (at least one) or text")
        return self


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise pydantic_core.PydanticCustomError(
            "regex", "not a valid regular expression: {message}", {"message": str(exc)}
        ) from exc
    return value


Regex = Annotated[
    str, pydantic.Field(min_length=1, max_length=500), pydantic.AfterValidator(_check_regex)
]


class ScriptedBranch(_Strict):
    """Responses used instead of the script's ``responses`` when the latest user input
    contains ``input_contains`` (case-insensitive) or matches the regular expression
    ``input_matches`` (Python ``re.search``, case-insensitive); give one of the two."""

    input_contains: str | None = pydantic.Field(default=None, min_length=1, max_length=500)
    input_matches: Regex | None = None
    responses: list[ScriptedResponse] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _one_condition(self) -> ScriptedBranch:
        if (self.input_contains is None) == (self.input_matches is None):
            raise ValueError("give either input_contains or input_matches")
        return self


class ScriptedModelScript(_Strict):
    """What a ``scripted`` model endpoint answers (``ModelEndpoint.script``).

    The n-th model request after the latest user input gets ``responses[n]`` of the first
    branch whose ``input_contains`` the input contains, else of ``responses``; past the
    end (or with an empty script), the last response that is text, else a fixed
    "script exhausted" text::

        {"responses": [
            {"tool_calls": [{"name": "lookup", "arguments": {"id": 7}}]},
            {"text": "Order 7 has shipped."}],
         "branches": [{"input_contains": "refund",
                       "responses": [{"text": "Refunds go through a person."}]}]}

    ``captures`` name regular expressions searched (case-insensitive) in the latest input;
    ``${name}`` in a response's text or in a tool call's string arguments is replaced by
    the capture's first group (the whole match when it has no group), so a script can
    take a refund amount from the message::

        {"captures": {"amount": "\\$([0-9]+(?:\\.[0-9]{2})?)"},
         "branches": [{"input_matches": "\\$[0-9]",
                       "responses": [{"tool_calls": [{"name": "issue_refund",
                                      "arguments": {"amount_usd": "${amount}"}}]}]}]}

    A ``${name}`` whose capture did not match fails the model request (the turn fails).
    """

    responses: list[ScriptedResponse] = []
    branches: list[ScriptedBranch] = []
    captures: dict[
        Annotated[str, pydantic.StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,39}$")], Regex
    ] = {}


def parse_script(data: Any) -> ScriptedModelScript:
    """Validate ``data`` as a ``ScriptedModelScript``. Raises
    ``django.core.exceptions.ValidationError`` under ``script`` with one message per
    problem, each starting with its path (``responses.1.tool_calls.0.name: ...``)."""
    try:
        return ScriptedModelScript.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            {"script": [f"{error_path(e['loc'])}: {e['msg']}" for e in exc.errors()]}
        ) from exc
