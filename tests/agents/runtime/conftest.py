"""Fixtures for the agent runtime: a priced scripted endpoint, built-in tools, an agent."""

from __future__ import annotations

import pytest

from agents.services import agent_create, model_endpoint_create, tool_create

TEXT_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
PRICES = {"scripted-1": {"input_per_mtok": "1", "output_per_mtok": "2"}}


def scripted_endpoint(project, script, name="scripted"):
    return model_endpoint_create(
        project=project,
        name=name,
        kind="scripted",
        default_model="scripted-1",
        price_overrides=PRICES,
        script=script,
    )


def builtin(project, name, **fields):
    return tool_create(
        project=project,
        name=name,
        kind="builtin",
        builtin_name="echo",
        input_schema=TEXT_SCHEMA,
        **fields,
    )


@pytest.fixture
def runtime_tools(project):
    return {name: builtin(project, name) for name in ("echo", "notify", "ping", "secret")}


def make_agent(project, actor, *, grants, slug="helper", endpoint="scripted", **config):
    return agent_create(
        project=project,
        slug=slug,
        config={
            "model_endpoint": endpoint,
            "model_name": "scripted-1",
            "instructions": "You help.",
            "max_output_tokens": 256,
            "grants": grants,
            **config,
        },
        actor=actor,
    )


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
