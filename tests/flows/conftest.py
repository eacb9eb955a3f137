"""Fixtures for flows: a scripted world (endpoints, agents, tools), an HTTP tool server, an
in-process task pump for fast engine tests, and real Celery worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from agents.services import agent_create, model_endpoint_create, tool_create
from flows import engine
from flows.models import Run, StepRun
from tests import procs
from tests.procs import wait_for

from .tool_server import ToolServer

PRICES = {"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}}
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
ANY_SCHEMA = {"type": "object"}
HTTP_TOOLS = {
    "effect": "/effect",
    "flaky": "/fail/2",
    "broken": "/always-fail",
    "hold-after": "/hold-after",
    "hold-before": "/hold-before",
}


def scripted_endpoint(project, name, script):
    return model_endpoint_create(
        project=project,
        name=name,
        kind="scripted",
        default_model="scripted-1",
        price_overrides=PRICES,
        script=script,
    )


def make_agent(project, actor, slug, *, script, grants=(), **config):
    scripted_endpoint(project, f"ep-{slug}", script)
    return agent_create(
        project=project,
        slug=slug,
        config={
            "model_endpoint": f"ep-{slug}",
            "model_name": "scripted-1",
            "instructions": "You help.",
            "max_output_tokens": 256,
            "grants": list(grants),
            **config,
        },
        actor=actor,
    )


@pytest.fixture
def tool_server():
    server = ToolServer()
    yield server
    server.stop()


@pytest.fixture
def world(project, admin_user, tool_server):
    """Tools (built-in echo, HTTP tools on ``tool_server``) and agents: ``operator`` (granted
    every tool: tool steps run as it), ``writer`` (answers with text), ``chooser`` (answers
    a branch name), ``boss`` (delegates to ``writer``)."""
    tool_create(
        project=project, name="echo", kind="builtin", builtin_name="echo", input_schema=TEXT_SCHEMA
    )
    for name, path in HTTP_TOOLS.items():
        tool_create(
            project=project,
            name=name,
            kind="http",
            http_url=tool_server.url + path,
            http_method="POST",
            input_schema=ANY_SCHEMA,
            timeout_seconds=60,
            cost_per_call_usd="0.01",
        )
    grants = [{"tool": name} for name in ["echo", *HTTP_TOOLS]]
    agents = {
        "operator": make_agent(
            project, admin_user, "operator", script={"responses": [{"text": "ok"}]}, grants=grants
        ),
        "writer": make_agent(
            project,
            admin_user,
            "writer",
            script={
                "responses": [{"text": "written"}],
                "branches": [
                    {"input_contains": "from boss", "responses": [{"text": "writer says hi"}]}
                ],
            },
        ),
        "chooser": make_agent(
            project,
            admin_user,
            "chooser",
            script={
                "responses": [{"text": "small"}],
                "branches": [{"input_contains": "huge", "responses": [{"text": "Big."}]}],
            },
        ),
        "boss": make_agent(
            project,
            admin_user,
            "boss",
            script={
                "responses": [
                    {
                        "tool_calls": [
                            {"name": "delegate_writer", "arguments": {"input": "hi from boss"}}
                        ]
                    },
                    {"text": "boss done"},
                ]
            },
            delegates=["writer"],
        ),
    }
    return agents


class Pump:
    """Runs the engine's queued tasks in this process, in order (fast engine tests; the
    real-worker tests use ``worker``). Retry delays are skipped but still recorded."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, int, float | None]] = []

    def __call__(self, task_name: str, step_run_id: int, countdown: float | None = None) -> None:
        self.queue.append((task_name, step_run_id, countdown))

    def run(self, limit: int = 2000) -> int:
        done = 0
        while self.queue and done < limit:
            task_name, step_run_id, countdown = self.queue.pop(0)
            if countdown:
                StepRun.objects.filter(pk=step_run_id).update(next_attempt_at=None)
            getattr(engine, task_name)(step_run_id=step_run_id)
            done += 1
        return done


@pytest.fixture
def pump(monkeypatch):
    pump = Pump()
    monkeypatch.setattr(engine, "_queue", pump)
    return pump


# --- real workers --------------------------------------------------------------------------


class Worker(procs.Worker):
    """A real worker (:class:`tests.procs.Worker`) whose engine queues flow steps on the queue
    it consumes (``FLOWS_TASK_QUEUE``), logging at info."""

    def __init__(self, queue: str, log_path: Path, **env: str) -> None:
        super().__init__(queue, log_path, FLOWS_TASK_QUEUE=queue, LOG_LEVEL="info", **env)


def start_worker(tmp_path, settings_fixture, **env) -> Worker:
    """A :class:`Worker` on a fresh queue that this test's engine (``settings_fixture``, the
    pytest-django ``settings``) queues its tasks on."""
    queue = procs.unique_queue("flows")
    settings_fixture.FLOWS_TASK_QUEUE = queue
    return Worker(queue, tmp_path / f"{queue}.log", **env)


@pytest.fixture
def worker(tmp_path, settings):
    """One real worker for this test; the engine's tasks go to its queue."""
    w = start_worker(tmp_path, settings)
    yield w
    w.stop()


def wait_run(run: Run, *, worker: Worker | None = None, timeout: float = 120) -> Run:
    """Wait until ``run`` is final and return it fresh."""

    def final():
        fresh = Run.objects.get(pk=run.pk)
        return fresh if fresh.is_final else None

    return wait_for(final, timeout=timeout, worker=worker)


__all__ = ["settings", "wait_for"]
