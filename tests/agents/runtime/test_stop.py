"""A turn's ``should_stop`` check: asked before each model request and each tool call;
when it says stop, nothing further is sent or executed, the stop is audited and the turn
ends failed with rule ``cancelled``."""

from __future__ import annotations

import pytest

from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from governance.models import AuditEvent, CostEntry

from .conftest import GRANTS, make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db

SCRIPT = {
    "responses": [
        {
            "tool_calls": [
                {"name": "echo", "arguments": {"text": "one"}},
                {"name": "echo", "arguments": {"text": "two"}},
            ]
        },
        {"tool_calls": [{"name": "echo", "arguments": {"text": "three"}}]},
        {"text": "done"},
    ]
}


class StopAfter:
    """``should_stop`` answering a reason from its ``n``-th question on (counts them)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.asked = 0

    def __call__(self) -> str | None:
        self.asked += 1
        return "the run was cancelled" if self.asked >= self.n else None


def executed(project) -> list[str]:
    events = AuditEvent.objects.filter(project=project, action="tool.executed").order_by("pk")
    return [e.data["tool_call_id"] for e in events]


@pytest.mark.parametrize(
    ("n", "boundary", "tools_run", "model_calls"),
    [
        (1, "model", 0, 0),  # before the first model request
        (3, "tool", 1, 1),  # before the second tool call of the first response
        (4, "model", 2, 1),  # before the second model request
    ],
)
def test_should_stop_ends_the_turn_at_the_next_call_boundary(
    project, admin_user, runtime_tools, n, boundary, tools_run, model_calls
):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=GRANTS)
    check = StopAfter(n)

    result = run_agent_turn(
        agent_version=agent.active_version, input="go", run_id="r1", should_stop=check
    )

    assert (result.status, result.rule, result.reason) == (
        "failed",
        "cancelled",
        "the run was cancelled",
    )
    assert check.asked == n  # nothing asked (or sent) after the stop
    assert len(executed(project)) == tools_run
    assert AuditEvent.objects.filter(project=project, action="model.call").count() == model_calls
    assert CostEntry.objects.filter(run_id="r1", kind="model").count() == model_calls
    stopped = AuditEvent.objects.get(project=project, action="agent.turn.stopped")
    assert stopped.data["boundary"] == boundary
    assert stopped.data["reason"] == "the run was cancelled"
    assert (stopped.actor_kind, stopped.actor_ref) == (
        "agent_version",
        str(agent.active_version.pk),
    )
    failed = AuditEvent.objects.get(project=project, action="agent.turn.failed")
    assert failed.data["rule"] == "cancelled"
    turn = AgentTurn.objects.get(pk=result.turn_id)
    assert (turn.status, turn.error) == ("failed", "the run was cancelled")
    assert turn.tool_calls == tools_run


def test_a_turn_whose_check_never_says_stop_completes(project, admin_user, runtime_tools):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=GRANTS)
    check = StopAfter(10**6)

    result = run_agent_turn(agent_version=agent.active_version, input="go", should_stop=check)

    assert (result.status, result.output) == ("completed", "done")
    assert check.asked == 3 + 3  # three model requests, three tool calls
    assert not AuditEvent.objects.filter(project=project, action="agent.turn.stopped").exists()
