"""Benchmark: the filtered audit query and audit_verify over a large log (default 1 M events).

Generates a valid hash chain in batches (PostgreSQL: COPY; SQLite: bulk_create) over 30
days ending now, 90 % in one project, with the shapes the runtime writes (tool decisions,
model calls, executions with ``run_id`` in the data, cost and budget events), then:

- times the first page (50, newest first) of the audit API's filters through
  ``AuditEventFilter`` (the REST list, its exports and the audit page use it), cycling
  through action prefix + time range, run, actor, agent, trace id, object and a narrow time
  window: ``--runs`` queries (50), p50 / p95 over all of them and the p95 of each filter;
- times ``audit_chain_verify`` over the whole chain, in one process (``verify_s``) and
  split over ``--workers`` processes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_obs python bench/audit.py --json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, print_table, setup_django  # noqa: E402

BATCH = 50_000
AGENTS = 20
COLUMNS = (
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_name",
    "actor_ref",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "project_id",
    "project_ref",
    "request_id",
    "trace_id",
    "data",
    "prev_hash",
    "hash",
)
ACTIONS = (
    ["tool.decision"] * 6
    + ["model.call"] * 6
    + ["tool.executed"] * 4
    + ["cost.recorded"] * 2
    + ["budget.reserved", "agent.turn.completed"]
)


def _cell(row: dict, column: str):
    if column == "data":
        return json.dumps(row[column])
    if column == "occurred_at":
        return row[column].isoformat()
    return row[column]


def generate(events: int, days: int):
    """Write ``events`` chained events; return the main project, a sample run id and trace
    id, and the seconds it took."""
    from django.db import connection
    from django.utils import timezone

    from controlplane.models import Project
    from governance.audit_chain import GENESIS_HASH_VALUE, event_hash
    from governance.models import AuditChainHead, AuditEvent

    started = time.perf_counter()
    main = Project.objects.create(slug="bench", name="Bench")
    other = Project.objects.create(slug="other", name="Other")
    rng = random.Random(11)  # noqa: S311 - synthetic data
    now = timezone.now()
    span = days * 86400
    prev = GENESIS_HASH_VALUE
    table = AuditEvent._meta.db_table
    sample = {}
    done = 0
    while done < events:
        n = min(BATCH, events - done)
        rows = []
        for i in range(done, done + n):
            seq = i + 1
            project = main if i % 10 else other
            run = i // 40
            k = rng.randrange(AGENTS)
            action = rng.choice(ACTIONS)
            data = {"run_id": f"run-{run}", "turn_id": run, "tool": f"tool-{k % 5}"}
            if action == "tool.decision":
                data.update(effect=rng.choice(["allow", "allow", "deny"]), rule="grant")
            elif action == "model.call":
                data.update(model="gpt-4o", latency_ms=rng.randint(50, 4000), reason=None)
            fields = {
                "sequence": seq,
                "occurred_at": now - timedelta(seconds=span * (1 - i / events)),
                "actor_kind": "agent_version",
                "actor_name": f"agent:agent-{k}@v1",
                "actor_ref": str(k),
                "action": action,
                "object_type": "agents.agentversion",
                "object_id": str(k),
                "object_repr": f"agent-{k}@v1",
                "project_id": project.pk,
                "project_ref": str(project.pk),
                "request_id": "",
                "trace_id": f"{run:032x}",
                "data": data,
                "prev_hash": prev,
            }
            fields["hash"] = prev = event_hash(fields)
            if project is main and run == events // 80:  # a run in the middle
                sample = {"run": f"run-{run}", "trace_id": fields["trace_id"]}
            rows.append(fields)
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for row in rows:
                writer.writerow([_cell(row, c) for c in COLUMNS])
            buffer.seek(0)
            sql = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
            with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
                copy.write(buffer.read())
        else:
            AuditEvent.objects.bulk_create([AuditEvent(**row) for row in rows], batch_size=2000)
        done += n
    AuditChainHead.objects.update_or_create(pk=1, defaults={"sequence": events, "hash": prev})
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return main, sample, time.perf_counter() - started


def time_queries(project, sample: dict, runs: int) -> tuple[list[float], dict[str, float]]:
    from django.http import QueryDict
    from django.utils import timezone

    from governance.filters import AuditEventFilter
    from governance.selectors import audit_events_for_projects

    now = timezone.now()
    week = (now - timedelta(days=7)).isoformat()
    yesterday = now - timedelta(days=1)
    mix = {
        "action prefix + 7 days": {"action_prefix": "tool.", "from": week, "to": now.isoformat()},
        "run": {"run": sample["run"]},
        "actor": {"actor": "agent:agent-3@v1"},
        "agent": {"agent": "agent-3"},
        "trace id": {"trace_id": sample["trace_id"]},
        "object": {"object": "agents.agentversion:7"},
        "one hour, yesterday": {
            "from": yesterday.isoformat(),
            "to": (yesterday + timedelta(hours=1)).isoformat(),
        },
        "action + 7 days": {"action": "cost.recorded", "from": week},
    }
    names = list(mix)
    timings: list[float] = []
    per: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        name = names[i % len(names)]
        params = QueryDict(mutable=True)
        params.update(mix[name])
        began = time.perf_counter()
        filterset = AuditEventFilter(params, queryset=audit_events_for_projects([project.pk]))
        assert filterset.is_valid(), filterset.errors
        page = list(filterset.qs.order_by("-sequence")[:51])
        elapsed = (time.perf_counter() - began) * 1000
        assert page, name
        timings.append(elapsed)
        per[name].append(elapsed)
    return sorted(timings), {n: percentile(sorted(v), 0.95) for n, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--workers", type=int, default=2, help="also verify with this many processes"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backend = setup_django()
    project, sample, gen_s = generate(args.events, args.days)
    timings, per_filter = time_queries(project, sample, args.runs)
    from governance.selectors import audit_chain_verify

    began, cpu = time.perf_counter(), time.process_time()
    verified = audit_chain_verify()
    verify_s = time.perf_counter() - began
    verify_cpu_s = time.process_time() - cpu  # this process only (not PostgreSQL's)
    assert verified.ok, verified
    began = time.perf_counter()
    parallel = audit_chain_verify(workers=args.workers)
    verify_parallel_s = time.perf_counter() - began
    assert parallel.ok and parallel.checked == verified.checked, parallel
    result = {
        "backend": backend,
        "events": args.events,
        "generate_s": round(gen_s, 1),
        "audit_query_p50_ms": round(percentile(timings, 0.5), 1),
        "audit_query_p95_ms": round(percentile(timings, 0.95), 1),
        "audit_query_p95_ms_per_filter": {k: round(v, 1) for k, v in per_filter.items()},
        "runs": args.runs,
        "verify_s": round(verify_s, 1),
        "verify_python_cpu_s": round(verify_cpu_s, 1),
        f"verify_{args.workers}_workers_s": round(verify_parallel_s, 1),
        "verify_checked": verified.checked,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [
            ("generate", f"{gen_s:.1f} s"),
            ("query p50", f"{result['audit_query_p50_ms']} ms"),
            ("query p95", f"{result['audit_query_p95_ms']} ms"),
            *((f"  p95 {k}", f"{v:.1f} ms") for k, v in per_filter.items()),
            (f"verify ({verified.checked:,} events)", f"{verify_s:.1f} s"),
            ("verify, Python CPU", f"{verify_cpu_s:.1f} s"),
            (f"verify, {args.workers} processes", f"{verify_parallel_s:.1f} s"),
        ]
        print_table(f"audit benchmark on {backend}", rows)


if __name__ == "__main__":
    main()
