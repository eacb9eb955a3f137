"""The local LLM path: an OpenAI-compatible endpoint sends ``content: ""`` (not null) for an
assistant message holding only tool calls (llama.cpp's server rejects null), and, when a
local server is reachable at ``LOCAL_LLM_BASE_URL`` (``make local-llm``), the demo's
drafter answers through it."""

from __future__ import annotations

import os

import httpx
import pytest

from agents.models import Agent
from agents.runtime import run_agent_turn
from agents.services import model_endpoint_create, tool_create
from tests.agents.runtime.conftest import TEXT_SCHEMA, make_agent
from tests.agents.runtime.openai_server import ChatCompletionsServer

from .conftest import load_demo

pytestmark = pytest.mark.django_db


def test_an_assistant_message_with_only_tool_calls_is_sent_with_empty_content(project, admin_user):
    tool_create(
        project=project, name="echo", kind="builtin", builtin_name="echo", input_schema=TEXT_SCHEMA
    )
    replies = [{"tool_calls": [("echo", {"text": "ping"})]}, {"content": "done"}]
    with ChatCompletionsServer(replies) as server:
        model_endpoint_create(
            project=project,
            name="local",
            kind="openai_compatible",
            base_url=server.base_url,
            price_overrides={"local-model": {"input_per_mtok": "0", "output_per_mtok": "0"}},
        )
        agent = make_agent(
            project,
            admin_user,
            grants=[{"tool": "echo"}],
            endpoint="local",
            model_name="local-model",
        )
        result = run_agent_turn(agent_version=agent.active_version, input="Echo ping")

    assert result.status == "completed", result.reason
    [assistant] = [m for m in server.received[1]["messages"] if m["role"] == "assistant"]
    assert assistant["tool_calls"] and assistant["content"] == ""


def local_llm_url() -> str | None:
    """``LOCAL_LLM_BASE_URL`` when a server answers ``GET /models`` there, else None."""
    base_url = os.environ.get("LOCAL_LLM_BASE_URL", "")
    if not base_url:
        return None
    try:
        httpx.get(base_url.rstrip("/") + "/models", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return base_url


@pytest.mark.skipif(
    local_llm_url() is None,
    reason="no local LLM server: set LOCAL_LLM_BASE_URL to a running OpenAI-compatible "
    "server (make local-llm serves SmolLM2-135M-Instruct at http://127.0.0.1:8081/v1)",
)
def test_the_demo_drafter_answers_through_the_local_llm(demo_var, settings, monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings.LOCAL_LLM_BASE_URL = local_llm_url()
    load_demo()
    drafter = Agent.objects.get(project__slug="demo", slug="drafter").active_version
    assert drafter.model_endpoint.kind == "openai_compatible"
    result = run_agent_turn(
        agent_version=drafter,
        input="category=billing\nresearch: none\nrefund: none\nmessage: Where is my invoice?",
    )
    assert result.status == "completed", result.reason
    assert result.output.strip()
