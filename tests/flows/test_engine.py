"""The engine's state machine, driven in this process (tasks pumped in order): every step
kind, retries, fallback, compensation, cancel and retry. The same scenarios run on real
workers in test_workers.py."""

from __future__ import annotations

from datetime import datetime

import pytest

from approvals.models import ApprovalRequest
from flows import engine
from flows.models import Run, Span, StepRun
from flows.services import flow_create, run_cancel, run_retry, run_start
from governance.approval_port import ApprovalOutcome, approval_decided
from governance.models import CostEntry

pytestmark = pytest.mark.django_db

PIPELINE = """
steps:
  - id: draft
    kind: agent
    agent: writer
    input: "Write about {{ input.topic }}"
  - id: store
    kind: tool
    tool: effect
    agent: operator
    arguments: {text: "{{ steps.draft }}", topic: "{{ input.topic }}"}
    depends_on: [draft]
  - id: shout
    kind: tool
    tool: echo
    agent: operator
    arguments: {text: "{{ steps.draft | upper }}"}
    next: []
    depends_on: [store]
output: {draft: "{{ steps.draft }}", effect: "{{ steps.store.effect }}", shout: "{{ steps.shout.text }}"}
"""

MAP = """
steps:
  - id: each
    kind: map
    over: "input['items']"
    max_parallel: 4
    step: {kind: tool, tool: echo, agent: operator, arguments: {text: "item {{ index }}: {{ item }}"}}
  - id: count
    kind: tool
    tool: echo
    agent: operator
    depends_on: [each]
    arguments: {text: "{{ steps.each | length }} items"}
"""

ROUTER_RULES = """
steps:
  - id: route
    kind: router
    rules: [{when: "input.size > 100", then: big}]
    default: small
    branches: {big: [heavy], small: [light]}
  - {id: heavy, kind: tool, tool: echo, agent: operator, arguments: {text: heavy}}
  - {id: light, kind: tool, tool: echo, agent: operator, arguments: {text: light}}
  - id: after-heavy
    kind: tool
    tool: echo
    agent: operator
    depends_on: [heavy]
    arguments: {text: "after"}
  - id: join
    kind: tool
    tool: echo
    agent: operator
    depends_on: [heavy, light]
    arguments: {text: "{{ (steps.heavy or steps.light).text }}"}
"""

ROUTER_AGENT = """
steps:
  - id: route
    kind: router
    agent: chooser
    input: "How large is this: {{ input.what }}?"
    branches: {big: [heavy], small: [light]}
  - {id: heavy, kind: tool, tool: echo, agent: operator, arguments: {text: heavy}}
  - {id: light, kind: tool, tool: echo, agent: operator, arguments: {text: light}}
"""

APPROVAL = """
steps:
  - id: gate
    kind: approval
    message: "Publish {{ input.title }}?"
    approver_role: approver
  - id: publish
    kind: tool
    tool: effect
    agent: operator
    depends_on: [gate]
    arguments: {title: "{{ input.title }}"}
"""

SAGA = """
steps:
  - id: reserve
    kind: tool
    tool: effect
    agent: operator
    arguments: {op: reserve}
    on_failure: [{id: unreserve, kind: tool, tool: effect, agent: operator, arguments: {op: unreserve}}]
  - id: charge
    kind: tool
    tool: effect
    agent: operator
    depends_on: [reserve]
    arguments: {op: charge}
    on_failure:
      - {id: refund, kind: tool, tool: effect, agent: operator, arguments: {op: refund}}
      - {id: notify, kind: tool, tool: echo, agent: operator, arguments: {text: refunded}}
  - id: ship
    kind: tool
    tool: broken
    agent: operator
    depends_on: [charge]
    arguments: {op: ship}
"""

RETRIES = """
steps:
  - id: flaky
    kind: tool
    tool: flaky
    agent: operator
    arguments: {op: flaky}
    retries: {max_attempts: 3, backoff_seconds: 2, max_delay_seconds: 3, jitter: false}
  - id: broken
    kind: tool
    tool: broken
    agent: operator
    depends_on: [flaky]
    arguments: {op: broken}
    retries: {max_attempts: 2, backoff_seconds: 1, jitter: true}
"""


def start(project, admin_user, source, slug="f", **input_):
    flow = flow_create(project=project, slug=slug, source=source, actor=admin_user)
    return run_start(flow=flow, input=input_, user=admin_user, trigger="api")


def steps_of(run) -> dict[str, StepRun]:
    return {s.step_id: s for s in StepRun.objects.filter(run=run, item_index=-1)}


def test_a_pipeline_passes_outputs_along_and_renders_the_run_output(
    project, admin_user, world, pump, tool_server
):
    run = start(project, admin_user, PIPELINE, topic="owls")
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", (run.error, list(StepRun.objects.values("step_id", "error")))
    assert run.output == {"draft": "written", "effect": 1, "shout": "WRITTEN"}
    steps = steps_of(run)
    assert steps["draft"].agent_version == world["writer"].active_version
    assert steps["store"].input == {"text": "written", "topic": "owls"}
    assert [r["body"] for r in tool_server.requests] == [{"text": "written", "topic": "owls"}]
    # Cost: the writer's model call and the priced HTTP tool, rolled up on the run.
    assert run.cost_usd == sum(e.cost_usd for e in CostEntry.objects.filter(run_id=str(run.pk)))
    assert CostEntry.objects.filter(run_id=str(run.pk), kind="tool").count() == 1
    # Trace: a root span, one span per step, model and tool spans under their steps.
    spans = list(Span.objects.filter(run=run))
    assert {s.trace_id for s in spans} == {run.trace_id} and len(run.trace_id) == 32
    kinds = sorted(s.kind for s in spans)
    assert kinds == ["model", "run", "step", "step", "step", "tool", "tool"]
    step_spans = {s.span_id: s for s in spans if s.kind == "step"}
    for span in spans:
        if span.kind in ("model", "tool"):
            assert span.parent_span_id in step_spans
        if span.kind == "step":
            assert span.parent_span_id == engine.root_span_id(run)


def test_a_map_fans_out_over_20_items_and_collects_outputs_in_order(
    project, admin_user, world, pump
):
    run = start(project, admin_user, MAP, items=[f"x{i}" for i in range(20)])
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    each = StepRun.objects.get(run=run, step_id="each", item_index=-1)
    assert each.output == [{"text": f"item {i}: x{i}"} for i in range(20)]
    assert StepRun.objects.filter(parent=each, status="succeeded").count() == 20
    assert run.output == {"count": {"text": "20 items"}}


def test_a_map_never_runs_more_items_than_max_parallel(project, admin_user, world, pump):
    start(project, admin_user, MAP, items=list(range(10)))
    pump.run(limit=1)  # the map step itself: fans out
    assert len(pump.queue) == 4  # max_parallel
    queued = StepRun.objects.filter(item_index__gte=0, lease_owner="queued").count()
    assert queued == 4


@pytest.mark.parametrize(
    ("size", "chosen", "skipped"), [(500, "heavy", "light"), (5, "light", "heavy")]
)
def test_a_router_rule_picks_a_branch_and_skips_the_other(
    project, admin_user, world, pump, size, chosen, skipped
):
    run = start(project, admin_user, ROUTER_RULES, size=size)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    steps = steps_of(run)
    assert steps["route"].output["branch"] == ("big" if size > 100 else "small")
    assert steps[chosen].status == "succeeded"
    assert steps[skipped].status == "skipped"
    assert steps["after-heavy"].status == ("succeeded" if chosen == "heavy" else "skipped")
    assert steps["join"].output == {"text": chosen}


@pytest.mark.parametrize(
    ("what", "chosen", "skipped"), [("a huge thing", "heavy", "light"), ("a pea", "light", "heavy")]
)
def test_a_router_agent_chooses_among_named_branches(
    project, admin_user, world, pump, what, chosen, skipped
):
    run = start(project, admin_user, ROUTER_AGENT, what=what)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    steps = steps_of(run)
    assert (steps[chosen].status, steps[skipped].status) == ("succeeded", "skipped")
    assert steps["route"].turn_id is not None


def decide(request_id: int, status: str, comment: str = "") -> None:
    """Decide through the approvals service (an approver who did not start the run), or,
    when the request is already decided, send the port's signal again (a duplicate)."""
    from django.test import TestCase

    from approvals.services import approval_decide
    from controlplane.models import Role
    from governance.approval_port import approval_outcomes
    from tests.approvals.conftest import member

    request = ApprovalRequest.objects.get(pk=request_id)
    with TestCase.captureOnCommitCallbacks(execute=True):
        if request.status == "pending":
            verdict = "approve" if status == "approved" else "reject"
            approver = member(request.project, Role.APPROVER)
            approval_decide(request_id=request_id, user=approver, verdict=verdict, comment=comment)
        else:
            approval_decided.send(
                sender=ApprovalRequest,
                outcome=approval_outcomes([request_id])[request_id],
                payload=request.payload,
                project_id=request.project_id,
            )


@pytest.mark.parametrize("status", ["approved", "rejected"])
def test_an_approval_step_waits_for_the_decision(
    project, admin_user, world, pump, tool_server, status
):
    run = start(project, admin_user, APPROVAL, title="Q3 report")
    pump.run()
    gate = steps_of(run)["gate"]
    assert gate.status == "waiting_approval"
    [request_id] = gate.approval_request_ids
    request = ApprovalRequest.objects.get(pk=request_id)
    assert request.summary == "Publish Q3 report?"
    assert request.payload["step_run_id"] == gate.pk and request.payload["step"] == "gate"

    decide(request_id, status, comment="fine" if status == "approved" else "no")
    decide(request_id, status)  # a duplicate signal resumes nothing more
    pump.run()
    run.refresh_from_db()
    steps = steps_of(run)
    if status == "approved":
        assert run.status == "succeeded", run.error
        assert steps["gate"].output == {"approved": True, "comment": "fine"}
        assert len(tool_server.effects) == 1
    else:
        assert run.status == "failed"
        assert steps["gate"].error_kind == "rejected"
        assert steps["publish"].status == "cancelled"
        assert not tool_server.effects
    assert Span.objects.filter(run=run, kind="approval").count() == 1


def test_a_supervisor_agent_delegates_within_the_step(project, admin_user, world, pump):
    source = "steps:\n  - {id: lead, kind: agent, agent: boss, input: start}\n"
    run = start(project, admin_user, source)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.output == {"lead": "boss done"}
    lead = steps_of(run)["lead"]
    from agents.models import AgentTurn

    turns = AgentTurn.objects.filter(run_id=str(run.pk), step_id=str(lead.pk))
    assert sorted(t.agent_version.agent.slug for t in turns) == ["boss", "writer"]
    assert lead.cost_usd == run.cost_usd > 0


def test_a_failing_agent_falls_back_to_the_fallback_agent(project, admin_user, world, pump):
    from agents.services import agent_create

    from .conftest import scripted_endpoint

    endpoint = scripted_endpoint(project, "ep-offline", {"responses": [{"text": "x"}]})
    # An OpenAI-compatible endpoint nobody listens on: the model call fails.
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
    source = """
steps:
  - id: answer
    kind: agent
    agent: offline
    fallback_agent: writer
    input: hello
    retries: {max_attempts: 2, backoff_seconds: 0}
"""
    run = start(project, admin_user, source)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    answer = steps_of(run)["answer"]
    assert answer.output == "written"
    assert answer.agent_version == world["writer"].active_version
    assert [a["status"] for a in answer.attempts] == ["failed", "failed", "fallback", "succeeded"]


def test_compensations_of_completed_steps_run_in_reverse_order(
    project, admin_user, world, pump, tool_server
):
    run = start(project, admin_user, SAGA)
    pump.run()
    run.refresh_from_db()
    assert run.status == "failed"
    assert "ship" in run.error
    ops = [r["body"].get("op") or r["body"].get("text") for r in tool_server.requests]
    assert ops == ["reserve", "charge", "ship", "refund", "unreserve"]
    comps = StepRun.objects.filter(run=run).exclude(compensates="").order_by("finished_at")
    assert [(c.step_id, c.compensates, c.status) for c in comps] == [
        ("refund", "charge", "succeeded"),
        ("notify", "charge", "succeeded"),
        ("unreserve", "reserve", "succeeded"),
    ]


def test_retries_back_off_and_stop_at_max_attempts(project, admin_user, world, pump, tool_server):
    run = start(project, admin_user, RETRIES)
    pump.run()
    run.refresh_from_db()
    assert run.status == "failed"
    steps = steps_of(run)
    flaky, broken = steps["flaky"], steps["broken"]
    assert flaky.status == "succeeded" and flaky.attempt == 3
    assert [a["status"] for a in flaky.attempts] == ["failed", "failed", "succeeded"]
    assert [a.get("retry_in_seconds") for a in flaky.attempts[:2]] == [2.0, 3.0]  # capped
    assert broken.status == "failed" and broken.attempt == 2 and broken.error_kind == "tool"
    assert 0.5 <= broken.attempts[0]["retry_in_seconds"] <= 1.0  # jitter in [0.5, 1] x 1 s
    # One idempotency key across the attempts of a step.
    flaky_keys = {r["key"] for r in tool_server.requests if r["body"]["op"] == "flaky"}
    assert len(flaky_keys) == 1


def test_cancel_stops_pending_steps_and_runs_compensations(
    project, admin_user, world, pump, tool_server
):
    source = SAGA.replace("tool: broken", "tool: effect")
    run = start(project, admin_user, source)
    pump.run(limit=2)  # reserve and charge done; ship queued
    run_cancel(run=run, actor=admin_user)
    pump.run()
    run.refresh_from_db()
    assert run.status == "cancelled"
    steps = steps_of(run)
    assert steps["ship"].status == "cancelled"
    ops = [r["body"].get("op") for r in tool_server.requests]
    assert ops == ["reserve", "charge", "refund", "unreserve"]


def test_a_failed_run_retries_from_the_failed_step(project, admin_user, world, pump, tool_server):
    source = """
steps:
  - {id: first, kind: tool, tool: effect, agent: operator, arguments: {op: first}}
  - {id: second, kind: tool, tool: flaky, agent: operator, depends_on: [first], arguments: {op: second}}
  - {id: third, kind: tool, tool: echo, agent: operator, depends_on: [second], arguments: {text: done}}
"""
    run = start(project, admin_user, source)
    pump.run()
    run.refresh_from_db()
    assert run.status == "failed"
    assert steps_of(run)["third"].status == "cancelled"

    run_retry(run=run, actor=admin_user)
    pump.run()  # the flaky tool fails twice per key, then answers
    run.refresh_from_db()
    assert run.status == "failed"  # second attempt of the retry round still fails once more
    run_retry(run=run, actor=admin_user)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    ops = [r["body"].get("op") for r in tool_server.requests]
    assert ops.count("first") == 1  # the succeeded step was not run again
    assert steps_of(run)["second"].attempt == 3


def test_a_step_task_delivered_twice_runs_once(project, admin_user, world, pump, tool_server):
    run = start(
        project, admin_user, "steps:\n  - {id: s, kind: tool, tool: effect, agent: operator}\n"
    )
    [(name, step_run_id, _)] = pump.queue
    pump.queue.append((name, step_run_id, None))
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert len(tool_server.requests) == 1
    assert StepRun.objects.get(pk=step_run_id).attempt == 1


def test_a_result_recorded_after_the_lease_was_lost_is_dropped(
    project, admin_user, world, pump, tool_server, monkeypatch
):
    # While the attempt runs, the sweeper takes the step back (its lease expired): the
    # attempt's record writes nothing of the step (no attempt entry, span or next step);
    # the requeued step then runs again with the same turn, so the side effect is not
    # repeated.
    run = start(
        project,
        admin_user,
        "steps:\n  - {id: s, kind: tool, tool: effect, agent: operator}\n"
        "  - {id: t, kind: tool, tool: echo, agent: operator, arguments: {text: b},"
        " depends_on: [s]}\n",
    )
    [(_, step_run_id, _)] = pump.queue
    real_attempt = engine._run_attempt

    def attempt_then_lose_the_lease(step_run, run):
        outcome = real_attempt(step_run, run)
        StepRun.objects.filter(pk=step_run.pk).update(status="pending", lease_owner="queued")
        return outcome

    monkeypatch.setattr(engine, "_run_attempt", attempt_then_lose_the_lease)
    assert pump.run(limit=1) == 1
    dropped = StepRun.objects.get(pk=step_run_id)
    assert (dropped.status, dropped.lease_owner, dropped.attempts) == ("pending", "queued", [])
    assert not Span.objects.filter(step_run=dropped).exists()
    assert pump.queue == []  # the next step was not queued
    assert steps_of(run)["t"].lease_owner == ""
    assert len(tool_server.effects) == 1

    monkeypatch.setattr(engine, "_run_attempt", real_attempt)
    pump.queue.append(("step_execute", step_run_id, None))  # what the sweeper queued
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded"
    again = StepRun.objects.get(pk=step_run_id)
    assert again.attempt == 2 and [a["status"] for a in again.attempts] == ["succeeded"]
    assert len(tool_server.effects) == 1  # the same idempotency key: no second effect
    assert again.output["effect"] == 1


def test_attempt_times_are_recorded(project, admin_user, world, pump):
    run = start(
        project,
        admin_user,
        "steps:\n  - {id: s, kind: tool, tool: echo, agent: operator, arguments: {text: a}}\n",
    )
    pump.run()
    [attempt] = steps_of(run)["s"].attempts
    started = datetime.fromisoformat(attempt["started_at"])
    finished = datetime.fromisoformat(attempt["finished_at"])
    assert started <= finished
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def guarded_agent(project, admin_user, *, script=None):
    """``guard``: its grant for ``effect`` needs approval when ``args.op == "big"``."""
    from .conftest import make_agent

    return make_agent(
        project,
        admin_user,
        "guard",
        script=script or {"responses": [{"text": "ok"}]},
        grants=[
            {"tool": "effect", "rules": [{"when": 'args.op == "big"', "then": "require_approval"}]}
        ],
    )


@pytest.mark.parametrize("status", ["approved", "rejected"])
def test_a_tool_step_whose_call_needs_approval_waits_then_runs_once(
    project, admin_user, world, pump, tool_server, status
):
    guarded_agent(project, admin_user)
    run = start(
        project,
        admin_user,
        "steps:\n  - {id: pay, kind: tool, tool: effect, agent: guard, arguments: {op: big}}\n",
    )
    pump.run()
    pay = steps_of(run)["pay"]
    assert pay.status == "waiting_approval" and not tool_server.requests
    [request_id] = pay.approval_request_ids
    assert ApprovalRequest.objects.get(pk=request_id).payload["step_id"] == str(pay.pk)
    decide(request_id, status)
    decide(request_id, status)
    pump.run()
    run.refresh_from_db()
    if status == "approved":
        assert run.status == "succeeded", run.error
        assert len(tool_server.requests) == 1
    else:
        assert run.status == "failed" and steps_of(run)["pay"].error_kind == "rejected"
        assert not tool_server.requests


def start_parked_pay(project, admin_user, pump, *, final_text):
    """Start a one-step flow whose agent (``guard``) proposes a call its grant sends for
    approval, then answers ``final_text``; pump until the step parks. Returns the run."""
    guarded_agent(
        project,
        admin_user,
        script={
            "responses": [
                {"tool_calls": [{"name": "effect", "arguments": {"op": "big"}}]},
                {"text": final_text},
            ]
        },
    )
    run = start(
        project, admin_user, "steps:\n  - {id: pay, kind: agent, agent: guard, input: pay}\n"
    )
    pump.run()
    return run


def test_an_agent_step_parked_on_a_tool_approval_resumes_after_the_decision(
    project, admin_user, world, pump, tool_server
):
    run = start_parked_pay(project, admin_user, pump, final_text="paid")
    pay = steps_of(run)["pay"]
    assert pay.status == "waiting_approval", pay.error
    [request_id] = pay.approval_request_ids
    decide(request_id, "approved")
    decide(request_id, "approved")
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.output == {"pay": "paid"}
    assert len(tool_server.requests) == 1
    assert steps_of(run)["pay"].turn_id == pay.turn_id


def test_the_sweeper_resumes_a_step_whose_approval_signal_was_missed(
    project, admin_user, world, pump, tool_server, monkeypatch
):
    from governance import approval_port

    def reader(ids):
        return {
            r.pk: ApprovalOutcome(request_id=r.pk, status=r.status)
            for r in ApprovalRequest.objects.filter(pk__in=ids)
        }

    monkeypatch.setattr(approval_port, "_outcome_reader", reader)
    run = start(project, admin_user, APPROVAL, title="Q3")
    pump.run()
    [request_id] = steps_of(run)["gate"].approval_request_ids
    assert engine.sweep()["resumed"] == 0  # still pending
    ApprovalRequest.objects.filter(pk=request_id).update(status="approved")  # no signal
    assert engine.sweep()["resumed"] == 1
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error


def test_the_sweeper_requeues_a_step_whose_task_was_lost(project, admin_user, world, pump):
    from datetime import timedelta

    from django.utils import timezone

    run = start(
        project,
        admin_user,
        "steps:\n  - {id: s, kind: tool, tool: echo, agent: operator, arguments: {text: a}}\n",
    )
    pump.queue.clear()  # the message is lost
    assert engine.sweep()["lost"] == 0  # not yet a lease old
    StepRun.objects.filter(run=run).update(queued_at=timezone.now() - timedelta(minutes=5))
    assert engine.sweep()["lost"] == 1
    pump.run()
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def test_cancel_while_a_map_item_runs_closes_the_map_when_it_finishes(
    project, admin_user, world, pump
):
    from django.utils import timezone

    run = start(project, admin_user, MAP, items=["a", "b", "c"])
    pump.run(limit=1)  # the map fans out
    pump.queue.clear()
    first = StepRun.objects.get(run=run, item_index=0)
    StepRun.objects.filter(pk=first.pk).update(
        status="running", lease_owner="w1"
    )  # a worker has it
    run_cancel(run=run, actor=admin_user)
    assert Run.objects.get(pk=run.pk).status == "running"  # item 0 still runs
    engine._record(
        StepRun.objects.get(pk=first.pk),
        "w1",
        engine.Outcome("succeeded", output={"text": "a"}),
        timezone.now(),
    )
    run.refresh_from_db()
    assert run.status == "cancelled"
    each = StepRun.objects.get(run=run, step_id="each", item_index=-1)
    assert each.status == "cancelled"
    statuses = list(
        StepRun.objects.filter(parent=each).order_by("item_index").values_list("status", flat=True)
    )
    assert statuses == ["succeeded", "cancelled", "cancelled"]
    assert steps_of(run)["count"].status == "cancelled"


# --- the run's waiting_approval status -----------------------------------------------------

GATE_AND_ECHO = """
steps:
  - {id: gate, kind: approval, message: "Go?", approver_role: approver}
  - {id: side, kind: tool, tool: echo, agent: operator, arguments: {text: side}}
  - {id: publish, kind: tool, tool: effect, agent: operator, depends_on: [gate], arguments: {op: p}}
"""


def test_a_run_waits_for_approval_only_while_nothing_else_runs_or_is_queued(
    project, admin_user, world, pump, tool_server
):
    run = start(project, admin_user, GATE_AND_ECHO)
    assert [task for task, _, _ in pump.queue] == ["step_execute", "step_execute"]
    pump.run(limit=1)  # the gate parks; "side" is still queued
    assert steps_of(run)["gate"].status == "waiting_approval"
    assert Run.objects.get(pk=run.pk).status == "running"
    pump.run()  # "side" done: only the approval is left
    assert Run.objects.get(pk=run.pk).status == "waiting_approval"
    [request_id] = steps_of(run)["gate"].approval_request_ids
    decide(request_id, "approved")
    assert Run.objects.get(pk=run.pk).status == "waiting_approval"  # resume still queued
    pump.run(limit=1)  # the resume: the gate succeeds and "publish" is queued
    assert Run.objects.get(pk=run.pk).status == "running"
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert len(tool_server.effects) == 1


def test_a_run_whose_map_items_wait_for_approval_waits_for_approval(
    project, admin_user, world, pump, tool_server
):
    guarded_agent(project, admin_user)
    source = """
steps:
  - id: each
    kind: map
    over: "input['items']"
    max_parallel: 2
    step: {kind: tool, tool: effect, agent: guard, arguments: {op: "{{ item }}"}}
"""
    run = start(project, admin_user, source, items=["big", "big"])
    pump.run()
    items = StepRun.objects.filter(run=run).exclude(item_index=-1)
    assert sorted(items.values_list("status", flat=True)) == ["waiting_approval"] * 2
    assert Run.objects.get(pk=run.pk).status == "waiting_approval"
    for item in items:
        [request_id] = item.approval_request_ids
        decide(request_id, "approved")
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert len(tool_server.effects) == 2


def test_cancel_of_a_run_waiting_for_approval_cancels_it_and_its_request(
    project, admin_user, world, pump, tool_server
):
    from django.test import TestCase

    run = start(project, admin_user, APPROVAL, title="Q3")
    pump.run()
    assert Run.objects.get(pk=run.pk).status == "waiting_approval"
    [request_id] = steps_of(run)["gate"].approval_request_ids
    with TestCase.captureOnCommitCallbacks(execute=True):
        run_cancel(run=run, actor=admin_user)
    pump.run()
    run.refresh_from_db()
    assert run.status == "cancelled"
    steps = steps_of(run)
    assert (steps["gate"].status, steps["publish"].status) == ("cancelled", "cancelled")
    assert ApprovalRequest.objects.get(pk=request_id).status == "cancelled"
    assert not tool_server.requests


@pytest.mark.parametrize(
    ("ending", "told"),
    [("expired", "expired"), ("cancelled", "cancelled: the tool was retired")],
)
def test_an_agent_step_whose_approval_expired_or_was_cancelled_tells_the_model_why(
    project, admin_user, world, pump, tool_server, ending, told
):
    # The same decisions as a standalone turn (agents.runtime.resume.decisions_for).
    from django.test import TestCase
    from django.utils import timezone

    from agents.models import AgentTurn
    from approvals.services import approval_cancel, approvals_expire

    run = start_parked_pay(project, admin_user, pump, final_text="gave up")
    [request_id] = steps_of(run)["pay"].approval_request_ids
    with TestCase.captureOnCommitCallbacks(execute=True):
        if ending == "expired":
            ApprovalRequest.objects.filter(pk=request_id).update(expires_at=timezone.now())
            assert approvals_expire() == 1
        else:
            approval_cancel(request_ids=[request_id], reason="the tool was retired")
    pump.run()
    run.refresh_from_db()
    assert (run.status, run.output) == ("succeeded", {"pay": "gave up"}), run.error
    turn = AgentTurn.objects.get(pk=steps_of(run)["pay"].turn_id)
    returned = [
        part.get("content")
        for message in turn.messages
        for part in message["parts"]
        if part.get("part_kind") == "tool-return"
    ]
    assert returned == [f"Denied by the approver: {told}"]
    assert not tool_server.requests
