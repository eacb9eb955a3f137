"""PII scanning with Presidio: the policy's ``pii`` rules, ``scan`` for text, ``scan_data`` for JSON.

Public API::

    scan(text, direction, policy=None) -> ScanResult(findings, text_out, action, error)
    scan_data(value, direction, policy=None) -> DataScanResult(value_out, findings, action, error)

``policy`` is a ``PiiPolicy`` (``DEFAULT_PII_POLICY`` when ``None``); ``direction`` is one
of ``PII_DIRECTIONS``. Both fail closed. The rules and result types import nothing
heavy; the scanner (Presidio, spaCy: about two seconds to import, more to load the model)
is imported on first use of ``scan``, ``scan_data``, ``get_scanner`` or ``PiiScanner``.
See ``governance/pii/engine.py`` for how it works and ``bench/pii.py`` for its speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from governance.pii.rules import (
    DEFAULT_PII_POLICY,
    NER_ENTITY_TYPES,
    PII_ACTIONS,
    PII_DIRECTIONS,
    PRESIDIO_ENTITY_TYPES,
    SECRET_ENTITY_TYPES,
    SUPPORTED_ENTITY_TYPES,
    PiiPolicy,
    PiiRule,
    pii_policy_json_schema,
)
from governance.pii.types import DataFinding, DataScanResult, Finding, ScanResult, strongest_action

if TYPE_CHECKING:
    from governance.pii.engine import PiiScanner, get_scanner, scan, scan_data

_ENGINE_NAMES = ("PiiScanner", "get_scanner", "scan", "scan_data")

__all__ = [
    "DEFAULT_PII_POLICY",
    "NER_ENTITY_TYPES",
    "PII_ACTIONS",
    "PII_DIRECTIONS",
    "PRESIDIO_ENTITY_TYPES",
    "SECRET_ENTITY_TYPES",
    "SUPPORTED_ENTITY_TYPES",
    "DataFinding",
    "DataScanResult",
    "Finding",
    "PiiPolicy",
    "PiiRule",
    "PiiScanner",
    "ScanResult",
    "get_scanner",
    "pii_policy_json_schema",
    "scan",
    "scan_data",
    "strongest_action",
]


def __getattr__(name: str) -> Any:
    # PEP 562: load the engine (Presidio, spaCy) only when a scanner is asked for.
    if name in _ENGINE_NAMES:
        from governance.pii import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'governance.pii' has no attribute {name!r}")
