"""Benchmark: audit log append throughput (1 and N writers) and chain verification speed.

Uses a scratch database: a temporary SQLite file, or, when DATABASE_URL names a
PostgreSQL database, that database is created fresh (dropped first) and migrated.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, setup_django  # noqa: E402


def append_rate(n_threads: int, per_thread: int) -> float:
    from django.db import connections

    from governance.services import audit_record

    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                audit_record(
                    action="bench.event",
                    data={"thread": t, "i": i, "args": {"to": "x@example.com", "n": 1.5}},
                )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return n_threads * per_thread / elapsed


def verify_rate() -> tuple[float, int, float]:
    from governance.selectors import audit_chain_verify

    tracemalloc.start()
    start = time.perf_counter()
    result = audit_chain_verify()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.ok, result
    return result.checked / elapsed, result.checked, peak / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events per run")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backend = setup_django()

    single = append_rate(1, args.events)
    multi = append_rate(args.threads, max(1, args.events // args.threads))
    v_rate, v_count, v_peak = verify_rate()
    rows = [
        ("append, 1 writer", f"{single:,.0f} events/s"),
        (f"append, {args.threads} writers", f"{multi:,.0f} events/s"),
        (f"verify ({v_count} events)", f"{v_rate:,.0f} events/s"),
        ("verify peak Python memory", f"{v_peak:.1f} MiB"),
    ]
    result = {
        "backend": backend,
        "append_events_per_second_1_writer": round(single),
        f"append_events_per_second_{args.threads}_writers": round(multi),
        "verify_events_per_second": round(v_rate),
        "verify_events": v_count,
        "verify_peak_mib": round(v_peak, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(f"audit log benchmark on {backend}", rows)


if __name__ == "__main__":
    main()
