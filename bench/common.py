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
