"""The ``pii`` section of a project policy: per direction, per entity type, an action and a threshold.

Shape (YAML)::

    pii:
      model_input:                       # one of PII_DIRECTIONS
        US_SSN: {action: block}          # entity type -> rule
        EMAIL_ADDRESS: {action: redact, threshold: 0.6}
      audit:
        PERSON: {action: mask}

An entity type not listed for a direction is not acted on there. This module has no
Presidio import, so parsing a policy does not load the scanner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PII_DIRECTIONS = ("model_input", "model_output", "tool_input", "tool_output", "audit")

# Strongest last: a scan's action is the strongest action among its findings.
PII_ACTIONS = ("allow", "redact", "mask", "hash", "block")
ACTION_RANK = {action: rank for rank, action in enumerate(PII_ACTIONS)}

# Ours (governance.pii.recognizers): credentials that must never reach a model or a tool.
SECRET_ENTITY_TYPES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "GITHUB_TOKEN",
    "PRIVATE_KEY",
    "BEARER_TOKEN",
)

# Presidio 2.2.366's default English recognizers (ORGANIZATION is left out, as in
# Presidio's own default NLP configuration: spaCy's ORG label has many false positives).
# UK_NHS is detected only with the PII_ENABLE_UK_NHS setting on.
PRESIDIO_ENTITY_TYPES = (
    "CREDIT_CARD",
    "CRYPTO",
    "DATE_TIME",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "MAC_ADDRESS",
    "MEDICAL_LICENSE",
    "NRP",
    "PERSON",
    "PHONE_NUMBER",
    "UK_NHS",
    "URL",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "US_SSN",
    "UUID",
)

SUPPORTED_ENTITY_TYPES = PRESIDIO_ENTITY_TYPES + SECRET_ENTITY_TYPES

# Entity types found by spaCy's named-entity recognizer: only these need the NER pass.
NER_ENTITY_TYPES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME"})

Direction = Literal["model_input", "model_output", "tool_input", "tool_output", "audit"]
Action = Literal["allow", "redact", "mask", "hash", "block"]
EntityType = Literal[SUPPORTED_ENTITY_TYPES]  # type: ignore[valid-type]

DEFAULT_THRESHOLD = 0.5


class PiiRule(BaseModel):
    """What to do with one entity type in one direction.

    ``action``: ``allow`` (report only), ``redact`` (replace with ``<ENTITY_TYPE>``),
    ``mask`` (every character replaced by ``*``), ``hash`` (salted SHA-256 hex digest),
    ``block`` (refuse the whole text). ``threshold``: the minimum detection score
    (0..1) for a finding to count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)


DirectionRules = dict[EntityType, PiiRule]  # type: ignore[valid-type]


class PiiPolicy(BaseModel):
    """The ``pii`` section of a policy: one mapping entity type -> ``PiiRule`` per direction.

    Validation errors name the path (``model_input.FOO.[key]`` for an unknown entity
    type, ``audit.PERSON.action`` for an unknown action, an unknown direction as an extra
    input).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="PiiPolicy")

    model_input: DirectionRules = Field(default_factory=dict)
    model_output: DirectionRules = Field(default_factory=dict)
    tool_input: DirectionRules = Field(default_factory=dict)
    tool_output: DirectionRules = Field(default_factory=dict)
    audit: DirectionRules = Field(default_factory=dict)

    def rules_for(self, direction: str) -> Mapping[str, PiiRule]:
        """The rules of ``direction`` (entity type -> rule); raises ``ValueError`` for a
        direction outside ``PII_DIRECTIONS``."""
        if direction not in PII_DIRECTIONS:
            raise ValueError(
                f"Unknown PII direction {direction!r}; use one of {', '.join(PII_DIRECTIONS)}."
            )
        return getattr(self, direction)


def _secrets(action: str) -> dict[str, PiiRule]:
    return {entity: PiiRule(action=action) for entity in SECRET_ENTITY_TYPES}


# For a project without a policy: secrets never go to a model or a tool, and are
# redacted from what comes back and from the audit log. Other PII is not acted on.
DEFAULT_PII_POLICY = PiiPolicy(
    model_input=_secrets("block"),
    tool_input=_secrets("block"),
    model_output=_secrets("redact"),
    tool_output=_secrets("redact"),
    audit=_secrets("redact"),
)


def pii_policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``pii`` section; ``$defs`` holds ``PiiRule``.

    Entity types are listed as ``propertyNames`` enums, so a validator names an unknown
    one; actions are an enum and thresholds are bounded 0..1.
    """
    return PiiPolicy.model_json_schema()
