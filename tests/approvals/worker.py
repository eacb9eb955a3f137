"""A real Celery worker process on its own queue, for the approvals end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import current_app

from tests.procs import Worker, unique_queue


@contextmanager
def celery_worker(log_path: Path, **env: str) -> Iterator[Worker]:
    """Start a :class:`tests.procs.Worker` on a fresh queue, route this process's tasks there
    (``task_default_queue``) while it runs and yield it; the worker is stopped after. ``env``
    overrides entries of :func:`tests.procs.process_env`."""
    previous = current_app.conf.task_default_queue
    with Worker(unique_queue("appr"), log_path, **env) as worker:
        current_app.conf.task_default_queue = worker.queue
        try:
            yield worker
        finally:
            current_app.conf.task_default_queue = previous
