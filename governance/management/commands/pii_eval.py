"""``manage.py pii_eval``: precision, recall, F1 and latency of the PII scanner on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance.pii.engine import SpacyModelMissingError
from governance.pii.evaluation import (
    DATASET_TO_PRESIDIO,
    EVALUATION_THRESHOLD,
    DatasetError,
    evaluate,
    load_dataset,
    scanner_detector,
)

_MAPPING = ", ".join(
    f"{label} -> {target}" for label, target in DATASET_TO_PRESIDIO.items() if label != target
)


class Command(BaseCommand):
    help = (
        "Run the configured PII scanner over a presidio-research style JSON dataset (a list "
        "of {full_text, spans: [{entity_type, start_position, end_position}]}) with a policy "
        "acting on every supported entity type, and print precision, recall and F1 per "
        "entity type and overall (a prediction counts when it overlaps a gold span of the "
        "same type), plus median and p95 ms per document. Dataset labels are mapped to "
        f"Presidio's as presidio-research does ({_MAPPING}; others unchanged); labels the "
        "scanner does not detect (ORGANIZATION, AGE, TITLE, ZIP_CODE) and predictions of "
        "types the dataset does not label are not scored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", required=True, help="path of the JSON dataset")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
        parser.add_argument(
            "--findings-out",
            help="write one JSON line per document, in dataset order: "
            '{"findings": [{"entity_type", "start", "end", "score"}]}',
        )
        parser.add_argument("--limit", type=int, help="evaluate the first N documents only")
        parser.add_argument(
            "--threshold",
            type=float,
            default=EVALUATION_THRESHOLD,
            help=f"minimum score for every entity type (default {EVALUATION_THRESHOLD}, "
            "presidio-evaluator's)",
        )

    def handle(
        self,
        *args,
        dataset: str,
        as_json: bool,
        findings_out: str | None,
        limit: int | None,
        threshold: float,
        **options,
    ) -> None:
        if limit is not None and limit <= 0:
            raise CommandError("--limit must be a positive integer")
        if not 0.0 <= threshold <= 1.0:
            raise CommandError("--threshold must be between 0 and 1")
        try:
            documents = load_dataset(dataset, limit=limit)
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        if not documents:
            raise CommandError(f"{dataset}: the dataset has no documents")
        out_path = Path(findings_out) if findings_out else None
        if out_path is not None and not out_path.parent.is_dir():
            raise CommandError(f"--findings-out: directory {out_path.parent} does not exist")

        try:
            detect = scanner_detector(threshold=threshold)
        except SpacyModelMissingError as exc:
            raise CommandError(str(exc)) from exc
        report, run = evaluate(documents, detect)

        if out_path is not None:
            with out_path.open("w", encoding="utf-8") as handle:
                for predictions in run.predictions:
                    findings = [
                        {
                            "entity_type": span.entity_type,
                            "start": span.start,
                            "end": span.end,
                            "score": round(score, 4),
                        }
                        for span, score in predictions
                    ]
                    handle.write(json.dumps({"findings": findings}) + "\n")

        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self._print_table(report, threshold)

    def _print_table(self, report: dict, threshold: float) -> None:
        write = self.stdout.write
        write(f"{report['documents']} documents, threshold {threshold}")
        write(
            f"{'entity type':<20} {'precision':>9} {'recall':>7} {'f1':>7} {'gold':>6} {'pred':>6}"
        )
        for entity, m in report["per_entity"].items():
            write(
                f"{entity:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>7.3f} "
                f"{m['gold']:>6} {m['predicted']:>6}"
            )
        o = report["overall"]
        write(f"{'overall':<20} {o['precision']:>9.3f} {o['recall']:>7.3f} {o['f1']:>7.3f}")
        latency = report["latency_ms"]
        write(f"latency per document: p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms")
