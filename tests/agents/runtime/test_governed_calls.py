"""Governed model and tool calls against real components: PII never reaches the provider,
tool results are redacted before the model sees them, a hard budget stops the next request,
and an OpenAI-compatible provider (a real local HTTP server) round-trips a tool call."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic_ai.messages import ModelMessagesTypeAdapter, ToolReturnPart

from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from agents.services import model_endpoint_create
from governance.budgets import budget_create
from governance.models import AuditEvent, CostEntry
from governance.services import policy_create, policy_version_create

from .conftest import GRANTS, make_agent, scripted_endpoint
from .openai_server import ChatCompletionsServer

pytestmark = pytest.mark.django_db

SSN = "212-67-4532"


def set_policy(project, actor, document: str):
    policy = policy_create(project=project, slug="default", actor=actor)
    return policy_version_create(policy=policy, document=document, actor=actor)


def local_endpoint(project, server, name="local"):
    return model_endpoint_create(
        project=project,
        name=name,
        kind="openai_compatible",
        base_url=server.base_url,
        price_overrides={"local-model": {"input_per_mtok": "1", "output_per_mtok": "2"}},
    )


def local_agent(project, actor, **config):
    return make_agent(
        project, actor, grants=GRANTS, endpoint="local", model_name="local-model", **config
    )


def tool_returns(turn_id):
    turn = AgentTurn.objects.get(pk=turn_id)
    messages = ModelMessagesTypeAdapter.validate_python(turn.messages)
    return [
        part.model_response_str()
        for message in messages
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def test_an_openai_compatible_provider_round_trips_a_tool_call(project, admin_user, runtime_tools):
    replies = [{"tool_calls": [("echo", {"text": "ping"})]}, {"content": "The echo said ping."}]
    with ChatCompletionsServer(replies) as server:
        local_endpoint(project, server)
        agent = local_agent(project, admin_user)
        result = run_agent_turn(agent_version=agent.active_version, input="Echo ping")

    assert (result.status, result.output) == ("completed", "The echo said ping."), result.reason
    first, second = server.received
    assert first["model"] == "local-model"
    assert [t["function"]["name"] for t in first["tools"]] == ["echo", "notify", "ping"]
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == "call_0_0"
    assert "ping" in tool_message["content"]
    entries = CostEntry.objects.filter(project=project, kind="model").order_by("pk")
    # 20 prompt tokens at $1/M + 5 completion tokens at $2/M, as the server reported.
    assert [e.cost_usd for e in entries] == [Decimal("0.00003")] * 2
    assert [e.input_tokens for e in entries] == [20, 20]


def test_a_prompt_with_an_ssn_never_reaches_the_provider(project, admin_user, runtime_tools):
    set_policy(project, admin_user, "pii:\n  model_input:\n    US_SSN: {action: block}\n")
    with ChatCompletionsServer([{"content": "never"}]) as server:
        local_endpoint(project, server)
        agent = local_agent(project, admin_user)
        result = run_agent_turn(
            agent_version=agent.active_version, input=f"My SSN is {SSN}, please file it."
        )

    assert (result.status, result.rule) == ("failed", "pii.model_input")
    assert server.received == []
    refused = AuditEvent.objects.get(project=project, action="model.call.refused")
    assert refused.data["rule"] == "pii.model_input"
    assert SSN not in str(refused.data)


def test_a_redact_rule_sends_the_prompt_without_the_ssn(project, admin_user, runtime_tools):
    set_policy(project, admin_user, "pii:\n  model_input:\n    US_SSN: {action: redact}\n")
    with ChatCompletionsServer([{"content": "Filed."}]) as server:
        local_endpoint(project, server)
        agent = local_agent(project, admin_user)
        result = run_agent_turn(
            agent_version=agent.active_version, input=f"My SSN is {SSN}, please file it."
        )

    assert result.status == "completed", result.reason
    [request] = server.received
    sent = server.texts()
    assert SSN not in sent
    assert "<US_SSN>" in request["messages"][-1]["content"]


def test_a_tool_result_with_an_email_is_redacted_before_the_model_sees_it(
    project, admin_user, runtime_tools
):
    set_policy(project, admin_user, "pii:\n  tool_output:\n    EMAIL_ADDRESS: {action: redact}\n")
    replies = [
        {"tool_calls": [("echo", {"text": "write to jane.doe@example.com"})]},
        {"content": "Done."},
    ]
    with ChatCompletionsServer(replies) as server:
        local_endpoint(project, server)
        agent = local_agent(project, admin_user)
        result = run_agent_turn(agent_version=agent.active_version, input="Echo it")

    assert result.status == "completed", result.reason
    tool_message = next(m for m in server.received[1]["messages"] if m["role"] == "tool")
    assert "jane.doe@example.com" not in tool_message["content"]
    assert "<EMAIL_ADDRESS>" in tool_message["content"]
    assert all("jane.doe@example.com" not in text for text in tool_returns(result.turn_id))
    executed = AuditEvent.objects.get(project=project, action="tool.executed")
    assert executed.data["pii"] == ["EMAIL_ADDRESS"]


def test_a_hard_budget_stops_the_next_model_request_before_it_is_sent(
    project, admin_user, runtime_tools
):
    # A request reserves (prompt tokens x $1 + 256 max output tokens x $2) / 1M: the first
    # (a short prompt) about $0.00055 fits under $0.0008. It settles at its real cost, ~200
    # output tokens (~$0.0004); the second request (the call and its ~200-token result in
    # its prompt) would reserve ~$0.0009 more: refused before it is sent.
    budget_create(
        project=project,
        name="tiny",
        scope="project",
        period="total",
        limit_usd=Decimal("0.0008"),
        hard=True,
    )
    script = {
        "responses": [
            {"tool_calls": [{"name": "echo", "arguments": {"text": " word" * 200}}]},
            {"text": "done"},
        ]
    }
    scripted_endpoint(project, script)
    agent = make_agent(project, admin_user, grants=GRANTS)

    result = run_agent_turn(agent_version=agent.active_version, input="go")

    assert (result.status, result.rule) == ("failed", "budget.exceeded")
    assert AuditEvent.objects.filter(project=project, action="model.call").count() == 1
    assert CostEntry.objects.filter(project=project).count() == 1
    assert AuditEvent.objects.filter(project=project, action="budget.reservation.denied").exists()


def test_a_model_without_a_price_is_not_called(project, admin_user, runtime_tools):
    with ChatCompletionsServer([{"content": "never"}]) as server:
        model_endpoint_create(
            project=project, name="local", kind="openai_compatible", base_url=server.base_url
        )
        agent = local_agent(project, admin_user)
        result = run_agent_turn(agent_version=agent.active_version, input="hi")
    assert (result.status, result.rule) == ("failed", "budget.unpriced")
    assert server.received == []


def test_an_endpoint_the_policy_does_not_allow_is_not_called(project, admin_user, runtime_tools):
    set_policy(project, admin_user, "allowed_model_endpoints: [other]\n")
    with ChatCompletionsServer([{"content": "never"}]) as server:
        local_endpoint(project, server)
        agent = local_agent(project, admin_user)
        result = run_agent_turn(agent_version=agent.active_version, input="hi")
    assert (result.status, result.rule) == ("failed", "model.endpoint_not_allowed")
    assert server.received == []


def test_dotted_tool_names_reach_the_provider_as_safe_names(project, admin_user):
    """OpenAI and Anthropic reject dots in function names: the model sees ``crm_lookup``
    and ``crm_lookup_2`` (the plain name is taken), governance and the audit log the real
    names."""
    from .conftest import builtin

    for name in ("crm.lookup", "crm_lookup", "crm-lookup"):
        builtin(project, name)
    grants = [{"tool": "crm.lookup"}, {"tool": "crm_lookup"}, {"tool": "crm-lookup"}]
    replies = [
        {"tool_calls": [("crm_lookup_2", {"text": "dotted"})]},
        {"content": "Looked it up."},
    ]
    with ChatCompletionsServer(replies) as server:
        local_endpoint(project, server)
        agent = make_agent(
            project, admin_user, grants=grants, endpoint="local", model_name="local-model"
        )
        result = run_agent_turn(agent_version=agent.active_version, input="Look up")

    assert result.status == "completed", result.reason
    offered = sorted(t["function"]["name"] for t in server.received[0]["tools"])
    assert offered == ["crm-lookup", "crm_lookup", "crm_lookup_2"]
    executed = AuditEvent.objects.get(project=project, action="tool.executed")
    assert executed.data["tool"] == "crm.lookup"
    assert "dotted" in tool_returns(result.turn_id)[0]


def test_a_scripted_model_calls_a_dotted_tool_by_its_registered_name(project, admin_user):
    from .conftest import builtin

    builtin(project, "crm.lookup")
    scripted_endpoint(
        project,
        {
            "responses": [
                {"tool_calls": [{"name": "crm.lookup", "arguments": {"text": "x"}}]},
                {"text": "done"},
            ]
        },
    )
    agent = make_agent(project, admin_user, grants=[{"tool": "crm.lookup"}])

    result = run_agent_turn(agent_version=agent.active_version, input="go")

    assert (result.status, result.output) == ("completed", "done"), result.reason
    decision = AuditEvent.objects.get(project=project, action="tool.decision")
    assert (decision.data["tool"], decision.data["effect"]) == ("crm.lookup", "allow")
