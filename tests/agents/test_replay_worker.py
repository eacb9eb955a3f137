"""A real Celery worker process runs a policy replay queued by its id and records the result."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from kombu import Connection

from agents.models import ReplayJob
from agents.tasks import replay_job_run
from tests.procs import Worker, unique_queue, wait_for
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
    queue = unique_queue()
    with Worker(queue, tmp_path / "worker.log", CELERY_BROKER_URL=url) as worker:
        with Connection(url) as conn:
            replay_job_run.apply_async(args=[job.pk], connection=conn, queue=queue)
        finished = ReplayJob.objects.filter(pk=job.pk, status__in=["completed", "failed"])
        job = wait_for(finished.first, worker=worker)
        output = worker.output()
    assert job.status == "completed", f"{job.status} {job.error}\n{output}"
    assert job.result["summary"]["newly_denied"] == 2
