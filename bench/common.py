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
