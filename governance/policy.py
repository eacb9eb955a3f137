"""The project policy document: its JSON Schema, parsing with every error and its path.

A policy is YAML, for example::

    pii:                       # per direction, per entity type: action and score threshold
      model_input:
        US_SSN: {action: block}
        EMAIL_ADDRESS: {action: redact, threshold: 0.6}
      audit:
        PERSON: {action: redact}
    caps:                      # per run; omitted = no cap
      max_steps_per_run: 50
      max_tool_calls_per_run: 100
      max_agent_invocations_per_run: 20
      max_delegation_depth: 3    # supervisor -> delegate levels; omitted = 3
    allowed_model_endpoints: [openai-prod, local-llama]   # omitted = every endpoint
    default_approver_role: approver
    circuit_breaker:           # per tool
      error_rate: 0.5          # open at or above this share of failed calls...
      min_calls: 5             # ...once this many calls ended in the window
      window_seconds: 60
      cooldown_seconds: 30     # then let one probe call through (half-open)

The document is validated against ``POLICY_JSON_SCHEMA`` (generated from the pydantic
model below, so the two cannot drift) with ``jsonschema``; every error comes back at
once with its path (``caps.max_steps_per_run``). An empty document is a valid policy with
the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_DOCUMENT_BYTES = 64 * 1024
ApproverRole = Literal["operator", "approver", "admin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Caps(_Strict):
    """Per-run caps; ``None`` means no cap."""

    max_steps_per_run: int | None = Field(default=None, ge=1, le=100_000)
    max_tool_calls_per_run: int | None = Field(default=None, ge=1, le=100_000)
    max_agent_invocations_per_run: int | None = Field(default=None, ge=1, le=100_000)
    # How deep supervisor delegation may go (a delegate is one level below its caller);
    # None: the runtime's default (agents.runtime.delegation.MAX_DELEGATION_DEPTH, 3).
    max_delegation_depth: int | None = Field(default=None, ge=0, le=20)


class CircuitBreakerSettings(_Strict):
    """When a tool's breaker opens (error rate over a window) and how long it stays open.

    Defaults follow the common breaker setup (e.g. resilience4j's 50% failure-rate
    threshold); ``min_calls`` keeps one early failure from opening it.
    """

    error_rate: float = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=5, ge=1, le=10_000)
    window_seconds: int = Field(default=60, ge=1, le=86_400)
    cooldown_seconds: int = Field(default=30, ge=1, le=86_400)


class PolicyDocument(_Strict):
    """The parsed policy. ``pii`` is a ``governance.pii.PiiPolicy``; the scanner merges it
    over ``DEFAULT_PII_POLICY`` (secrets blocked toward models and tools, redacted
    elsewhere), so a policy acts on secrets unless it says otherwise per entity type."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    pii: Any = None
    caps: Caps = Caps()
    allowed_model_endpoints: list[str] | None = Field(default=None, max_length=200)
    default_approver_role: ApproverRole = "approver"
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()

    @field_validator("pii", mode="before")
    @classmethod
    def _pii(cls, value: Any) -> Any:
        # Imported here: the scanner module loads Presidio's types, which only code that
        # reads the PII rules needs.
        from governance.pii import PiiPolicy

        if value is None or isinstance(value, PiiPolicy):
            return value
        return PiiPolicy.model_validate(value)

    @cached_property
    def pii_policy(self):
        """The PII rules in force: ``DEFAULT_PII_POLICY`` with this document's rules laid
        over it per direction and entity type (so secrets stay blocked / redacted unless
        the document names them with another action)."""
        from governance.pii import DEFAULT_PII_POLICY, PiiPolicy

        if self.pii is None:
            return DEFAULT_PII_POLICY
        return PiiPolicy.model_validate(
            {
                direction: {
                    **DEFAULT_PII_POLICY.rules_for(direction),
                    **self.pii.rules_for(direction),
                }
                for direction in PiiPolicy.model_fields
            }
        )

    def allows_model_endpoint(self, name: str) -> bool:
        return self.allowed_model_endpoints is None or name in self.allowed_model_endpoints


@lru_cache(maxsize=1)
def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document (draft 2020-12), with the ``pii`` section's
    schema from ``governance.pii`` embedded."""
    from governance.pii import PiiPolicy

    schema = PolicyDocument.model_json_schema()
    pii_schema = PiiPolicy.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    definitions.update(pii_schema.pop("$defs", {}))
    definitions["PiiPolicy"] = pii_schema
    schema["properties"]["pii"] = {"anyOf": [{"$ref": "#/$defs/PiiPolicy"}, {"type": "null"}]}
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_json_schema())


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy document: ``path`` (dotted, ``""`` for the whole document)
    and ``message``."""

    path: str
    message: str


class PolicyDocumentError(ValueError):
    """The document is not a valid policy; ``issues`` lists every problem with its path."""

    def __init__(self, issues: list[PolicyIssue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.path or '(document)'}: {i.message}" for i in issues))


@dataclass(frozen=True)
class ParsedPolicy:
    """A valid policy: ``spec`` (the JSON stored with the version) and ``document``."""

    spec: dict[str, Any]
    document: PolicyDocument = field(repr=False)


def _path(parts) -> str:
    return ".".join(str(part) for part in parts)


def parse_policy_text(text: str) -> ParsedPolicy:
    """Parse and validate a YAML policy.

    Raises ``PolicyDocumentError`` listing every problem: YAML syntax (with line and
    column), a document that is not a mapping, and each JSON Schema violation with its
    path, ordered by path.
    """
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise PolicyDocumentError(
            [PolicyIssue("", f"The document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB.")]
        )
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyDocumentError(
            [PolicyIssue("", f"YAML syntax error{where}: {problem}")]
        ) from exc
    return parse_policy_data(data if data is not None else {})


def _specific(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors to report for ``error``. For an optional setting (``anyOf: [<schema>,
    null]``), every error of ``<schema>`` ("0 is less than the minimum of 1") rather than
    "not valid under any of the given schemas"."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        if sub.validator == "type" and sub.validator_value == "null":
            continue
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    if len(branches) == 1:
        return [found for sub in next(iter(branches.values())) for found in _specific(sub)]
    return [best_match(error.context)] if branches else [error]


def _disabled_entity_issues(pii: dict[str, Any]) -> list[PolicyIssue]:
    """Rules for an entity type whose recognizer this deployment turned off would never
    match: name them instead of letting the rule silently do nothing."""
    from django.conf import settings

    if getattr(settings, "PII_ENABLE_UK_NHS", False):
        return []
    return [
        PolicyIssue(
            f"pii.{direction}.UK_NHS",
            "The UK_NHS recognizer is off in this deployment (setting PII_ENABLE_UK_NHS); "
            "enable it or remove this rule.",
        )
        for direction, rules in sorted(pii.items())
        if isinstance(rules, dict) and "UK_NHS" in rules
    ]


def parse_policy_data(data: Any) -> ParsedPolicy:
    """Validate already-parsed policy data (see ``parse_policy_text``)."""
    if not isinstance(data, dict):
        raise PolicyDocumentError([PolicyIssue("", "A policy must be a mapping of sections.")])
    errors = sorted(
        (found for error in _validator().iter_errors(data) for found in _specific(error)),
        key=lambda e: (_path(e.absolute_path), e.message),
    )
    if errors:
        raise PolicyDocumentError(
            [PolicyIssue(_path(error.absolute_path), error.message) for error in errors]
        )
    disabled = _disabled_entity_issues(data.get("pii") or {})
    if disabled:
        raise PolicyDocumentError(disabled)
    document = PolicyDocument.model_validate(data)
    return ParsedPolicy(spec=document.model_dump(mode="json", exclude_none=True), document=document)


def document_from_spec(spec: dict[str, Any]) -> PolicyDocument:
    """The ``PolicyDocument`` of a stored, already validated ``spec``."""
    return PolicyDocument.model_validate(spec)


STARTER_POLICY_TEXT = """\
# A starter policy: edit and save to create version 1. Sections: pii, caps,
# allowed_model_endpoints, default_approver_role, circuit_breaker (docs/policies.md).
pii:
  model_input:
    US_SSN: {action: block}
    CREDIT_CARD: {action: block}
  audit:
    EMAIL_ADDRESS: {action: redact}
caps:
  max_steps_per_run: 50
  max_tool_calls_per_run: 100
  max_agent_invocations_per_run: 20
default_approver_role: approver
"""
