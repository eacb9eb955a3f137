"""Shared set-up of the benchmarks: a scratch database and the table printout."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django() -> str:
    """Configure Django on a scratch database and migrate it; return the backend name.

    A temporary SQLite file, or, when DATABASE_URL names a PostgreSQL database, that
    database created fresh (dropped first).
    """
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        scratch = Path(tempfile.mkdtemp(prefix="cp-bench-")) / "bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch}"
        backend = "sqlite"
    else:
        import psycopg

        base, name = url.rsplit("/", 1)
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        backend = "postgresql"
    os.environ["LOG_LEVEL"] = "warning"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return backend


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Print ``title`` and two aligned columns."""
    print(title)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>18}")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` in 0..1)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def durable_write_latency_ms(samples: int = 200) -> dict[str, float]:
    """The latency of the cheapest durable write on the configured database: one
    transaction inserting one small row into a scratch table and committing (with the
    server's ``synchronous_commit`` / fsync settings), through Django's connection but
    raw SQL, no ORM. Returns ``{"p50_ms", "p99_ms", "synchronous_commit"}``.

    It is the floor under any design that makes a record durable before acting on it
    (a tool call's decision before the tool runs, a budget reservation before the model
    call, a step's claim and record): benchmarks report their targets next to
    ``commits x this``.
    """
    import time

    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_durable_floor (id integer)")
        setting = "n/a"
        if connection.vendor == "postgresql":
            cursor.execute("SHOW synchronous_commit")
            setting = cursor.fetchone()[0]
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_durable_floor (id) VALUES (1)")
        times.append((time.perf_counter() - started) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_durable_floor")
    times.sort()
    return {
        "p50_ms": round(percentile(times, 0.5), 3),
        "p99_ms": round(percentile(times, 0.99), 3),
        "synchronous_commit": setting,
    }


def commits_in(captured: list[dict]) -> int:
    """Durable commits in Django's captured queries (``CaptureQueriesContext``): each
    ``COMMIT`` plus each write statement run outside a transaction block (autocommit)."""
    commits, in_block = 0, False
    for query in captured:
        sql = query["sql"].lstrip().upper()
        if sql.startswith("BEGIN"):
            in_block = True
        elif sql.startswith("COMMIT"):
            commits += 1
            in_block = False
        elif sql.startswith("ROLLBACK"):
            in_block = False
        elif not in_block and sql.startswith(("INSERT", "UPDATE", "DELETE")):
            commits += 1
    return commits


def governed_write_floor_ms(samples: int = 200) -> dict[str, float]:
    """The latency of the least a governed call must make durable before it proceeds,
    written by hand in raw SQL on scratch tables shaped like ours (no ORM, no Python
    logic): ``decision`` is one transaction that upserts a usage counter, locks the
    chain head, inserts one audit-like event (JSON data, 3 secondary indexes) and moves
    the head in the same statement, then commits (what a tool call's decision needs
    before the tool runs); ``reservation`` is the same with a reservation row instead
    of the counter (a model call needs one before the request and one to settle after).
    PostgreSQL only (``{}`` on SQLite). Returns ``{"decision_p50_ms", "decision_p99_ms",
    "round_trip_p50_ms"}``: the floor any implementation of the design pays.
    """
    import time

    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        return {}
    setup = [
        "CREATE TEMP TABLE floor_counter (key text PRIMARY KEY, n bigint NOT NULL)",
        "CREATE TEMP TABLE floor_head (id int PRIMARY KEY, seq bigint, hash text)",
        "INSERT INTO floor_head VALUES (1, 0, '')",
        "CREATE TEMP TABLE floor_event (seq bigint PRIMARY KEY, at timestamptz, action text,"
        " project int, object text, data jsonb, prev text, hash text UNIQUE)",
        "CREATE INDEX ON floor_event (project, seq)",
        "CREATE INDEX ON floor_event (object)",
        "CREATE INDEX ON floor_event ((data->>'run_id'))",
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in setup:
            cursor.execute(statement)
    decisions, trips = [], []
    for i in range(samples):
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO floor_counter VALUES ('rate:1', 1) ON CONFLICT (key)"
                " DO UPDATE SET n = floor_counter.n + 1 RETURNING n"
            )
            cursor.execute("SELECT seq, hash FROM floor_head WHERE id = 1 FOR UPDATE")
            seq, _ = cursor.fetchone()
            cursor.execute(
                "WITH e AS (INSERT INTO floor_event VALUES (%s, now(), 'tool.decision', 1,"
                " 'agent.version:1', %s::jsonb, %s, %s)) UPDATE floor_head SET seq = %s,"
                " hash = %s WHERE id = 1",
                [seq + 1, '{"run_id": "r1", "rule": "grant.rule.0"}', f"p{i}", f"h{i}"]
                + [seq + 1, f"h{i}"],
            )
        decisions.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        trips.append((time.perf_counter() - started) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE floor_event, floor_head, floor_counter")
    decisions.sort()
    trips.sort()
    return {
        "decision_p50_ms": round(percentile(decisions, 0.5), 3),
        "decision_p99_ms": round(percentile(decisions, 0.99), 3),
        "round_trip_p50_ms": round(percentile(trips, 0.5), 3),
    }
