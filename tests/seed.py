"""A realistic project for API-wide tests (fuzzing, history endpoints, replay): agents with
versions, tools, a policy with two versions, budgets, governed turns with their audit
events and cost entries, a budget alert and an open circuit breaker."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from agents.models import Agent, AgentTurn
from agents.runtime import run_agent_turn
from agents.services import agent_create, agent_version_create, model_endpoint_create, tool_create
from governance.budgets import budget_create
from governance.engine import PolicySnapshot, record_tool_outcome
from governance.services import policy_create, policy_version_create

TEXT_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
PRICES = {"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}}
GRANTS = [
    {"tool": "echo"},
    {
        "tool": "notify",
        "rules": [
            {"when": 'args.text == "forbidden"', "then": "deny"},
            {"when": 'args.text == "big"', "then": "require_approval"},
        ],
    },
    {"tool": "ping", "rate_limit_calls": 1, "rate_limit_window_seconds": 3600},
]
# One turn: allowed, denied by a rule, ungranted, invalid arguments, rate limited and a
# call that needs approval (the turn parks).
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
POLICY_V1 = "caps:\n  max_tool_calls_per_run: 50\n"
POLICY_V2 = "caps:\n  max_tool_calls_per_run: 40\n"


@dataclass
class Seeded:
    agent: Agent
    turn: AgentTurn


def seed_registry(project, actor) -> Agent:
    """Endpoint, four built-in tools, the default policy (two versions) and agent
    ``helper`` (version 1 active, plus an inactive version 2)."""
    model_endpoint_create(
        project=project,
        name="scripted",
        kind="scripted",
        default_model="scripted-1",
        price_overrides=PRICES,
        script=SCRIPT,
    )
    for name in ("echo", "notify", "ping", "secret"):
        tool_create(
            project=project,
            name=name,
            kind="builtin",
            builtin_name="echo",
            input_schema=TEXT_SCHEMA,
            description=f"The {name} tool.",
        )
    policy = policy_create(project=project, slug="default", actor=actor)
    policy_version_create(policy=policy, document=POLICY_V1, actor=actor)
    policy_version_create(policy=policy, document=POLICY_V2, actor=actor)
    agent = agent_create(
        project=project,
        slug="helper",
        description="Helps.",
        config={
            "model_endpoint": "scripted",
            "model_name": "scripted-1",
            "instructions": "You help.",
            "max_output_tokens": 256,
            "grants": GRANTS,
        },
        actor=actor,
    )
    agent_version_create(agent=agent, changes={"temperature": 0.5}, activate=False, actor=actor)
    return agent


def seed_project(project, actor) -> Seeded:
    """The registry plus a governed turn, budgets (one soft budget gets an alert) and a
    tool whose circuit breaker is open."""
    from governance import engine

    # This process's breaker snapshot may hold an earlier test's open breaker (SQLite
    # reuses ids after a rollback).
    engine._breaker_cache.clear()
    agent = seed_registry(project, actor)
    budget_create(
        project=project, name="monthly", scope="project", period="month", limit_usd=Decimal(100)
    )
    budget_create(
        project=project,
        name="tiny",
        scope="project",
        period="day",
        limit_usd=Decimal("0.00001"),
        hard=False,
    )
    agent.refresh_from_db()
    result = run_agent_turn(
        agent_version=agent.active_version, input="Do the things", user=actor, run_id="run-1"
    )
    for ok in (False, False, False, False, False):
        record_tool_outcome(
            tool_id=agent.active_version.grants.first().tool_id,
            ok=ok,
            policy=PolicySnapshot.defaults(),
            project_id=project.pk,
            label="echo",
        )
    engine._breaker_cache.clear()
    return Seeded(agent=agent, turn=AgentTurn.objects.get(pk=result.turn_id))
