"""One governed agent turn with the scripted model: every tool decision audited with its
rule, refusals returned to the model, approval parks the turn."""

from __future__ import annotations

import pytest
from pydantic_ai.messages import ModelMessagesTypeAdapter, ToolReturnPart

from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from approvals.models import ApprovalRequest
from governance.models import AuditEvent, CostEntry

from .conftest import GRANTS, make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db

SCRIPT = {
    "responses": [
        {
            "tool_calls": [
                {"name": "echo", "arguments": {"text": "hi"}},
                {"name": "notify", "arguments": {"text": "forbidden"}},
                {"name": "secret", "arguments": {"text": "x"}},
            ]
        },
        {"tool_calls": [{"name": "echo", "arguments": {"text": 5}}]},
        {"tool_calls": [{"name": "ping", "arguments": {"text": "a"}}]},
        {"tool_calls": [{"name": "ping", "arguments": {"text": "b"}}]},
        {"tool_calls": [{"name": "notify", "arguments": {"text": "big"}}]},
        {"text": "All done."},
    ]
}


def decisions(project):
    events = AuditEvent.objects.filter(project=project, action="tool.decision").order_by("pk")
    return [(e.data["tool"], e.data["effect"], e.data["rule"]) for e in events]


def test_allowed_denied_ungranted_invalid_rate_limited_and_approval_calls_in_one_turn(
    project, admin_user, runtime_tools
):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=GRANTS)

    result = run_agent_turn(agent_version=agent.active_version, input="Do the things")

    assert result.status == "parked", result.reason
    first = decisions(project)[:3]
    assert sorted(first) == sorted(
        [
            ("echo", "allow", "grant.effect"),
            ("notify", "deny", "grant.rule.1"),
            ("secret", "deny", "grant.missing"),
        ]
    )
    assert decisions(project)[3:] == [
        ("echo", "deny", "schema"),
        ("ping", "allow", "grant.effect"),
        ("ping", "deny", "grant.rate_limit"),
        ("notify", "require_approval", "grant.rule.2"),
    ]
    executed = AuditEvent.objects.filter(project=project, action="tool.executed")
    assert sorted(e.data["tool"] for e in executed) == ["echo", "ping"]

    turn = AgentTurn.objects.get(pk=result.turn_id)
    assert turn.status == "parked"
    messages = ModelMessagesTypeAdapter.validate_python(turn.messages)
    returns = {
        part.tool_name: part.model_response_str()
        for message in messages
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    assert "REFUSED by governance policy (rule grant.rule.1)" in returns["notify"]
    assert "rule grant.rate_limit" in returns["ping"]
    [pending] = turn.pending
    assert pending["tool_name"] == "notify" and pending["rule"] == "grant.rule.2"
    approval = ApprovalRequest.objects.get(pk=pending["approval_request_id"])
    assert approval.status == "pending"
    assert approval.payload["args_hash"] == pending["args_hash"]
    assert result.approval_request_ids == [approval.pk]
    # Every model request was priced and charged once.
    entries = CostEntry.objects.filter(project=project, kind="model")
    assert entries.count() == turn.model_requests == 5
    assert all(entry.input_tokens > 0 for entry in entries)
    assert AuditEvent.objects.filter(project=project, action="agent.turn.parked").exists()


def test_a_final_text_completes_the_turn(project, admin_user, runtime_tools):
    scripted_endpoint(project, {"responses": [{"text": "Hello there."}]})
    agent = make_agent(project, admin_user, grants=GRANTS)

    result = run_agent_turn(agent_version=agent.active_version, input="hi")

    assert (result.status, result.output) == ("completed", "Hello there.")
    assert result.cost_usd > 0
    [call] = AuditEvent.objects.filter(project=project, action="model.call")
    assert call.data["usage"]["input"] > 0
    assert call.data["usage"]["output"] == 3  # "Hello there." in cl100k_base


def test_too_many_tool_calls_in_a_turn_end_it_failed_and_audited(
    project, admin_user, runtime_tools
):
    calls = [{"name": "echo", "arguments": {"text": str(n)}} for n in range(3)]
    scripted_endpoint(project, {"responses": [{"tool_calls": calls}, {"text": "done"}]})
    agent = make_agent(project, admin_user, grants=GRANTS, max_tool_calls_per_turn=2)

    result = run_agent_turn(agent_version=agent.active_version, input="go")

    assert (result.status, result.rule) == ("failed", "usage_limit")
    assert "tool_calls_limit" in result.reason or "tool call" in result.reason.lower()
    failed = AuditEvent.objects.get(project=project, action="agent.turn.failed")
    assert failed.data["rule"] == "usage_limit"
    assert not AuditEvent.objects.filter(project=project, action="tool.executed").exists()


def test_the_policy_caps_agent_invocations_per_run(project, admin_user, runtime_tools):
    from governance.services import policy_create, policy_version_create

    policy = policy_create(project=project, slug="default", actor=admin_user)
    policy_version_create(
        policy=policy, document="caps:\n  max_agent_invocations_per_run: 1\n", actor=admin_user
    )
    scripted_endpoint(project, {"responses": [{"text": "ok"}]})
    agent = make_agent(project, admin_user, grants=GRANTS)

    first = run_agent_turn(agent_version=agent.active_version, input="a", run_id="run-7")
    second = run_agent_turn(agent_version=agent.active_version, input="b", run_id="run-7")
    other = run_agent_turn(agent_version=agent.active_version, input="c", run_id="run-8")

    assert [first.status, second.status, other.status] == ["completed", "failed", "completed"]
    assert second.rule == "caps.max_agent_invocations_per_run"
