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


def test_a_parked_delegate_parks_its_supervisor_and_resumes_with_it(
    project, admin_user, eager, django_capture_on_commit_callbacks
):
    """The supervisor's call of a delegate that parks parks too, bound to the delegate's
    approval requests; approving them resumes the supervisor's turn, which resumes the
    delegate's, and the supervisor's model gets the delegate's answer."""
    for name in ("echo", "notify", "ping"):
        builtin(project, name)
    scripted_endpoint(
        project,
        {
            "responses": [
                {"tool_calls": [{"name": "delegate_helper", "arguments": {"input": "ask helper"}}]},
                {"text": "boss relays the helper's answer"},
            ],
            "branches": [
                {
                    "input_contains": "ask helper",
                    "responses": [
                        {"tool_calls": [{"name": "notify", "arguments": {"text": "big"}}]},
                        {"text": "helper notified"},
                    ],
                }
            ],
        },
    )
    make_agent(project, admin_user, grants=GRANTS)
    boss = make_agent(project, admin_user, grants=[], slug="boss", delegates=["helper"])
    approver = member(project, Role.APPROVER)

    parked = run_agent_turn(agent_version=boss.active_version, input="start", user=admin_user)

    assert parked.status == "parked", parked.reason
    child = AgentTurn.objects.get(agent_version__agent__slug="helper")
    assert child.status == "parked"
    (request_id,) = parked.approval_request_ids
    assert child.pending[0]["approval_request_id"] == request_id
    supervisor = AgentTurn.objects.get(pk=parked.turn_id)
    assert supervisor.pending[0]["kind"] == "delegate"
    assert supervisor.pending[0]["child_turn_id"] == child.pk

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request_id=request_id, user=approver, verdict="approve")

    child.refresh_from_db()
    supervisor.refresh_from_db()
    assert (child.status, child.output) == ("completed", "helper notified")
    assert (supervisor.status, supervisor.output) == (
        "completed",
        "boss relays the helper's answer",
    )
    assert "helper notified" in json.dumps(supervisor.messages)
