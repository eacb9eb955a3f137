"""End to end with a real Celery worker process: a standalone agent turn parks on a tool
call that needs approval; an approver approves with edited arguments; the worker resumes
the turn, the HTTP tool receives the edited arguments and the turn completes. A rejection
reaches the model as a refusal with the approver's comment."""

from __future__ import annotations

import json

import pytest

from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from agents.services import agent_create, model_endpoint_create, tool_create
from approvals.models import ApprovalRequest
from approvals.services import approval_decide
from controlplane.models import Role
from governance.models import AuditEvent
from tests.procs import wait_for

from .conftest import member
from .webhook_server import webhook_server
from .worker import celery_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PAY_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "minimum": 0},
        "to": {"type": "string"},
    },
    "required": ["amount", "to"],
}
SCRIPT = {
    "responses": [
        {"tool_calls": [{"name": "pay", "arguments": {"amount": 500, "to": "bob"}}]},
        {"text": "Done."},
    ]
}


def payment_agent(project, actor, url):
    tool_create(
        project=project,
        name="pay",
        kind="http",
        http_url=url,
        http_method="POST",
        input_schema=PAY_SCHEMA,
        risk="financial",
    )
    model_endpoint_create(
        project=project,
        name="scripted",
        kind="scripted",
        default_model="scripted-1",
        price_overrides={"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}},
        script=SCRIPT,
    )
    return agent_create(
        project=project,
        slug="payer",
        config={
            "model_endpoint": "scripted",
            "model_name": "scripted-1",
            "instructions": "You pay.",
            "max_output_tokens": 256,
            "grants": [
                {
                    "tool": "pay",
                    "rules": [{"when": "args.amount > 100", "then": "require_approval"}],
                }
            ],
        },
        actor=actor,
    )


def wait_for_turn(turn_id, worker, *, status="completed", timeout_seconds=120):
    """Wait until the turn has ``status`` and return it (AssertionError with the worker's
    output when it does not within ``timeout_seconds``)."""
    return wait_for(
        lambda: AgentTurn.objects.filter(pk=turn_id, status=status).first(),
        timeout=timeout_seconds,
        worker=worker,
    )


def test_an_edited_approval_resumes_the_turn_in_a_worker(project, admin_user, tmp_path):
    approver = member(project, Role.APPROVER)
    with webhook_server() as tool_server:
        agent = payment_agent(project, admin_user, tool_server.url)
        with celery_worker(tmp_path / "worker.log") as worker:
            approved = run_agent_turn(
                agent_version=agent.active_version, input="pay bob", user=admin_user
            )
            rejected = run_agent_turn(
                agent_version=agent.active_version, input="pay bob", user=admin_user
            )
            assert (approved.status, rejected.status) == ("parked", "parked")
            assert tool_server.received == []
            [first] = approved.approval_request_ids
            [second] = rejected.approval_request_ids
            request = ApprovalRequest.objects.get(pk=first)
            assert request.requested_by == admin_user and request.turn_id == approved.turn_id
            assert request.risk == "financial" and request.input_schema == PAY_SCHEMA

            approval_decide(
                request_id=first,
                user=approver,
                verdict="approve",
                arguments={"amount": 50, "to": "bob"},
                comment="halved",
            )
            approval_decide(
                request_id=second, user=approver, verdict="reject", comment="not this month"
            )

            done = wait_for_turn(approved.turn_id, worker)
            refused = wait_for_turn(rejected.turn_id, worker)

    # The tool received the edited arguments, once; the rejected call never ran.
    assert tool_server.received == [{"amount": 50, "to": "bob"}]
    assert done.output == "Done." and done.pending == []
    recheck = AuditEvent.objects.get(action="tool.approval.recheck", data__turn_id=done.pk)
    assert recheck.data["matches"] is False  # edited: decided again before running
    assert AuditEvent.objects.filter(action="tool.executed", data__turn_id=done.pk).count() == 1
    assert "Denied by the approver: not this month" in json.dumps(refused.messages)
    assert not AuditEvent.objects.filter(action="tool.executed", data__turn_id=refused.pk).exists()


def test_an_expired_request_resumes_the_turn_with_a_refusal(project, admin_user, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.tasks import expire_approvals

    with webhook_server() as tool_server:
        agent = payment_agent(project, admin_user, tool_server.url)
        with celery_worker(tmp_path / "worker.log") as worker:
            parked = run_agent_turn(
                agent_version=agent.active_version, input="pay bob", user=admin_user
            )
            ApprovalRequest.objects.filter(pk__in=parked.approval_request_ids).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            assert expire_approvals() == 1
            turn = wait_for_turn(parked.turn_id, worker)
    assert tool_server.received == []
    assert "Denied by the approver: expired" in json.dumps(turn.messages)
