"""Benchmark: the flow engine's overhead per step vs raw Celery tasks on the same broker.

N no-op steps (the built-in ``echo`` tool, through the governed call path, as a tool step)

- as one wide ``map`` (N items, ``max_parallel`` N) and
- as one long pipeline (N steps, each depending on the previous),

vs N raw Celery tasks that only append a line to a file: N published at once (wide) and a
chain of N where each task publishes the next (long). Same broker, same worker processes
(``--concurrency`` prefork children, default 2).

Reported per broker (``embedded``: kombu's SQLAlchemy transport on SQLite; ``redis``),
for each shape: steps per second (N / (last step finished - run created)), the overhead
ratio vs raw Celery (flow seconds per step / raw seconds per step), and the dispatch
latency p50 / p95 (a step's claim by a worker - when its task was queued; raw: task start
- publish). JSON keys per broker: ``steps_per_s``, ``ratio_vs_celery``,
``dispatch_p95_ms`` (the wide map), and the same under ``pipeline``.

Issue targets on Redis + PostgreSQL: overhead <= 1.5x raw Celery, >= 300 steps/s on 2
cores, dispatch p95 <= 25 ms.

Also reported (``per_step``): the queries and durable commits one tool step costs (a
20-step pipeline run in-process with Celery eager, counted from the captured queries)
and the database's durable write latency (``bench.common.durable_write_latency_ms``).

    DEBUG=true DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_flows \\
        .venv/bin/python bench/flow_overhead.py --brokers embedded,redis \\
        --redis-url redis://127.0.0.1:6379/1 --json

The worker processes import this module (``--include bench.flow_overhead``) for the raw
tasks; nothing runs at import but their registration.
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
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import shared_task  # noqa: E402


@shared_task(name="bench.flow_overhead.noop", ignore_result=True)
def noop(path: str, published: float) -> None:
    """A raw task: append ``published start end`` to ``path``."""
    started = time.time()
    with open(path, "a") as handle:
        handle.write(f"{published} {started} {time.time()}\n")


@shared_task(name="bench.flow_overhead.noop_chain", ignore_result=True, bind=True)
def noop_chain(self, path: str, published: float, remaining: int, queue: str) -> None:
    """A raw task that appends its line, then publishes the next of the chain."""
    started = time.time()
    with open(path, "a") as handle:
        handle.write(f"{published} {started} {time.time()}\n")
    if remaining > 1:
        noop_chain.apply_async(args=[path, time.time(), remaining - 1, queue], queue=queue)


def _lines(path: Path) -> list[tuple[float, float, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append(tuple(float(p) for p in parts))
    return rows


def _wait_lines(path: Path, count: int, timeout: float = 600) -> list[tuple[float, float, float]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _lines(path)
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise RuntimeError(f"only {len(_lines(path))} of {count} raw tasks ran")


def _stats(durations_s: list[float]) -> dict[str, float]:
    from bench.common import percentile

    values = sorted(d * 1000 for d in durations_s)
    return {
        "p50_ms": round(percentile(values, 0.5), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
    }


def raw_wide(n: int, queue: str, workdir: Path) -> dict:
    path = workdir / f"raw-wide-{uuid.uuid4().hex[:6]}.txt"
    first = time.time()
    for _ in range(n):
        noop.apply_async(args=[str(path), time.time()], queue=queue)
    rows = _wait_lines(path, n)
    elapsed = max(r[2] for r in rows) - first
    return {"seconds": elapsed, "dispatch": _stats([r[1] - r[0] for r in rows])}


def raw_long(n: int, queue: str, workdir: Path) -> dict:
    path = workdir / f"raw-long-{uuid.uuid4().hex[:6]}.txt"
    first = time.time()
    noop_chain.apply_async(args=[str(path), time.time(), n, queue], queue=queue)
    rows = _wait_lines(path, n)
    elapsed = max(r[2] for r in rows) - first
    return {"seconds": elapsed, "dispatch": _stats([r[1] - r[0] for r in rows])}


def build_world():
    from agents.services import agent_create, model_endpoint_create, tool_create
    from controlplane.services import project_create
    from tests.factories import UserFactory

    user = UserFactory(username=f"bench-{uuid.uuid4().hex[:6]}")
    project = project_create(slug=f"bench-{uuid.uuid4().hex[:6]}", name="Bench", creator=user)
    model_endpoint_create(
        project=project,
        name="scripted",
        kind="scripted",
        default_model="scripted-1",
        price_overrides={"scripted-1": {"input_per_mtok": "0", "output_per_mtok": "0"}},
        script={"responses": [{"text": "ok"}]},
    )
    tool_create(
        project=project,
        name="echo",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    )
    agent_create(
        project=project,
        slug="op",
        config={
            "model_endpoint": "scripted",
            "model_name": "scripted-1",
            "instructions": "x",
            "grants": [{"tool": "echo"}],
        },
        actor=user,
    )
    return project, user


def pipeline_definition(n: int) -> dict:
    """A flow of ``n`` ``echo`` tool steps, each depending on the previous."""
    return {
        "steps": [
            {
                "id": f"s{i}",
                "kind": "tool",
                "tool": "echo",
                "agent": "op",
                "arguments": {"text": "x"},
                **({"depends_on": [f"s{i - 1}"]} if i else {}),
            }
            for i in range(n)
        ]
    }


def flow_shape(project, user, n: int, shape: str) -> dict:
    from flows.models import Run, StepRun
    from flows.services import flow_create, run_start

    if shape == "map":
        definition = {
            "steps": [
                {
                    "id": "each",
                    "kind": "map",
                    "over": "input['items']",
                    "max_parallel": min(n, 1000),
                    "step": {
                        "kind": "tool",
                        "tool": "echo",
                        "agent": "op",
                        "arguments": {"text": "item {{ item }}"},
                    },
                }
            ]
        }
    else:
        definition = pipeline_definition(n)
    flow = flow_create(
        project=project, slug=f"{shape}-{uuid.uuid4().hex[:6]}", source=definition, actor=user
    )
    run = run_start(flow=flow, input={"items": list(range(n))}, user=user, trigger="api")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run.pk)
        if run.is_final:
            break
        time.sleep(0.1)
    if run.status != "succeeded":
        raise RuntimeError(f"{shape} run ended {run.status}: {run.error}")
    steps = StepRun.objects.filter(run=run, kind="tool")
    latencies = []
    last = run.created_at
    for step in steps:
        attempt = step.attempts[-1]
        latencies.append(
            (
                datetime.fromisoformat(attempt["started_at"])
                - datetime.fromisoformat(attempt["queued_at"])
            ).total_seconds()
        )
        last = max(last, datetime.fromisoformat(attempt["finished_at"]))
    elapsed = (last - run.created_at).total_seconds()
    return {"seconds": elapsed, "dispatch": _stats(latencies), "steps": steps.count()}


def step_costs(project, user, n: int = 20) -> dict:
    """Queries and durable commits per step of an ``n``-step pipeline of tool steps, run
    in this process (Celery eager: each step's task runs when the previous step's record
    commits), counted from Django's captured queries. Deterministic, unlike the timings:
    the measure of what one step costs the database."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.common import commits_in
    from controlplane.celery import app
    from flows.models import Run
    from flows.services import flow_create, run_start

    definition = pipeline_definition(n)
    flow = flow_create(
        project=project, slug=f"costs-{uuid.uuid4().hex[:6]}", source=definition, actor=user
    )
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with CaptureQueriesContext(connection) as captured:
            run = run_start(flow=flow, input={}, user=user, trigger="api")
    finally:
        app.conf.task_always_eager = eager
    run = Run.objects.get(pk=run.pk)
    if run.status != "succeeded":
        raise RuntimeError(f"step cost run ended {run.status}: {run.error}")
    # Not the transaction markers (SQLite's is ``BEGIN IMMEDIATE``).
    queries = [q for q in captured.captured_queries if not q["sql"].startswith(("BEGIN", "COMMIT"))]
    return {
        "queries_per_step": round(len(queries) / n, 1),
        "commits_per_step": round(commits_in(captured.captured_queries) / n, 2),
    }


def start_worker(broker: str, queue: str, concurrency: int, log: Path) -> subprocess.Popen:
    env = dict(
        os.environ,  # DATABASE_URL: the scratch database setup_django chose
        CELERY_BROKER_URL=broker,
        FLOWS_TASK_QUEUE=queue,
        LOG_LEVEL="warning",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "celery"),
            "-A",
            "controlplane",
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--include=bench.flow_overhead",
            f"--queues={queue}",
            f"--hostname={queue}@bench",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115 - the worker's log, closed with the process
        stderr=subprocess.STDOUT,
    )


def bench_broker(name: str, broker: str, n: int, concurrency: int, workdir: Path) -> dict:
    """Measure on ``broker`` (this process publishes through it: CELERY_BROKER_URL)."""
    from django.conf import settings

    from bench.common import durable_write_latency_ms

    queue = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    settings.FLOWS_TASK_QUEUE = queue
    project, user = build_world()
    costs = {**step_costs(project, user), "durable_write": durable_write_latency_ms()}
    worker = start_worker(broker, queue, concurrency, workdir / f"worker-{name}.log")
    try:
        _wait_lines_ready(queue, workdir)
        # Warm-up: imports, caches, connections in every worker child.
        flow_shape(project, user, 20, "map")
        raw_wide(50, queue, workdir)
        results = {}
        raw = {"map": raw_wide(n, queue, workdir), "pipeline": raw_long(n, queue, workdir)}
        for shape in ("map", "pipeline"):
            flow = flow_shape(project, user, n, shape)
            results[shape] = {
                "steps_per_s": round(n / flow["seconds"], 1),
                "ratio_vs_celery": round(flow["seconds"] / raw[shape]["seconds"], 2),
                "dispatch_p50_ms": flow["dispatch"]["p50_ms"],
                "dispatch_p95_ms": flow["dispatch"]["p95_ms"],
                "raw_celery_steps_per_s": round(n / raw[shape]["seconds"], 1),
                "raw_celery_dispatch_p50_ms": raw[shape]["dispatch"]["p50_ms"],
                "raw_celery_dispatch_p95_ms": raw[shape]["dispatch"]["p95_ms"],
            }
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    summary = dict(results["map"])
    summary["pipeline"] = results["pipeline"]
    summary["per_step"] = costs
    return summary


def _wait_lines_ready(queue: str, workdir: Path) -> None:
    path = workdir / f"ready-{queue}.txt"
    noop.apply_async(args=[str(path), time.time()], queue=queue)
    _wait_lines(path, 1, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=200, help="N steps per shape (pipeline <= 500)"
    )
    parser.add_argument("--brokers", default="embedded,redis")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        # One broker per process: the Celery app publishes through CELERY_BROKER_URL.
        from bench.common import setup_django

        backend = setup_django()
        workdir = Path(tempfile.mkdtemp(prefix="cp-flow-bench-"))
        result = bench_broker(
            args.child, os.environ["CELERY_BROKER_URL"], args.steps, args.concurrency, workdir
        )
        print(json.dumps({"database": backend, "result": result}))
        return

    from bench.common import print_table

    workdir = Path(tempfile.mkdtemp(prefix="cp-flow-bench-"))
    urls = {"embedded": f"sqla+sqlite:///{workdir / 'broker.sqlite'}", "redis": args.redis_url}
    report: dict = {"steps": args.steps, "concurrency": args.concurrency}
    for name in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--steps",
                str(args.steps),
                "--concurrency",
                str(args.concurrency),
            ],
            env=dict(os.environ, CELERY_BROKER_URL=urls[name]),
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"{name}: {completed.stderr[-3000:]}")
        child = json.loads(completed.stdout.strip().splitlines()[-1])
        report["database"] = child["database"]
        report[name] = child["result"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("embedded", "redis"):
        if name not in report:
            continue
        data = report[name]
        rows = []
        for shape, values in (("map", data), ("pipeline", data["pipeline"])):
            rows += [
                (f"{shape}: steps/s", f"{values['steps_per_s']}"),
                (f"{shape}: raw Celery tasks/s", f"{values['raw_celery_steps_per_s']}"),
                (f"{shape}: overhead ratio vs raw", f"{values['ratio_vs_celery']}x"),
                (
                    f"{shape}: dispatch p50 / p95",
                    f"{values['dispatch_p50_ms']} / {values['dispatch_p95_ms']} ms",
                ),
                (
                    f"{shape}: raw dispatch p50 / p95",
                    f"{values['raw_celery_dispatch_p50_ms']} / "
                    f"{values['raw_celery_dispatch_p95_ms']} ms",
                ),
            ]
        costs = data["per_step"]
        rows += [
            (
                "per step: queries / commits",
                f"{costs['queries_per_step']} / {costs['commits_per_step']}",
            ),
            ("durable write p50 (ms)", f"{costs['durable_write']['p50_ms']}"),
        ]
        title = f"{name} broker, {report['database']}, N={args.steps}, {args.concurrency} workers"
        print_table(title, rows)


if __name__ == "__main__":
    main()
