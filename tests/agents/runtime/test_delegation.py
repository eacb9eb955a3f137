"""Delegate agents as tools: a delegate runs its own governed turn in the same run; depth
is capped."""

from __future__ import annotations

import pytest

from agents.models import AgentTurn
from agents.runtime import delegation, run_agent_turn
from governance.models import AuditEvent

from .conftest import GRANTS, make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db

SCRIPT = {
    "responses": [
        {"tool_calls": [{"name": "delegate_helper", "arguments": {"input": "hi from boss"}}]},
        {"text": "boss done"},
    ],
    "branches": [{"input_contains": "from boss", "responses": [{"text": "helper says hi"}]}],
}


@pytest.fixture
def boss(project, admin_user, runtime_tools):
    scripted_endpoint(project, SCRIPT)
    make_agent(project, admin_user, grants=GRANTS)
    return make_agent(project, admin_user, grants=[], slug="boss", delegates=["helper"])


def test_a_delegate_runs_its_own_governed_turn_in_the_same_run(project, boss):
    result = run_agent_turn(agent_version=boss.active_version, input="start", run_id="run-d")

    assert (result.status, result.output) == ("completed", "boss done"), result.reason
    child = AgentTurn.objects.get(agent_version__agent__slug="helper")
    assert (child.run_id, child.status, child.output) == ("run-d", "completed", "helper says hi")
    delegated = AuditEvent.objects.get(project=project, action="agent.delegated")
    assert delegated.data["child_turn_id"] == child.pk
    assert AuditEvent.objects.filter(project=project, action="model.call").count() == 3
    # The delegate's cost is part of the turn's.
    assert result.cost_usd > AgentTurn.objects.get(pk=child.pk).cost_usd > 0


def test_delegation_past_the_maximum_depth_is_refused(project, boss, monkeypatch):
    monkeypatch.setattr(delegation, "MAX_DELEGATION_DEPTH", 0)

    result = run_agent_turn(agent_version=boss.active_version, input="start")

    assert result.status == "completed"
    assert not AgentTurn.objects.filter(agent_version__agent__slug="helper").exists()
    refused = AuditEvent.objects.get(project=project, action="agent.delegation.refused")
    assert refused.data["rule"] == "delegation.max_depth"


def test_the_delegation_depth_is_a_policy_cap(project, boss, admin_user):
    from governance.services import policy_create, policy_version_create

    policy = policy_create(project=project, slug="default", actor=admin_user)
    policy_version_create(policy=policy, document="caps:\n  max_delegation_depth: 0\n")

    result = run_agent_turn(agent_version=boss.active_version, input="start")

    assert result.status == "completed"
    assert not AgentTurn.objects.filter(agent_version__agent__slug="helper").exists()
    refused = AuditEvent.objects.get(project=project, action="agent.delegation.refused")
    assert (refused.data["rule"], refused.data["depth"]) == ("delegation.max_depth", 1)
    # The refusal the supervisor's model received names the policy setting.
    assert "caps.max_delegation_depth" in str(AgentTurn.objects.get(pk=result.turn_id).messages)
