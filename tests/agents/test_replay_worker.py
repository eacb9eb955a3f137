"""A real Celery worker process runs a policy replay queued by its id and records the result."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu import Connection

from agents.models import ReplayJob
from agents.tasks import replay_job_run
from tests.procs import ROOT, process_env
from tests.seed import seed_project

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_runs_a_replay(project, admin_user, tmp_path):
    seed_project(project, admin_user)
    now = timezone.now()
    job = ReplayJob.objects.create(
        project=project,
        kind="policy",
        target="default",
        draft={"document": "caps:\n  max_tool_calls_per_run: 1\n"},
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(hours=1),
        created_by=admin_user,
    )
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
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
        with Connection(url) as conn:
            replay_job_run.apply_async(args=[job.pk], connection=conn, queue=queue)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.poll() is None:
            job.refresh_from_db()
            if job.status in ("completed", "failed"):
                break
            time.sleep(0.3)
        log.seek(0)
        output = log.read()
        assert job.status == "completed", f"{job.status} {job.error}\n{output[-4000:]}"
        assert job.result["summary"]["newly_denied"] == 2
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
