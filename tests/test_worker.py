"""A real Celery worker process, started by the test, runs a task that writes a row."""

from __future__ import annotations

import pytest
from django.conf import settings
from kombu import Connection

from controlplane.models import WorkerHeartbeat
from controlplane.tasks import worker_heartbeat
from tests.procs import Worker, unique_queue, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BROKERS = ["embedded"]
if settings.CELERY_BROKER_URL.startswith("redis"):
    BROKERS.append("redis")


def broker_url(kind: str, tmp_path) -> str:
    if kind == "embedded":
        return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    return settings.CELERY_BROKER_URL


@pytest.mark.parametrize("broker", BROKERS)
def test_a_real_worker_runs_a_task_that_writes_a_row(broker, tmp_path):
    url = broker_url(broker, tmp_path)
    queue = unique_queue()
    with Worker(queue, tmp_path / "worker.log", CELERY_BROKER_URL=url) as worker:
        hostname = f"written-by-{queue}"
        with Connection(url) as conn:
            worker_heartbeat.apply_async(args=[hostname], connection=conn, queue=queue)
        wait_for(
            WorkerHeartbeat.objects.filter(hostname=hostname).exists, timeout=90, worker=worker
        )
        output = worker.output()
    assert "succeeded" in output or "Task controlplane.tasks.worker_heartbeat" in output
