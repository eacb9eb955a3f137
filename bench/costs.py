"""Benchmark: cost report over a large ledger (default 1 M rows) on a scratch database.

Generates the ledger in batches (PostgreSQL: COPY; SQLite: bulk_create), spread evenly
over ``--days`` days ending now across 20 agents, 10 users and 4 models of one project
(plus a second project with 10 % of the rows, to check the report reads only its own),
rebuilds the daily rollup (the bulk load bypasses ``cost_record``, which keeps it in step)
and times ``governance.reports.cost_report`` for the last 30 days (ending now: two partial
days come from the ledger) grouped by agent and day, ``--runs`` runs, p50 / p95.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_obs python bench/costs.py --json
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, print_table, setup_django  # noqa: E402

AGENTS = 20
USERS = 10
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b")
BATCH = 50_000


def generate(rows: int, days: int) -> tuple[object, float]:
    """Create the projects, agents, users and ``rows`` ledger entries; return the main
    project and the seconds it took."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from agents.models import Agent
    from controlplane.models import Project
    from governance.models import CostEntry

    started = time.perf_counter()
    main = Project.objects.create(slug="bench", name="Bench", time_zone="Europe/Paris")
    other = Project.objects.create(slug="other", name="Other")
    agents = {
        p.pk: [Agent.objects.create(project=p, slug=f"agent-{i}").pk for i in range(AGENTS)]
        for p in (main, other)
    }
    users = [get_user_model().objects.create(username=f"user{i}").pk for i in range(USERS)]
    now = timezone.now()
    span = days * 86400
    rng = random.Random(7)  # noqa: S311 - synthetic data
    table = CostEntry._meta.db_table
    columns = (
        "call_id, kind, project_id, user_id, agent_id, run_id, step_id, provider, model, "
        "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, "
        "price_source, price_library_version, occurred_at, created_at"
    )
    done = 0
    while done < rows:
        n = min(BATCH, rows - done)
        records = []
        for i in range(done, done + n):
            project = main if i % 10 else other
            # In time order, as a live ledger is written (rows of a day are adjacent).
            at = now - timedelta(seconds=span * (1 - i / rows) + rng.random())
            cost = Decimal(rng.randint(1, 5_000_000)) / Decimal(100_000_000)
            records.append(
                (
                    f"bench-{i}",
                    "model",
                    project.pk,
                    rng.choice(users),
                    rng.choice(agents[project.pk]),
                    f"run-{i // 20}",
                    "",
                    "openai",
                    rng.choice(MODELS),
                    rng.randint(10, 4000),
                    rng.randint(10, 1000),
                    0,
                    0,
                    cost,
                    "override",
                    "",
                    at,
                    at,
                )
            )
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            for record in records:
                buffer.write("\t".join(str(v) for v in record) + "\n")
            buffer.seek(0)
            sql = f"COPY {table} ({columns}) FROM STDIN"
            with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
                copy.write(buffer.read())
        else:
            names = [c.strip() for c in columns.split(",")]
            CostEntry.objects.bulk_create(
                [CostEntry(**dict(zip(names, record, strict=True))) for record in records],
                batch_size=2000,
            )
        done += n
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return main, time.perf_counter() - started


def time_report(project, runs: int) -> tuple[list[float], int]:
    from django.utils import timezone

    from governance.reports import cost_report

    end = timezone.now()
    start = end - timedelta(days=30)
    timings = []
    cells = 0
    for _ in range(runs):
        began = time.perf_counter()
        report = cost_report(
            projects=[project],
            zone=project.zone,
            start=start,
            end=end,
            group_by=["agent"],
            interval="day",
        )
        cells = len(report.rows)
        timings.append((time.perf_counter() - began) * 1000)
    return sorted(timings), cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90, help="days the ledger spans")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backend = setup_django()
    project, gen_s = generate(args.rows, args.days)
    from governance.reports import cost_rollup_rebuild

    began = time.perf_counter()
    rollup_rows = cost_rollup_rebuild()
    rollup_s = time.perf_counter() - began
    timings, cells = time_report(project, args.runs)
    p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
    result = {
        "backend": backend,
        "ledger_rows": args.rows,
        "ledger_days": args.days,
        "generate_s": round(gen_s, 1),
        "rollup_rebuild_s": round(rollup_s, 1),
        "rollup_rows": rollup_rows,
        "report": "30 days, group_by=agent, interval=day",
        "report_cells": cells,
        "report_p50_ms": round(p50, 1),
        "report_p95_ms": round(p95, 1),
        "runs": args.runs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(
            f"cost report benchmark on {backend} ({args.rows:,} rows over {args.days} days)",
            [
                ("generate", f"{gen_s:.1f} s"),
                ("rollup rebuild", f"{rollup_s:.1f} s ({rollup_rows:,} rows)"),
                ("report cells", str(cells)),
                ("report p50", f"{p50:.1f} ms"),
                ("report p95", f"{p95:.1f} ms"),
            ],
        )


if __name__ == "__main__":
    main()
