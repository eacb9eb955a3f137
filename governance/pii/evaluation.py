"""Evaluate the PII scanner on a presidio-research style dataset: precision, recall, F1, latency.

Shared by ``manage.py pii_eval`` and ``bench/pii.py``.

Dataset: a JSON list of documents, each ``{"full_text": str, "spans": [{"entity_type":
str, "start_position": int, "end_position": int}, ...]}`` (other keys ignored), as in
presidio-research's synthetic data (``presidio_synth_dev.json``).

Label mapping (``DATASET_TO_PRESIDIO``), from presidio-research's
``PresidioAnalyzerWrapper.presidio_entities_map``: GPE and STREET_ADDRESS -> LOCATION,
DOMAIN_NAME -> URL; PERSON, NRP, DATE_TIME, CREDIT_CARD, PHONE_NUMBER, EMAIL_ADDRESS,
IBAN_CODE, IP_ADDRESS, US_SSN, US_DRIVER_LICENSE map to themselves. Dataset labels whose
mapped type the scanner does not detect (ORGANIZATION, AGE, TITLE, ZIP_CODE) are left out
of the scores, and so are predictions of types the dataset does not label (secrets,
US_BANK_NUMBER, ...): neither can be judged against this data.

Scoring, per entity type and overall (micro-averaged): a predicted span is a true
positive when it overlaps a gold span of the same type (precision = such predictions /
all predictions); a gold span is found when a prediction of its type overlaps it (recall
= found gold spans / all gold spans); F1 is their harmonic mean.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.pii.rules import SUPPORTED_ENTITY_TYPES, PiiPolicy, PiiRule

DATASET_TO_PRESIDIO = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "LOCATION": "LOCATION",
    "NRP": "NRP",
    "DATE_TIME": "DATE_TIME",
    "CREDIT_CARD": "CREDIT_CARD",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "DOMAIN_NAME": "URL",
    "URL": "URL",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "ORGANIZATION": "ORGANIZATION",
    "AGE": "AGE",
    "TITLE": "TITLE",
    "ZIP_CODE": "ZIP_CODE",
}

# presidio-evaluator's PresidioAnalyzerWrapper scores at 0.4 by default; so do we.
EVALUATION_THRESHOLD = 0.4
EVALUATION_DIRECTION = "audit"


class DatasetError(ValueError):
    """The dataset file is missing, not JSON, or not a list of documents with spans."""


@dataclass(frozen=True, slots=True)
class Span:
    entity_type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Document:
    """A dataset document; ``spans`` carry mapped (Presidio) entity types."""

    text: str
    spans: tuple[Span, ...]


def load_dataset(path: str | Path, *, limit: int | None = None) -> list[Document]:
    """Read and check a presidio-research style JSON file (the first ``limit`` documents).

    Raises ``DatasetError`` naming the problem and, for a bad document, its index.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.__class__.__name__})") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(raw, list):
        raise DatasetError(f"{path}: expected a JSON list of documents, got {type(raw).__name__}")
    if limit is not None:
        raw = raw[:limit]
    return [_document(item, index, path) for index, item in enumerate(raw)]


def _document(item: Any, index: int, path: Path) -> Document:
    where = f"{path}: document {index}"
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object, got {type(item).__name__}")
    text = item.get("full_text")
    if not isinstance(text, str):
        raise DatasetError(f"{where}: 'full_text' must be a string")
    spans = item.get("spans", [])
    if not isinstance(spans, list):
        raise DatasetError(f"{where}: 'spans' must be a list")
    out = []
    for number, span in enumerate(spans):
        if not isinstance(span, dict):
            raise DatasetError(f"{where}: spans[{number}] must be an object")
        label, start, end = (
            span.get("entity_type"),
            span.get("start_position"),
            span.get("end_position"),
        )
        if not isinstance(label, str):
            raise DatasetError(f"{where}: spans[{number}].entity_type must be a string")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise DatasetError(
                f"{where}: spans[{number}] needs integer start_position < end_position "
                f"within the text (got {start!r}, {end!r})"
            )
        out.append(Span(DATASET_TO_PRESIDIO.get(label, label), start, end))
    return Document(text=text, spans=tuple(out))


def evaluation_policy(threshold: float = EVALUATION_THRESHOLD) -> PiiPolicy:
    """A policy that redacts every supported entity type at ``threshold``, in
    ``EVALUATION_DIRECTION``."""
    rule = PiiRule(action="redact", threshold=threshold)
    return PiiPolicy(**{EVALUATION_DIRECTION: dict.fromkeys(SUPPORTED_ENTITY_TYPES, rule)})


def evaluated_types(documents: Sequence[Document]) -> list[str]:
    """The entity types scored: those labelled in ``documents`` that the scanner detects."""
    labelled = {span.entity_type for doc in documents for span in doc.spans}
    return sorted(labelled & set(SUPPORTED_ENTITY_TYPES))


def _prf(true_pred: int, predicted: int, found: int, gold: int) -> dict[str, float]:
    precision = true_pred / predicted if predicted else 0.0
    recall = found / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def score(documents: Sequence[Document], predictions: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """Precision, recall and F1 (span overlap + type match), per entity type and overall.

    Returns ``{"overall": {precision, recall, f1}, "per_entity": {TYPE: {precision,
    recall, f1, gold, predicted}}}`` over ``evaluated_types(documents)``.
    """
    if len(documents) != len(predictions):
        raise ValueError("one list of predicted spans per document is needed")
    types = set(evaluated_types(documents))
    true_pred, predicted, found, gold = Counter(), Counter(), Counter(), Counter()
    for doc, predicted_spans in zip(documents, predictions, strict=True):
        gold_spans = [s for s in doc.spans if s.entity_type in types]
        pred_spans = [s for s in predicted_spans if s.entity_type in types]
        for p in pred_spans:
            predicted[p.entity_type] += 1
            if any(g.entity_type == p.entity_type and _overlaps(g, p) for g in gold_spans):
                true_pred[p.entity_type] += 1
        for g in gold_spans:
            gold[g.entity_type] += 1
            if any(p.entity_type == g.entity_type and _overlaps(g, p) for p in pred_spans):
                found[g.entity_type] += 1
    per_entity = {
        t: {
            **_prf(true_pred[t], predicted[t], found[t], gold[t]),
            "gold": gold[t],
            "predicted": predicted[t],
        }
        for t in sorted(types)
    }
    overall = _prf(
        sum(true_pred.values()), sum(predicted.values()), sum(found.values()), sum(gold.values())
    )
    return {"overall": overall, "per_entity": per_entity}


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile (nearest rank) of per-document latencies, in ms."""
    if not latencies_ms:
        return {"p50": 0.0, "p95": 0.0}
    ordered = sorted(latencies_ms)
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 n)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[rank - 1], 3),
    }


@dataclass(frozen=True)
class RunResult:
    """Per-document predictions (with scores) and latencies of one detector run."""

    predictions: list[list[tuple[Span, float]]]
    latencies_ms: list[float]

    def spans(self) -> list[list[Span]]:
        return [[span for span, _ in doc] for doc in self.predictions]


Detector = Callable[[str], list[tuple[Span, float]]]


def run_detector(documents: Sequence[Document], detect: Detector, *, warmup: int = 5) -> RunResult:
    """Time ``detect`` on each document (after ``warmup`` untimed calls on the first ones)."""
    for doc in documents[:warmup]:
        detect(doc.text)
    predictions, latencies = [], []
    clock = time.perf_counter
    for doc in documents:
        started = clock()
        found = detect(doc.text)
        latencies.append((clock() - started) * 1000)
        predictions.append(found)
    return RunResult(predictions, latencies)


def scanner_detector(scanner: Any = None, *, threshold: float = EVALUATION_THRESHOLD) -> Detector:
    """A detector running the scanner with ``evaluation_policy(threshold)``; its findings
    are what the scanner acts on. Engine errors propagate (an evaluation must not count a
    failed scan as "nothing found")."""
    from governance.pii.engine import get_scanner

    active = scanner or get_scanner()
    policy = evaluation_policy(threshold)

    def detect(text: str) -> list[tuple[Span, float]]:
        result = active.scan(text, EVALUATION_DIRECTION, policy)
        return [(Span(f.entity_type, f.start, f.end), f.score) for f in result.findings]

    return detect


def evaluate(
    documents: Sequence[Document], detect: Detector, *, warmup: int = 5
) -> tuple[dict[str, Any], RunResult]:
    """Run ``detect`` over ``documents``; return the report (``overall``, ``per_entity``,
    ``latency_ms`` {p50, p95}, ``documents``) and the raw run."""
    run = run_detector(documents, detect, warmup=warmup)
    report = score(documents, run.spans())
    report["latency_ms"] = latency_summary(run.latencies_ms)
    report["documents"] = len(documents)
    return report, run
