"""Benchmark: our PII scanner vs stock Presidio on presidio-research's synthetic dev set.

Stock: ``AnalyzerEngine`` with Presidio's own default NLP configuration
(``conf/default.yaml``) but the same spaCy model as ours (``PII_SPACY_MODEL``), and its
default recognizers, called as ``analyze(text, language="en")`` on each document (all
entities, no threshold). Its email recognizer is swapped for ours, which has the same
pattern and score but reads the bundled public-suffix list instead of downloading it.

Ours: ``governance.pii`` with the evaluation policy of ``manage.py pii_eval`` (every
supported entity type, threshold 0.4). Also timed: ours with the default policy
(secrets only, so no NER pass), the policy of a project that has none.

Both are scored by ``governance.pii.evaluation.score`` (same label mapping). The calls run
interleaved per document, alternating which goes first, so load from other processes on
the machine hits both alike. ``--ablation`` also times spaCy alone: the full pipeline,
NER only, NER only with numpy's gemm.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import print_table  # noqa: E402

DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "pii" / "presidio_synth_dev.json"


def setup() -> None:
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    os.environ["LOG_LEVEL"] = "warning"
    import django

    django.setup()
    # Presidio logs every loaded recognizer at INFO and warns about unmapped spaCy labels.
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)


def stock_analyzer(model: str):
    """Presidio's default AnalyzerEngine on ``model`` (see the module docstring)."""
    import presidio_analyzer
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    from governance.pii.recognizers import OfflineEmailRecognizer

    conf_path = Path(presidio_analyzer.__file__).parent / "conf" / "default.yaml"
    configuration = yaml.safe_load(conf_path.read_text())
    configuration["models"] = [{"lang_code": "en", "model_name": model}]
    engine = AnalyzerEngine(
        nlp_engine=NlpEngineProvider(nlp_configuration=configuration).create_engine()
    )
    registry = engine.registry
    for index, recognizer in enumerate(registry.recognizers):
        if type(recognizer) is EmailRecognizer:
            offline = OfflineEmailRecognizer()
            offline.global_regex_flags = recognizer.global_regex_flags
            registry.recognizers[index] = offline
    return engine


def run(dataset: Path, limit: int | None, ablation: bool) -> dict:
    from django.conf import settings

    from governance.pii import DEFAULT_PII_POLICY
    from governance.pii.engine import get_scanner
    from governance.pii.evaluation import (
        EVALUATION_DIRECTION,
        Span,
        evaluation_policy,
        latency_summary,
        load_dataset,
        score,
    )

    documents = load_dataset(dataset, limit=limit)
    stock = stock_analyzer(settings.PII_SPACY_MODEL)
    scanner = get_scanner()
    policy = evaluation_policy()

    def call_stock(text):
        return [Span(r.entity_type, r.start, r.end) for r in stock.analyze(text, language="en")]

    def call_ours(text):
        result = scanner.scan(text, EVALUATION_DIRECTION, policy)
        return [Span(f.entity_type, f.start, f.end) for f in result.findings]

    def call_ours_default(text):
        scanner.scan(text, "model_input", DEFAULT_PII_POLICY)
        return []

    calls = {"stock": call_stock, "ours": call_ours, "ours_default_policy": call_ours_default}
    if ablation:
        calls.update(spacy_calls(settings.PII_SPACY_MODEL, scanner))
    names = list(calls)
    for doc in documents[:10]:  # warm up
        for name in names:
            calls[name](doc.text)
    predictions = {name: [] for name in names}
    latencies = {name: [] for name in names}
    clock = time.perf_counter
    for index, doc in enumerate(documents):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            started = clock()
            found = calls[name](doc.text)
            latencies[name].append((clock() - started) * 1000)
            predictions[name].append(found)

    result: dict = {"dataset": str(dataset), "documents": len(documents)}
    for name in ("stock", "ours"):
        metrics = score(documents, predictions[name])
        lat = latency_summary(latencies[name])
        result[name] = {
            **metrics["overall"],
            "p50_ms": lat["p50"],
            "p95_ms": lat["p95"],
            "mean_ms": round(sum(latencies[name]) / len(documents), 3),
            "per_entity_f1": {t: m["f1"] for t, m in metrics["per_entity"].items()},
        }
    result["speedup"] = round(result["stock"]["p50_ms"] / result["ours"]["p50_ms"], 2)
    result["speedup_mean"] = round(result["stock"]["mean_ms"] / result["ours"]["mean_ms"], 2)
    for name in names[2:]:
        lat = latency_summary(latencies[name])
        result[name] = {"p50_ms": lat["p50"], "p95_ms": lat["p95"]}
    result["ours_fast_gemm"] = scanner.nlp_engine.fast_gemm
    return result


def spacy_calls(model: str, scanner) -> dict:
    """spaCy alone: the full pipeline (as stock loads it), NER only with thinc's default
    blis gemm, and our NER-only pipeline (numpy gemm when it could be pinned)."""
    import spacy

    full = spacy.load(model)
    ner_blis = spacy.load(model, exclude=["parser", "tagger", "attribute_ruler", "lemmatizer"])
    if "tok2vec" in ner_blis.pipe_names and not ner_blis.get_pipe("tok2vec").listening_components:
        ner_blis.remove_pipe("tok2vec")
    ours = scanner.nlp_engine.nlp["en"]

    def timed(nlp):
        def call(text):
            nlp(text)
            return []

        return call

    return {
        "spacy_full_pipeline": timed(full),
        "spacy_ner_only_blis": timed(ner_blis),
        "spacy_ner_only_ours": timed(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--ablation", action="store_true", help="also time spaCy alone")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup()
    result = run(args.dataset, args.limit, args.ablation)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    stock, ours = result["stock"], result["ours"]
    rows = [
        ("documents", str(result["documents"])),
        ("F1 stock / ours", f"{stock['f1']:.3f} / {ours['f1']:.3f}"),
        ("precision stock / ours", f"{stock['precision']:.3f} / {ours['precision']:.3f}"),
        ("recall stock / ours", f"{stock['recall']:.3f} / {ours['recall']:.3f}"),
        ("p50 ms stock / ours", f"{stock['p50_ms']:.2f} / {ours['p50_ms']:.2f}"),
        ("p95 ms stock / ours", f"{stock['p95_ms']:.2f} / {ours['p95_ms']:.2f}"),
        ("speedup (p50, mean)", f"{result['speedup']:.2f}x, {result['speedup_mean']:.2f}x"),
        ("ours, default policy p50 ms", f"{result['ours_default_policy']['p50_ms']:.3f}"),
    ]
    for name in ("spacy_full_pipeline", "spacy_ner_only_blis", "spacy_ner_only_ours"):
        if name in result:
            rows.append((f"{name} p50 ms", f"{result[name]['p50_ms']:.2f}"))
    print_table(f"PII scanner vs stock Presidio on {Path(result['dataset']).name}", rows)


if __name__ == "__main__":
    main()
