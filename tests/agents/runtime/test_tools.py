"""Tool execution in a governed turn against real servers: MCP (the FastMCP fixture server on
loopback) with the idempotency key in the call metadata, HTTP with an Idempotency-Key header."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mcp.server.mcpserver import Context
from pydantic_ai.messages import ModelMessagesTypeAdapter, ToolReturnPart

from agents.connectors import mcp_server_sync
from agents.models import AgentTurn
from agents.runtime import run_agent_turn
from agents.services import mcp_server_create, tool_create
from governance.models import AuditEvent
from tests.agents.mcp_fixture_server import RunningMCPServer, build_server

from .conftest import make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db


def key_of(ctx: Context) -> str:
    """Answer the idempotency key this call carried in its _meta."""
    meta = ctx.request_context.meta or {}
    return str(dict(meta).get("idempotency_key", ""))


def tool_results(result):
    return [e for e in result.events if e["event"] == "tool.executed"]


def test_an_mcp_tool_runs_on_a_real_fastmcp_server_with_the_idempotency_key(project, admin_user):
    mcp = build_server()
    mcp.add_tool(key_of)
    with RunningMCPServer(mcp) as running:
        server = mcp_server_create(
            project=project, name="fixture", transport="streamable_http", url=running.url
        )
        assert mcp_server_sync(server=server).error == ""
        scripted_endpoint(
            project,
            {
                "responses": [
                    {
                        "tool_calls": [
                            {"name": "add", "arguments": {"a": 2, "b": 40}},
                            {"name": "key_of", "arguments": {}},
                        ]
                    },
                    {"text": "42"},
                ]
            },
        )
        agent = make_agent(project, admin_user, grants=[{"tool": "add"}, {"tool": "key_of"}])
        result = run_agent_turn(agent_version=agent.active_version, input="add", run_id="run-1")

    assert (result.status, result.output) == ("completed", "42"), result.reason
    executed = AuditEvent.objects.filter(project=project, action="tool.executed")
    assert sorted((e.data["tool"], e.data["ok"]) for e in executed) == [
        ("add", True),
        ("key_of", True),
    ]
    turn = AgentTurn.objects.get(pk=result.turn_id)
    returns = {
        p.tool_name: p
        for m in ModelMessagesTypeAdapter.validate_python(turn.messages)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    }
    assert returns["add"].content == {"sum": 42}
    # sha256 of (run, step, turn, tool call id): the same call retried sends the same key.
    call_id = returns["key_of"].tool_call_id
    expected = hashlib.sha256(f"tool:run-1:-:{turn.pk}:{call_id}".encode()).hexdigest()
    assert returns["key_of"].content == {"result": expected}


def test_an_http_tool_gets_an_idempotency_key_header(project, admin_user):
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            seen.append(self.headers.get("Idempotency-Key", ""))
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        tool_create(
            project=project,
            name="hook",
            kind="http",
            http_url=f"http://127.0.0.1:{httpd.server_address[1]}/hook",
            http_method="POST",
            input_schema={"type": "object"},
        )
        scripted_endpoint(
            project,
            {"responses": [{"tool_calls": [{"name": "hook", "arguments": {}}]}, {"text": "ok"}]},
        )
        agent = make_agent(project, admin_user, grants=[{"tool": "hook"}])
        result = run_agent_turn(agent_version=agent.active_version, input="go", run_id="r9")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.status == "completed", result.reason
    assert len(seen) == 1 and len(seen[0]) == 64
