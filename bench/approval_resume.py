"""Approval resume latency: from an approval's final decision committed to the parked agent
turn running again in a Celery worker (and to the turn completed).

Parks N standalone turns (a scripted model calls a built-in tool whose grant requires
approval), starts a real ``celery worker`` process on a fresh queue, then approves the
requests one at a time: each decision commits, ``approval_decided`` queues the resume,
the worker claims the turn and re-runs the approved call. Measured per approval:

- ``resume``: decision committed (an ``approval_decided`` receiver connected ahead of the
  runtime's, so before the resume task is even queued) -> the worker's
  ``tool.approval.recheck`` audit event (the approved call running again);
- ``complete``: decision committed -> the turn's ``agent.turn.completed`` event.

The next decision waits for the previous turn to complete (latency, not queueing).
Run on PostgreSQL + Redis::

    DEBUG=true DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_approvals \\
        CELERY_BROKER_URL=redis://127.0.0.1:6379/2 .venv/bin/python bench/approval_resume.py --json

JSON keys ``resume_p50_ms``, ``resume_p95_ms`` (target p95 <= 1000 ms),
``complete_p50_ms``, ``complete_p95_ms``, ``approvals``, ``database``, ``broker``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, percentile, print_table, setup_django  # noqa: E402

SCRIPT = {
    "responses": [
        {"tool_calls": [{"name": "notify", "arguments": {"text": "big"}}]},
        {"text": "Notified."},
    ]
}


def build(project_slug: str):
    """A project, a requester and an approver, a scripted endpoint and an agent whose
    ``notify`` grant requires approval."""
    from agents.services import agent_create, model_endpoint_create, tool_create
    from controlplane.models import Membership, Role, User
    from controlplane.services import project_create

    requester = User.objects.create_user(username=f"req-{project_slug}")
    approver = User.objects.create_user(username=f"appr-{project_slug}")
    project = project_create(slug=project_slug, name="Bench", creator=requester)
    Membership.objects.create(user=approver, project=project, role=Role.APPROVER)
    tool_create(
        project=project,
        name="notify",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    )
    model_endpoint_create(
        project=project,
        name="scripted",
        kind="scripted",
        default_model="scripted-1",
        price_overrides={"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}},
        script=SCRIPT,
    )
    agent = agent_create(
        project=project,
        slug="bench",
        config={
            "model_endpoint": "scripted",
            "model_name": "scripted-1",
            "instructions": "You notify.",
            "max_output_tokens": 64,
            "grants": [{"tool": "notify", "rules": [{"when": "true", "then": "require_approval"}]}],
        },
        actor=requester,
    )
    return requester, approver, agent


def start_worker(queue: str, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({"DEBUG": "true", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "warning"})
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "celery"),
            "-A",
            "controlplane",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--queues={queue}",
            f"--hostname={queue}@bench",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(log_path, "w"),  # noqa: SIM115 - the worker's own log file
        stderr=subprocess.STDOUT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--approvals", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout-seconds", type=float, default=120.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    backend = setup_django()
    from celery import current_app
    from django.conf import settings

    from agents.models import AgentTurn
    from agents.runtime import run_agent_turn
    from approvals.services import approval_decide
    from governance.approval_port import approval_decided
    from governance.models import AuditEvent

    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    requester, approver, agent = build(f"bench-{uuid.uuid4().hex[:6]}")
    total = args.warmup + args.approvals
    parked = []
    for _ in range(total):
        result = run_agent_turn(agent_version=agent.active_version, input="go", user=requester)
        assert result.status == "parked", result.reason
        parked.append(result)

    # Time the commit ahead of the runtime's receiver (which queues the resume).
    committed_at: dict[int, float] = {}

    def stamp(sender, *, outcome, **_kwargs):
        committed_at[outcome.request_id] = time.time()

    approval_decided.disconnect(dispatch_uid="agents.resume_parked_turn")
    approval_decided.connect(stamp, dispatch_uid="bench.stamp", weak=False)
    from agents.runtime.resume import on_approval_decided

    approval_decided.connect(on_approval_decided, dispatch_uid="agents.resume_parked_turn")

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    current_app.conf.task_default_queue = queue
    log_path = Path(tempfile.mkdtemp(prefix="cp-bench-worker-")) / "worker.log"
    worker = start_worker(queue, log_path)
    resume_ms: list[float] = []
    complete_ms: list[float] = []
    try:
        for index, turn in enumerate(parked):
            [request_id] = turn.approval_request_ids
            approval_decide(request_id=request_id, user=approver, verdict="approve")
            deadline = time.monotonic() + args.timeout_seconds
            while AgentTurn.objects.filter(pk=turn.turn_id, status="completed").count() == 0:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"turn {turn.turn_id} did not complete; see {log_path}")
                time.sleep(0.002)
            if index < args.warmup:
                continue
            events = dict(
                AuditEvent.objects.filter(
                    data__turn_id=turn.turn_id,
                    action__in=["tool.approval.recheck", "agent.turn.completed"],
                ).values_list("action", "occurred_at")
            )
            start = committed_at[request_id]
            resume_ms.append((events["tool.approval.recheck"].timestamp() - start) * 1000)
            complete_ms.append((events["agent.turn.completed"].timestamp() - start) * 1000)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    resume_ms.sort()
    complete_ms.sort()
    result = {
        "database": backend,
        "broker": broker,
        "approvals": len(resume_ms),
        "resume_p50_ms": round(percentile(resume_ms, 0.50), 1),
        "resume_p95_ms": round(percentile(resume_ms, 0.95), 1),
        "resume_max_ms": round(resume_ms[-1], 1) if resume_ms else 0.0,
        "complete_p50_ms": round(percentile(complete_ms, 0.50), 1),
        "complete_p95_ms": round(percentile(complete_ms, 0.95), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = [(key, str(value)) for key, value in result.items()]
    print_table(f"Approval resume ({backend} + {broker}, {len(resume_ms)} approvals)", rows)


if __name__ == "__main__":
    main()
