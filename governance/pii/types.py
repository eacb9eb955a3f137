"""Results of a PII scan as plain types: findings (never the raw value) and the outcome."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from governance.pii.rules import ACTION_RANK


def strongest_action(actions: Iterable[str]) -> str:
    """The strongest of ``actions`` (block > hash > mask > redact > allow); ``allow`` when
    there are none."""
    return max(actions, key=ACTION_RANK.__getitem__, default="allow")


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected entity: its type, character offsets ``[start, end)`` in the scanned
    text, the detection score (0..1) and the action the policy applies to it. The value
    itself is never kept."""

    entity_type: str
    start: int
    end: int
    score: float
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity_type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The outcome of scanning one text.

    ``action``: the strongest action among the findings (``allow`` when none).
    ``text_out``: the text with every finding transformed per its action; ``None`` when
    the action is ``block``. ``error``: set when the scan failed, in which case the
    action is ``block`` (fail closed); it names the error type, never the text.
    """

    findings: tuple[Finding, ...]
    text_out: str | None
    action: str
    error: str | None = None

    @property
    def blocked(self) -> bool:
        return self.action == "block"


@dataclass(frozen=True, slots=True)
class DataFinding:
    """A finding inside JSON-like data: ``path`` is the JSON path of the string holding it
    (``$.args.to``, ``$.items[0]``, ``$['a key']``); offsets are within that string."""

    path: str
    entity_type: str
    start: int
    end: int
    score: float
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "entity_type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class DataScanResult:
    """The outcome of scanning JSON-like data: ``value_out`` has the same shape with
    every string transformed (``None`` when blocked; the scanned value itself, not a
    copy, when nothing was found); ``findings`` from all strings, in
    traversal order; ``action`` and ``error`` as in ``ScanResult``."""

    value_out: Any
    findings: tuple[DataFinding, ...]
    action: str
    error: str | None = None

    @property
    def blocked(self) -> bool:
        return self.action == "block"
