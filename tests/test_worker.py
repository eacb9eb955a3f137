"""A real Celery worker process, started by the test, runs a task that writes a row."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
from django.conf import settings
from kombu import Connection

from controlplane.models import WorkerHeartbeat
from controlplane.tasks import worker_heartbeat
from tests.procs import ROOT, process_env

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
    queue = f"test-{uuid.uuid4().hex[:8]}"
    log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115 - read after the process ends
    worker = subprocess.Popen(
        [
            os.path.join(os.path.dirname(os.sys.executable), "celery"),
            "-A",
            "controlplane",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            f"--queues={queue}",
            f"--hostname={queue}@test",
        ],
        cwd=ROOT,
        env=process_env(CELERY_BROKER_URL=url),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        hostname = f"written-by-{queue}"
        with Connection(url) as conn:
            worker_heartbeat.apply_async(args=[hostname], connection=conn, queue=queue)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if WorkerHeartbeat.objects.filter(hostname=hostname).exists():
                break
            if worker.poll() is not None:
                break
            time.sleep(0.2)
        log.seek(0)
        output = log.read()
        assert WorkerHeartbeat.objects.filter(hostname=hostname).exists(), (
            f"the worker never wrote the row; worker output:\n{output[-4000:]}"
        )
        assert "succeeded" in output or "Task controlplane.tasks.worker_heartbeat" in output
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
