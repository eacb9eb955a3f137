"""The flow scenarios on real Celery worker processes (the embedded broker on SQLite,
Redis with PostgreSQL), including a worker killed mid-step and duplicate deliveries."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest
from django.conf import settings as django_settings
from kombu import Connection

from agents.models import AgentTurn
from approvals.models import ApprovalRequest
from flows import engine
from flows.models import Run, StepRun
from flows.tasks import step_execute
from governance.models import CostEntry

from . import test_engine as scenarios
from .conftest import Worker, start_worker, wait_for, wait_run

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def shared_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """One worker for the scenario tests of this module (start-up is the slow part)."""
    queue = f"flows-{uuid.uuid4().hex[:8]}"
    previous = getattr(django_settings, "FLOWS_TASK_QUEUE", "")
    django_settings.FLOWS_TASK_QUEUE = queue
    worker = Worker(queue, tmp_path_factory.mktemp("worker") / "worker.log")
    yield worker
    worker.stop()
    django_settings.FLOWS_TASK_QUEUE = previous


def start(project, admin_user, source, **input_):
    return scenarios.start(project, admin_user, source, **input_)


def test_a_pipeline_runs_on_a_real_worker(project, admin_user, world, tool_server, shared_worker):
    run = wait_run(
        start(project, admin_user, scenarios.PIPELINE, topic="owls"), worker=shared_worker
    )
    assert run.status == "succeeded", run.error
    assert run.output == {"draft": "written", "effect": 1, "shout": "WRITTEN"}


def test_a_map_of_20_items_fans_out_and_in_on_a_real_worker(
    project, admin_user, world, shared_worker
):
    items = [f"x{i}" for i in range(20)]
    run = wait_run(start(project, admin_user, scenarios.MAP, items=items), worker=shared_worker)
    assert run.status == "succeeded", run.error
    each = StepRun.objects.get(run=run, step_id="each", item_index=-1)
    assert each.output == [{"text": f"item {i}: x{i}"} for i in range(20)]


@pytest.mark.parametrize(
    ("size", "chosen", "skipped"), [(500, "heavy", "light"), (5, "light", "heavy")]
)
def test_a_router_picks_either_branch_on_a_real_worker(
    project, admin_user, world, shared_worker, size, chosen, skipped
):
    run = wait_run(
        start(project, admin_user, scenarios.ROUTER_RULES, size=size), worker=shared_worker
    )
    assert run.status == "succeeded", run.error
    steps = scenarios.steps_of(run)
    assert (steps[chosen].status, steps[skipped].status) == ("succeeded", "skipped")


def test_a_router_agent_chooses_on_a_real_worker(project, admin_user, world, shared_worker):
    run = wait_run(
        start(project, admin_user, scenarios.ROUTER_AGENT, what="a huge thing"),
        worker=shared_worker,
    )
    steps = scenarios.steps_of(run)
    assert (run.status, steps["heavy"].status, steps["light"].status) == (
        "succeeded",
        "succeeded",
        "skipped",
    )


def test_an_approval_gate_resumes_on_a_real_worker(
    project, admin_user, world, tool_server, shared_worker
):
    run = start(project, admin_user, scenarios.APPROVAL, title="Q3")
    gate = wait_for(
        lambda: StepRun.objects.filter(run=run, step_id="gate", status="waiting_approval").first(),
        worker=shared_worker,
    )
    [request_id] = gate.approval_request_ids
    assert ApprovalRequest.objects.get(pk=request_id).status == "pending"
    # Recorded in the gate's transaction: nothing else of the run is running or queued.
    assert Run.objects.get(pk=run.pk).status == "waiting_approval"
    scenarios.decide(request_id, "approved")
    scenarios.decide(request_id, "approved")
    run = wait_run(run, worker=shared_worker)
    assert run.status == "succeeded", run.error
    assert len(tool_server.effects) == 1


def test_a_supervisor_delegates_on_a_real_worker(project, admin_user, world, shared_worker):
    source = "steps:\n  - {id: lead, kind: agent, agent: boss, input: start}\n"
    run = wait_run(start(project, admin_user, source), worker=shared_worker)
    assert (run.status, run.output) == ("succeeded", {"lead": "boss done"}), run.error


def test_compensations_run_in_reverse_order_on_a_real_worker(
    project, admin_user, world, tool_server, shared_worker
):
    run = wait_run(start(project, admin_user, scenarios.SAGA), worker=shared_worker)
    assert run.status == "failed"
    ops = [r["body"].get("op") for r in tool_server.requests]
    assert ops == ["reserve", "charge", "ship", "refund", "unreserve"]


def test_retries_wait_their_backoff_and_stop_at_max_attempts_on_a_real_worker(
    project, admin_user, world, tool_server, shared_worker
):
    run = wait_run(start(project, admin_user, scenarios.RETRIES), worker=shared_worker)
    assert run.status == "failed"
    steps = scenarios.steps_of(run)
    flaky, broken = steps["flaky"], steps["broken"]
    assert [a["status"] for a in flaky.attempts] == ["failed", "failed", "succeeded"]
    assert (broken.status, broken.attempt) == ("failed", 2)
    # The recorded attempt times are at least the planned backoff apart (2 s, then 3 s).
    for step in (flaky, broken):
        for before, after in zip(step.attempts, step.attempts[1:], strict=False):
            gap = (
                datetime.fromisoformat(after["started_at"])
                - datetime.fromisoformat(before["finished_at"])
            ).total_seconds()
            assert gap >= before["retry_in_seconds"] - engine.EARLY_TOLERANCE.total_seconds()
            assert gap >= before["retry_in_seconds"] * 0.5


def test_fallback_agent_on_a_real_worker(project, admin_user, world, shared_worker):
    from agents.services import agent_create

    from .conftest import scripted_endpoint

    endpoint = scripted_endpoint(project, "ep-offline", {"responses": [{"text": "x"}]})
    endpoint.kind = "openai_compatible"
    endpoint.base_url = "http://127.0.0.1:9/v1"
    endpoint.script = {}
    endpoint.save()
    agent_create(
        project=project,
        slug="offline",
        config={"model_endpoint": "ep-offline", "model_name": "scripted-1", "instructions": "x"},
        actor=admin_user,
    )
    source = (
        "steps:\n  - {id: answer, kind: agent, agent: offline, fallback_agent: writer, "
        "input: hello, retries: {max_attempts: 1}}\n"
    )
    run = wait_run(start(project, admin_user, source), worker=shared_worker)
    assert (run.status, run.output) == ("succeeded", {"answer": "written"}), run.error


# --- crashes and duplicates ---------------------------------------------------------------

CRASH = """
steps:
  - {id: before, kind: tool, tool: echo, agent: operator, arguments: {text: first}}
  - {id: pay, kind: tool, tool: %s, agent: operator, depends_on: [before], arguments: {op: pay}}
  - id: after
    kind: tool
    tool: echo
    agent: operator
    depends_on: [pay]
    arguments: {text: "effect {{ steps.pay.effect }}"}
"""


def kill_mid_pay_and_finish(project, admin_user, tool_server, tmp_path, settings, source, tool):
    """Start ``source`` on a worker, SIGKILL the worker while the ``pay`` step's HTTP call
    is held by the tool server (before its side effect for ``hold-before``, after it for
    ``hold-after``), then let a new worker and the sweep finish the run. Returns the final
    run and the pay step run as it was when the worker died."""
    # Short, so the sweep requeues the killed worker's step soon; 5 s, not 2: on a loaded
    # 2-core machine (SQLite) a 2 s lease renewed every 0.67 s expired under the new worker.
    lease = {"FLOWS_LEASE_SECONDS": "5"}
    first = start_worker(tmp_path, settings, **lease)
    second = None
    try:
        run = start(project, admin_user, source)
        assert tool_server.held.wait(120), first.output()
        pay = StepRun.objects.get(run=run, step_id="pay")
        assert pay.status == "running" and pay.lease_owner
        first.kill()
        tool_server.release()
        if tool == "hold-after":
            assert len(tool_server.effects) == 1  # happened before the crash
        else:
            time.sleep(0.5)
            assert not tool_server.effects  # the killed caller never completed it

        settings.FLOWS_TASK_QUEUE = first.queue
        second = Worker(first.queue, tmp_path / "second.log", **lease)

        def finished():
            engine.sweep()  # what beat does: requeue the step whose lease expired
            fresh = Run.objects.get(pk=run.pk)
            return fresh if fresh.is_final else None

        run = wait_for(finished, worker=second, every=0.5)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    return run, pay


@pytest.mark.parametrize("tool", ["hold-before", "hold-after"])
def test_a_worker_killed_mid_step_is_replaced_and_the_side_effect_happens_once(
    project, admin_user, world, tool_server, tmp_path, settings, tool
):
    run, _ = kill_mid_pay_and_finish(
        project, admin_user, tool_server, tmp_path, settings, CRASH % tool, tool
    )
    assert run.status == "succeeded", run.error
    pay = StepRun.objects.get(run=run, step_id="pay")
    statuses = [a["status"] for a in pay.attempts]
    # The killed attempt's lease expired; on a loaded machine the new worker's first
    # attempt may lose its short (5 s) lease too before it succeeds: never a failure.
    assert statuses[-1] == "succeeded"
    assert set(statuses[:-1]) == {"lease_expired"}, statuses
    assert pay.attempt == len(statuses)
    pay_requests = [r for r in tool_server.requests if r["body"].get("op") == "pay"]
    assert len(pay_requests) >= 2
    assert len({r["key"] for r in pay_requests}) == 1  # the same idempotency key
    assert len(tool_server.effects) == 1  # the side effect happened exactly once
    assert run.output == {"after": {"text": "effect 1"}}
    tool_entries = CostEntry.objects.filter(run_id=str(run.pk), kind="tool")
    assert tool_entries.count() == 1  # no duplicate cost entry
    assert run.cost_usd == sum(e.cost_usd for e in CostEntry.objects.filter(run_id=str(run.pk)))


def test_a_step_task_delivered_three_times_runs_once(
    project, admin_user, world, tool_server, tmp_path, settings
):
    queue = f"flows-{uuid.uuid4().hex[:8]}"
    settings.FLOWS_TASK_QUEUE = queue
    run = start(
        project, admin_user, "steps:\n  - {id: s, kind: tool, tool: effect, agent: operator}\n"
    )
    step_run = StepRun.objects.get(run=run, step_id="s")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        for _ in range(2):
            step_execute.apply_async(args=[step_run.pk], connection=conn, queue=queue)
    worker = Worker(queue, tmp_path / "worker.log")
    try:
        run = wait_run(run, worker=worker)
        # Let the duplicates be consumed too.
        time.sleep(2)
    finally:
        worker.stop()
    assert run.status == "succeeded"
    assert len(tool_server.requests) == 1
    assert StepRun.objects.get(pk=step_run.pk).attempt == 1
    assert "step_execute" in worker.log_path.read_text()


def test_a_step_past_its_timeout_fails_with_kind_timeout(
    project, admin_user, world, tool_server, shared_worker
):
    source = (
        "steps:\n  - {id: slow, kind: tool, tool: hold-before, agent: operator, "
        "timeout_seconds: 1, retries: {max_attempts: 1}}\n"
    )
    try:
        run = wait_run(start(project, admin_user, source), worker=shared_worker)
    finally:
        tool_server.release()
    slow = StepRun.objects.get(run=run, step_id="slow")
    assert (run.status, slow.status, slow.error_kind) == ("failed", "failed", "timeout")
    assert "longer than 1 s" in slow.error


SAGA_HELD = """
steps:
  - id: reserve
    kind: tool
    tool: effect
    agent: operator
    arguments: {op: reserve}
    on_failure: [{id: unreserve, kind: tool, tool: effect, agent: operator, arguments: {op: unreserve}}]
  - id: pay
    kind: tool
    tool: hold-after
    agent: operator
    depends_on: [reserve]
    arguments: {op: pay}
    on_failure: [{id: refund, kind: tool, tool: effect, agent: operator, arguments: {op: refund}}]
  - {id: ship, kind: tool, tool: effect, agent: operator, depends_on: [pay], arguments: {op: ship}}
"""


def test_cancel_lets_the_running_step_finish_skips_the_rest_and_compensates(
    project, admin_user, world, tool_server, shared_worker
):
    from flows.services import run_cancel

    run = start(project, admin_user, SAGA_HELD)
    assert tool_server.held.wait(120), shared_worker.output()
    run_cancel(run=run, actor=admin_user)
    assert Run.objects.get(pk=run.pk).status == "running"  # pay is still running
    tool_server.release()
    run = wait_run(run, worker=shared_worker)
    assert run.status == "cancelled"
    steps = scenarios.steps_of(run)
    assert (steps["pay"].status, steps["ship"].status) == ("succeeded", "cancelled")
    ops = [r["body"].get("op") for r in tool_server.requests]
    assert ops == ["reserve", "pay", "refund", "unreserve"]


def test_heartbeats_keep_the_lease_of_a_step_running_longer_than_the_lease(
    project, admin_user, world, tool_server, tmp_path, settings
):
    # A lease of 3 s renewed every second; a busy 2-core machine can delay one beat.
    worker = start_worker(tmp_path, settings, FLOWS_LEASE_SECONDS="3")
    try:
        run = start(
            project,
            admin_user,
            "steps:\n  - {id: long, kind: tool, tool: hold-after, agent: operator}\n",
        )
        assert tool_server.held.wait(120), worker.output()
        first_expiry = StepRun.objects.get(run=run).lease_expires_at
        deadline = time.monotonic() + 8  # over two leases
        while time.monotonic() < deadline:
            assert engine.sweep()["expired"] == 0
            time.sleep(0.3)
        assert StepRun.objects.get(run=run).lease_expires_at > first_expiry  # extended
        tool_server.release()
        run = wait_run(run, worker=worker)
    finally:
        worker.stop()
    step = StepRun.objects.get(run=run)
    assert (run.status, step.attempt, [a["status"] for a in step.attempts]) == (
        "succeeded",
        1,
        ["succeeded"],
    )


# --- cancel at the next call boundary -------------------------------------------------------

AGENT_HELD = """
steps:
  - id: reserve
    kind: tool
    tool: effect
    agent: operator
    arguments: {op: reserve}
    on_failure: [{id: unreserve, kind: tool, tool: effect, agent: operator, arguments: {op: unreserve}}]
  - {id: work, kind: agent, agent: worker-bee, depends_on: [reserve], input: go}
"""


def test_cancel_stops_a_running_agent_step_at_its_next_call(
    project, admin_user, world, tool_server, shared_worker
):
    from flows.services import run_cancel
    from governance.models import AuditEvent

    from .conftest import make_agent

    make_agent(
        project,
        admin_user,
        "worker-bee",
        script={
            "responses": [
                {
                    "tool_calls": [
                        {"name": "hold-before", "arguments": {"op": "first"}},
                        {"name": "effect", "arguments": {"op": "second"}},
                    ]
                },
                {"tool_calls": [{"name": "effect", "arguments": {"op": "third"}}]},
                {"text": "all done"},
            ]
        },
        grants=[{"tool": "hold-before"}, {"tool": "effect"}],
    )
    run = start(project, admin_user, AGENT_HELD)
    assert tool_server.held.wait(120), shared_worker.output()  # the first call is held
    run_cancel(run=run, actor=admin_user)
    assert Run.objects.get(pk=run.pk).status == "running"  # the agent step still runs
    tool_server.release()
    run = wait_run(run, worker=shared_worker)
    assert run.status == "cancelled", run.error
    work = StepRun.objects.get(run=run, step_id="work")
    assert (work.status, work.error) == ("cancelled", "the run was cancelled")
    # The held call finished; the later ones never reached the server; compensated.
    ops = [r["body"].get("op") for r in tool_server.requests]
    assert ops == ["reserve", "first", "unreserve"]
    stopped = AuditEvent.objects.get(action="agent.turn.stopped", data__run_id=str(run.pk))
    assert (stopped.data["boundary"], stopped.data["tool"]) == ("tool", "effect")
    assert stopped.actor_kind == "agent_version"
    assert AuditEvent.objects.filter(
        action="agent.turn.failed", data__run_id=str(run.pk), data__rule="cancelled"
    ).exists()


# --- an agent step re-run after a crash keeps its tool calls' idempotency keys -------------

AGENT_CRASH = """
steps:
  - {id: before, kind: tool, tool: echo, agent: operator, arguments: {text: first}}
  - {id: pay, kind: agent, agent: payer, depends_on: [before], input: pay}
"""


@pytest.mark.parametrize("tool", ["hold-before", "hold-after"])
def test_an_agent_step_rerun_after_its_worker_was_killed_sends_the_same_keys(
    project, admin_user, world, tool_server, tmp_path, settings, tool
):
    from .conftest import make_agent

    make_agent(
        project,
        admin_user,
        "payer",
        script={
            "responses": [
                {"tool_calls": [{"name": "echo", "arguments": {"text": "look"}}]},
                {"tool_calls": [{"name": tool, "arguments": {"op": "pay"}}]},
                {"text": "paid"},
            ]
        },
        grants=[{"tool": "echo"}, {"tool": tool}],
    )
    run, held = kill_mid_pay_and_finish(
        project, admin_user, tool_server, tmp_path, settings, AGENT_CRASH, tool
    )
    # The killed attempt's turn: the step's first (the re-run made another).
    first_turn = (
        AgentTurn.objects.filter(run_id=str(run.pk), step_id=str(held.pk)).order_by("pk").first()
    )
    assert run.status == "succeeded", run.error
    assert run.output == {"pay": "paid"}
    pay = StepRun.objects.get(run=run, step_id="pay")
    assert [a["status"] for a in pay.attempts] == ["lease_expired", "succeeded"]
    assert pay.turn_id != first_turn.pk  # the step ran its agent turn again
    pay_requests = [r for r in tool_server.requests if r["body"].get("op") == "pay"]
    assert len(pay_requests) == 2
    assert len({r["key"] for r in pay_requests}) == 1  # the same idempotency key
    assert len(tool_server.effects) == 1  # the side effect happened exactly once
    # No cost entry twice for one call (the ledger is idempotent by call id).
    call_ids = list(CostEntry.objects.filter(run_id=str(run.pk)).values_list("call_id", flat=True))
    assert len(call_ids) == len(set(call_ids))
    assert not CostEntry.objects.filter(run_id=str(run.pk), kind="tool", step_id=str(pay.pk))
