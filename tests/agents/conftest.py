"""Fixtures for the agent registry: an endpoint, tools and a config to build agents from."""

from __future__ import annotations

import pytest

from agents.services import model_endpoint_create, tool_create

OBJECT_SCHEMA = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["to"],
}


def mcp_tool(project, server, name: str, remote_name: str, **fields):
    """An ``mcp`` tool of ``server`` as a sync would create it (object schema by default)."""
    fields.setdefault("input_schema", {"type": "object"})
    return tool_create(
        project=project,
        name=name,
        kind="mcp",
        mcp_server=server,
        mcp_tool_name=remote_name,
        **fields,
    )


@pytest.fixture
def endpoint(project):
    return model_endpoint_create(
        project=project, name="scripted", kind="scripted", default_model="scripted-1"
    )


@pytest.fixture
def tools(project):
    return {
        "payments.send": tool_create(
            project=project,
            name="payments.send",
            kind="builtin",
            builtin_name="echo",
            input_schema=OBJECT_SCHEMA,
            risk="financial",
        ),
        "echo": tool_create(
            project=project,
            name="echo",
            kind="builtin",
            builtin_name="echo",
            input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        ),
    }


@pytest.fixture
def config(endpoint, tools):
    return {
        "model_endpoint": "scripted",
        "model_name": "scripted-1",
        "instructions": "You triage support tickets.",
        "temperature": 0.2,
        "max_output_tokens": 512,
        "grants": [
            {
                "tool": "payments.send",
                "effect": "allow",
                "rules": [
                    {"when": "args.amount > 100", "then": "require_approval"},
                    {"when": "args.amount > 10000", "then": "deny"},
                ],
                "max_calls_per_run": 3,
            },
            {"tool": "echo"},
        ],
    }
