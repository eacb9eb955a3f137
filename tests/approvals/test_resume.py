"""Resuming standalone parked turns from approval outcomes (``agents.runtime.resume``):
only when every request of the turn is final, once, never for a flow step's turn; the
beat safety net for a lost signal."""

from __future__ import annotations

import json

import pytest
from celery import current_app

from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from agents.runtime.resume import resume_decided_turns, resume_turn_if_decided
from approvals.services import approval_decide
from controlplane.models import Role
from governance.approval_port import approval_decided
from tests.agents.runtime.conftest import GRANTS, builtin, make_agent, scripted_endpoint

from .conftest import member

pytestmark = pytest.mark.django_db

TWO_CALLS = {
    "responses": [
        {
            "tool_calls": [
                {"name": "notify", "arguments": {"text": "big"}},
                {"name": "notify", "arguments": {"text": "big"}},
            ]
        },
        {"text": "Both handled."},
    ]
}


@pytest.fixture
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def agent(project, admin_user):
    for name in ("echo", "notify", "ping"):
        builtin(project, name)
    scripted_endpoint(project, TWO_CALLS)
    return make_agent(project, admin_user, grants=GRANTS)


def test_a_turn_resumes_when_all_its_requests_are_final(
    project, agent, admin_user, eager, django_capture_on_commit_callbacks
):
    approver = member(project, Role.APPROVER)
    parked = run_agent_turn(agent_version=agent.active_version, input="go", user=admin_user)
    first, second = parked.approval_request_ids

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request_id=first, user=approver, verdict="approve")
    assert AgentTurn.objects.get(pk=parked.turn_id).status == "parked"  # one still pending

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request_id=second, user=approver, verdict="reject", comment="one is enough")
    turn = AgentTurn.objects.get(pk=parked.turn_id)
    assert (turn.status, turn.output) == ("completed", "Both handled.")
    assert "Denied by the approver: one is enough" in json.dumps(turn.messages)
    # A duplicate signal (or a second worker) changes nothing.
    assert resume_turn_if_decided(turn_id=turn.pk) is None


def test_a_flow_steps_turn_is_left_to_the_flow_engine(
    project, agent, admin_user, eager, django_capture_on_commit_callbacks
):
    approver = member(project, Role.APPROVER)
    parked = run_agent_turn(
        agent_version=agent.active_version, input="go", run_id="run-7", step_id="step-3"
    )
    with django_capture_on_commit_callbacks(execute=True):
        for request_id in parked.approval_request_ids:
            approval_decide(request_id=request_id, user=approver, verdict="approve")
    assert AgentTurn.objects.get(pk=parked.turn_id).status == "parked"


def test_the_beat_safety_net_resumes_a_turn_whose_signal_was_lost(
    project, agent, admin_user, eager, django_capture_on_commit_callbacks
):
    approver = member(project, Role.APPROVER)
    parked = run_agent_turn(agent_version=agent.active_version, input="go", user=admin_user)
    approval_decided.disconnect(dispatch_uid="agents.resume_parked_turn")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for request_id in parked.approval_request_ids:
                approval_decide(request_id=request_id, user=approver, verdict="approve")
    finally:
        from agents.runtime.resume import on_approval_decided

        approval_decided.connect(on_approval_decided, dispatch_uid="agents.resume_parked_turn")
    assert AgentTurn.objects.get(pk=parked.turn_id).status == "parked"

    assert resume_decided_turns(older_than_seconds=0) == 1
    assert AgentTurn.objects.get(pk=parked.turn_id).status == "completed"
    assert resume_decided_turns(older_than_seconds=0) == 0


def test_an_undecided_turn_is_not_resumed_by_the_safety_net(project, agent, admin_user, eager):
    run_agent_turn(agent_version=agent.active_version, input="go", user=admin_user)
    assert resume_decided_turns(older_than_seconds=0) == 0
