"""Helpers for tests that start real processes (manage.py commands, a Celery worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def test_database_url() -> str:
    """A DATABASE_URL pointing at the database the running test uses (the test database)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DEBUG": "true",
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def manage_py(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def unique_queue(prefix: str = "test") -> str:
    """A queue name no other test uses: ``<prefix>-<8 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Worker:
    """A real ``celery -A controlplane worker`` process (solo pool, no gossip, mingle or
    heartbeat) consuming the one queue ``queue``, its output appended to ``log_path``.

    ``env`` overrides entries of :func:`process_env` (e.g. ``CELERY_BROKER_URL`` for another
    broker). Use as a context manager or call :meth:`stop`."""

    def __init__(self, queue: str, log_path: Path, **env: str) -> None:
        self.queue = queue
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "a+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("celery")),
                "-A",
                "controlplane",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--queues={queue}",
                f"--hostname={queue}-{uuid.uuid4().hex[:4]}@test",
            ],
            cwd=ROOT,
            env=process_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self, tail: int = 6000) -> str:
        """The last ``tail`` characters the worker wrote."""
        self.log.flush()
        return self.log_path.read_text()[-tail:]

    def kill(self) -> None:
        """SIGKILL the worker (a crash: no warm shutdown) and reap it."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop the worker (SIGTERM, SIGKILL after 30 s) and close its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 120, worker: Worker | None = None, every=0.2
) -> T:
    """Poll ``predicate`` every ``every`` seconds until it returns a true value and return that
    value. Raises AssertionError (with the worker's output) when ``timeout`` seconds pass or
    ``worker`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.output()}")
        time.sleep(every)
    detail = worker.output() if worker is not None else ""
    raise AssertionError(f"timed out waiting for {predicate}\n{detail}")
