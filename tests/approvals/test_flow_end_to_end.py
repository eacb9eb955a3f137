"""End to end through a flow, on a real Celery worker process: a flow's agent step parks on
a tool call that needs approval; an approver approves with edited arguments through the
approvals service; the flow engine resumes the step in the worker; the HTTP tool receives
the edited arguments and the run completes."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from approvals.services import approval_decide
from controlplane.models import Role
from flows.models import StepRun
from flows.services import flow_create, run_start
from governance.models import AuditEvent
from tests.flows.conftest import start_worker, wait_for, wait_run

from .conftest import member
from .test_end_to_end import payment_agent
from .webhook_server import webhook_server

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FLOW = """
steps:
  - id: pay
    kind: agent
    agent: payer
    input: "Pay {{ input.to }}"
output: {answer: "{{ steps.pay }}"}
"""


@pytest.fixture
def worker(tmp_path, settings):
    """A real worker consuming the flow engine's queue for this test."""
    process = start_worker(tmp_path, settings)
    yield process
    process.stop()


def test_a_flows_parked_tool_call_runs_with_the_edited_arguments(project, admin_user, worker):
    approver = member(project, Role.APPROVER)
    with webhook_server() as tool_server:
        payment_agent(project, admin_user, tool_server.url)
        flow = flow_create(project=project, slug="payments", source=FLOW, actor=admin_user)
        run = run_start(flow=flow, input={"to": "bob"}, user=admin_user, trigger="api")

        step = wait_for(
            lambda: StepRun.objects.filter(
                run=run, step_id="pay", status="waiting_approval"
            ).first(),
            worker=worker,
        )
        [request_id] = step.approval_request_ids
        request = ApprovalRequest.objects.get(pk=request_id)
        assert request.requested_by == admin_user and request.status == "pending"
        assert tool_server.received == []

        approval_decide(
            request_id=request_id,
            user=approver,
            verdict="approve",
            arguments={"amount": 50, "to": "bob"},
            comment="half now",
        )
        done = wait_run(run, worker=worker)

    assert done.status == "succeeded", done.error
    assert done.output == {"answer": "Done."}
    assert tool_server.received == [{"amount": 50, "to": "bob"}]
    recheck = AuditEvent.objects.get(action="tool.approval.recheck", data__turn_id=step.turn_id)
    assert recheck.data["matches"] is False  # edited: decided again before running
