"""Rebuild ``messages.json`` from presidio-research's ``presidio_synth_dev.json`` (MIT).

    python flows/demo/data/build_messages.py ../shared/data/pii/presidio_synth_dev.json

Keeps the first 300 records of the corpus in corpus order plus every record with a US
SSN, then moves two SSN records and one card record into the first ten so the first
small batch (``make run``) shows each kind of PII the demo policy blocks. Each record
keeps its text, its labelled spans and its index in the corpus (``corpus_index``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEEP = 300


def build(corpus: list[dict]) -> list[dict]:
    records = [
        {"corpus_index": index, "full_text": r["full_text"], "spans": r["spans"]}
        for index, r in enumerate(corpus)
    ]
    chosen = records[:KEEP] + [
        r for r in records[KEEP:] if any(s["entity_type"] == "US_SSN" for s in r["spans"])
    ]
    ssn = [r for r in chosen if any(s["entity_type"] == "US_SSN" for s in r["spans"])][:2]
    rest = [r for r in chosen if r not in ssn]
    return rest[:3] + [ssn[0]] + rest[3:8] + [ssn[1]] + rest[8:]


if __name__ == "__main__":
    source = Path(sys.argv[1])
    out = Path(__file__).with_name("messages.json")
    data = build(json.loads(source.read_text(encoding="utf-8")))
    out.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(data)} records to {out}")
