"""Run a function in many threads at once (for the PostgreSQL concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def run_concurrently(n: int, fn: Callable[[int], Any], *, timeout_seconds: float = 300) -> list:
    """Run ``fn(i)`` for i in 0..n-1 in ``n`` threads released together by a barrier; each
    thread uses (and closes) its own database connection. Returns the results in
    completion order; re-raises nothing but asserts no thread failed or hung."""
    results: list = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            barrier.wait()
            value = fn(i)
            with lock:
                results.append(value)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_seconds)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    return results
