"""Idempotency keys of a turn's tool calls: from the turn (standalone), or from a
``key_scope`` (a flow step), so a turn run again for the same scope repeats its keys."""

from __future__ import annotations

import pytest

from agents.runtime import run_agent_turn
from agents.services import tool_create
from tests.flows.tool_server import ToolServer

from .conftest import make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db

CALL = {"name": "effect", "arguments": {"op": "pay"}}
SCRIPT = {
    "responses": [
        {"tool_calls": [CALL]},
        {"tool_calls": [{"name": "effect", "arguments": {"op": "other"}}, CALL]},
        {"text": "done"},
    ]
}


@pytest.fixture
def server():
    server = ToolServer()
    yield server
    server.stop()


@pytest.fixture
def agent(project, admin_user, server):
    tool_create(
        project=project,
        name="effect",
        kind="http",
        http_url=server.url + "/effect",
        http_method="POST",
        input_schema={"type": "object"},
    )
    scripted_endpoint(project, SCRIPT)
    return make_agent(project, admin_user, grants=[{"tool": "effect"}])


def keys_of_a_turn(agent, server, **kwargs) -> list[str]:
    before = len(server.requests)
    result = run_agent_turn(agent_version=agent.active_version, input="go", **kwargs)
    assert result.status == "completed", result.reason
    return [r["key"] for r in server.requests[before:]]


def test_a_scoped_turn_run_again_repeats_its_keys(agent, server):
    first = keys_of_a_turn(agent, server, run_id="7", step_id="42", key_scope="flow:7:42")
    again = keys_of_a_turn(agent, server, run_id="7", step_id="42", key_scope="flow:7:42")
    assert first == again
    pay, other, pay_again = first
    assert len({pay, other, pay_again}) == 3  # a repeated call is another call
    elsewhere = keys_of_a_turn(agent, server, run_id="7", step_id="43", key_scope="flow:7:43")
    assert not set(elsewhere) & set(first)


def test_standalone_turns_keep_keys_of_their_own(agent, server):
    first = keys_of_a_turn(agent, server)
    again = keys_of_a_turn(agent, server)
    assert len(set(first)) == 3 and not set(first) & set(again)
