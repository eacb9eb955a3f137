"""A tool call's outcome (breaker count, ``tool.executed``) rides along with the turn's next
commit: written once, in order, and kept for the next commit when one rolls back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.governed import version_policy
from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from agents.runtime.context import TurnContext
from governance.models import AuditEvent, CircuitBreaker
from governance.services import audit_record

from .conftest import make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db

SCRIPT = {
    "responses": [
        {
            "tool_calls": [
                {"name": "echo", "arguments": {"text": "one"}},
                {"name": "echo", "arguments": {"text": "two"}},
                {"name": "echo", "arguments": {"text": "three"}},
            ]
        },
        {"text": "done"},
    ]
}


def test_each_tool_outcome_is_audited_once_between_its_decision_and_the_next_call(
    project, admin_user, runtime_tools
):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=[{"tool": "echo"}])
    before = AuditEvent.objects.count()
    with CaptureQueriesContext(connection) as captured:
        result = run_agent_turn(agent_version=agent.active_version, input="go", pii=False)
    assert result.status == "completed"
    actions = list(
        AuditEvent.objects.filter(project=project)
        .exclude(action__startswith="agent.version")
        .exclude(action__startswith="agent.created")
        .exclude(action__startswith="agent.activated")
        .order_by("sequence")
        .values_list("action", "data__tool_call_id")
    )
    tool_events = [(a, c) for a, c in actions if a in ("tool.decision", "tool.executed")]
    # Three calls, each decided then executed, each outcome written exactly once.
    assert [a for a, _ in tool_events] == ["tool.decision", "tool.executed"] * 3
    assert tool_events[0][1] == tool_events[1][1] != tool_events[2][1]
    kinds = [a for a, _ in actions]

    # The last outcome precedes the second model call's settlement and the turn's end.
    def last(action: str) -> int:
        return max(i for i, kind in enumerate(kinds) if kind == action)

    assert last("tool.executed") < last("model.call")
    assert kinds[-1] == "agent.turn.completed"
    # The breaker counted the three successes.
    assert sum(CircuitBreaker.objects.values_list("calls", flat=True)) == 3
    # Each outcome shares the next call's append: the turn's audit inserts number the
    # calls' commits (2 reservations, 2 settlements, 3 decisions, the end), not its events.
    turn_events = AuditEvent.objects.count() - before
    appends = [
        q for q in captured.captured_queries if 'INSERT INTO "governance_auditevent"' in q["sql"]
    ]
    assert turn_events >= 12
    assert len(appends) <= 8


def test_deferred_writes_stay_for_the_next_batch_when_one_rolls_back(
    project, admin_user, runtime_tools
):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=[{"tool": "echo"}])
    version = agent.active_version
    turn = AgentTurn.objects.create(agent_version=version, input="x")
    ctx = TurnContext(
        version=version,
        turn=turn,
        policy=version_policy(version),
        run_id="r",
        deferred_writes=[],
    )

    def write() -> None:
        audit_record(action="test.deferred", project=project, data={"n": 1})

    ctx.deferred_writes.append(write)
    with pytest.raises(RuntimeError), ctx.batch():
        raise RuntimeError("the batch fails")
    assert not AuditEvent.objects.filter(action="test.deferred").exists()
    assert ctx.deferred_writes == [write]
    with ctx.batch():
        pass
    assert AuditEvent.objects.filter(action="test.deferred").count() == 1
    assert ctx.deferred_writes == []
    with ctx.batch():
        pass
    assert AuditEvent.objects.filter(action="test.deferred").count() == 1
