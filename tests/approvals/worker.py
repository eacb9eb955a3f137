"""A real Celery worker process on its own queue, for the end-to-end tests and the bench."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import current_app

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def celery_worker(env: dict[str, str], log_path: Path, *, concurrency: int = 1) -> Iterator[str]:
    """Start ``celery worker`` consuming a fresh queue, route this process's tasks there
    (``task_default_queue``) and yield the queue name; the worker is stopped after."""
    queue = f"appr-{uuid.uuid4().hex[:8]}"
    log = open(log_path, "w+")  # noqa: SIM115 - read by the caller on failure
    pool = (
        ["--pool=solo"] if concurrency == 1 else ["--pool=prefork", f"--concurrency={concurrency}"]
    )
    worker = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "celery"),
            "-A",
            "controlplane",
            "worker",
            *pool,
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--queues={queue}",
            f"--hostname={queue}@test",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    previous = current_app.conf.task_default_queue
    current_app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        current_app.conf.task_default_queue = previous
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def worker_log(log_path: Path) -> str:
    return Path(log_path).read_text()[-4000:]
