"""Connectors against real servers on 127.0.0.1: model endpoint checks, MCP sync, tool calls, prices."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from django.core.exceptions import ValidationError

from agents.builtins import builtin_tool
from agents.builtins import registry as builtin_registry
from agents.connectors import (
    StdioCommandNotAllowedError,
    mcp_server_sync,
    model_endpoint_test,
    tool_invoke,
)
from agents.models import ModelEndpoint, Tool
from agents.pricing import ModelPrice, call_cost_usd, model_price
from agents.services import (
    mcp_server_create,
    model_endpoint_create,
    tool_create,
    tool_set_removed,
)
from governance.models import AuditEvent
from tests.agents import mcp_fixture_server
from tests.agents.conftest import mcp_tool
from tests.agents.mcp_fixture_server import RunningMCPServer, add_three, build_server, greet

pytestmark = pytest.mark.django_db

API_KEY = "plain-key-4242-zz"  # not token-shaped: the audit masking would not hide a leak
MCP_TOKEN = "mcp-fixture-token-77"


# --- A recording HTTP server ---------------------------------------------------------------


class RecordingServer:
    """stdlib HTTP server in a thread; ``respond(request) -> (status, headers, body)``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.respond = lambda request: (200, {"Content-Type": "application/json"}, b"{}")
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = {
                    "method": self.command,
                    "path": parts.path,
                    "query": parse_qsl(parts.query),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length) if length else b"",
                }
                recorder.requests.append(request)
                status, headers, body = recorder.respond(request)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def json(self, status: int, data) -> tuple[int, dict, bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


@pytest.fixture
def http_server():
    server = RecordingServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def audit_data_text() -> str:
    return json.dumps(list(AuditEvent.objects.values("action", "data", "object_repr")))


# --- model_endpoint_test -------------------------------------------------------------------


def models_route(expected_auth: dict[str, str]):
    def respond(request):
        if any(request["headers"].get(k) != v for k, v in expected_auth.items()):
            return (
                401,
                {"Content-Type": "application/json"},
                json.dumps(
                    {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}
                ).encode(),
            )
        data = {"object": "list", "data": [{"id": "gpt-4o"}, {"id": "llama3.1:8b"}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()

    return respond


def test_scripted_endpoint_passes_without_network(endpoint):
    result = model_endpoint_test(endpoint=endpoint)
    assert result.ok
    assert result.models == ["scripted-1"]
    event = AuditEvent.objects.filter(action="model_endpoint.tested").get()
    assert event.data["ok"] is True


def test_openai_compatible_endpoint_lists_models_with_the_env_var_key(
    project, http_server, monkeypatch
):
    monkeypatch.setenv("LOCAL_LLM_KEY", API_KEY)
    http_server.respond = models_route({"authorization": f"Bearer {API_KEY}"})
    endpoint = model_endpoint_create(
        project=project,
        name="local",
        kind="openai_compatible",
        base_url=f"{http_server.url}/v1",
        credential_env_var="LOCAL_LLM_KEY",
    )

    result = model_endpoint_test(endpoint=endpoint)

    assert result.ok, result.detail
    assert result.models == ["gpt-4o", "llama3.1:8b"]
    assert [(r["method"], r["path"]) for r in http_server.requests] == [("GET", "/v1/models")]
    assert API_KEY not in result.detail
    event = AuditEvent.objects.filter(action="model_endpoint.tested").get()
    assert event.data["ok"] is True and event.data["model_count"] == 2
    assert API_KEY not in audit_data_text()


def test_openai_endpoint_uses_the_stored_key(project, http_server):
    http_server.respond = models_route({"authorization": f"Bearer {API_KEY}"})
    endpoint = model_endpoint_create(
        project=project,
        name="oai",
        kind="openai",
        base_url=f"{http_server.url}/v1",
        api_key=API_KEY,
    )
    assert model_endpoint_test(endpoint=endpoint).ok
    assert API_KEY not in audit_data_text()


def test_anthropic_endpoint_sends_x_api_key_and_version(project, http_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", API_KEY)
    http_server.respond = models_route({"x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    endpoint = model_endpoint_create(
        project=project,
        name="claude",
        kind="anthropic",
        base_url=f"{http_server.url}/v1",
        credential_env_var="ANTHROPIC_TEST_KEY",
    )
    result = model_endpoint_test(endpoint=endpoint)
    assert result.ok, result.detail
    assert "authorization" not in http_server.requests[0]["headers"]


def test_compatible_endpoint_without_credential_sends_no_authorization(project, http_server):
    http_server.respond = models_route({})
    endpoint = model_endpoint_create(
        project=project, name="ollama", kind="openai_compatible", base_url=f"{http_server.url}/v1"
    )
    assert model_endpoint_test(endpoint=endpoint).ok
    assert "authorization" not in http_server.requests[0]["headers"]


def test_rejected_key_fails_with_the_status_and_never_shows_the_key(
    project, http_server, monkeypatch
):
    monkeypatch.setenv("LOCAL_LLM_KEY", API_KEY)
    http_server.respond = models_route({"authorization": "Bearer something-else"})
    endpoint = model_endpoint_create(
        project=project,
        name="local",
        kind="openai_compatible",
        base_url=f"{http_server.url}/v1",
        credential_env_var="LOCAL_LLM_KEY",
    )

    result = model_endpoint_test(endpoint=endpoint)

    assert not result.ok
    assert "401" in result.detail
    assert "Incorrect API key" in result.detail  # the provider's message, key scrubbed
    assert API_KEY not in result.detail
    event = AuditEvent.objects.filter(action="model_endpoint.tested").get()
    assert event.data["ok"] is False and "401" in event.data["detail"]
    assert API_KEY not in audit_data_text()


def test_unreachable_endpoint_fails(project, closed_port):
    endpoint = model_endpoint_create(
        project=project,
        name="gone",
        kind="openai_compatible",
        base_url=f"http://127.0.0.1:{closed_port}/v1",
    )
    result = model_endpoint_test(endpoint=endpoint)
    assert not result.ok
    assert "Cannot reach" in result.detail


def test_missing_key_variable_fails_naming_it_without_calling(project, http_server):
    endpoint = model_endpoint_create(
        project=project,
        name="oai",
        kind="openai",
        base_url=f"{http_server.url}/v1",
        credential_env_var="UNSET_PROVIDER_KEY_XYZ",
    )
    result = model_endpoint_test(endpoint=endpoint)
    assert not result.ok
    assert "UNSET_PROVIDER_KEY_XYZ" in result.detail
    assert http_server.requests == []


# --- MCP sync ------------------------------------------------------------------------------


@pytest.fixture
def running_mcp():
    with RunningMCPServer(build_server(), token=MCP_TOKEN) as server:
        yield server


@pytest.fixture
def mcp_row(project, running_mcp, monkeypatch):
    monkeypatch.setenv("FIXTURE_MCP_TOKEN", MCP_TOKEN)
    return mcp_server_create(
        project=project,
        name="fixture",
        transport="streamable_http",
        url=running_mcp.url,
        auth_env_var="FIXTURE_MCP_TOKEN",
    )


def test_sync_imports_the_servers_tools_with_their_schemas(mcp_row, running_mcp):
    result = mcp_server_sync(server=mcp_row)

    assert result.error == ""
    assert result.created == ["add", "fixture.9lives", "greet", "refuse", "shout", "slow"]
    assert result.updated == result.removed == result.unchanged == []
    assert set(running_mcp.authorization_headers) == {f"Bearer {MCP_TOKEN}"}

    add = Tool.objects.get(name="add")
    assert add.kind == "mcp" and add.mcp_server == mcp_row and add.mcp_tool_name == "add"
    assert add.description == "Add two integers."
    assert add.input_schema["properties"].keys() == {"a", "b"}
    assert add.input_schema["required"] == ["a", "b"]
    assert add.output_schema["properties"]["sum"]["type"] == "integer"
    assert add.risk == "read"  # annotated read-only
    assert Tool.objects.get(name="refuse").risk == "write"  # annotated not destructive
    assert Tool.objects.get(name="greet").risk == "destructive"  # MCP default
    assert Tool.objects.get(name="fixture.9lives").mcp_tool_name == "9lives"

    mcp_row.refresh_from_db()
    assert mcp_row.last_synced_at is not None and mcp_row.last_sync_error == ""
    event = AuditEvent.objects.filter(action="mcp_server.synced").get()
    assert event.data["created"] == result.created
    assert AuditEvent.objects.filter(action="tool.created").count() == 6


def test_resync_updates_changed_marks_missing_and_restores_returning_tools(mcp_row, running_mcp):
    mcp_server_sync(server=mcp_row)
    running_mcp.mcp.remove_tool("add")
    running_mcp.mcp.add_tool(add_three, name="add")
    running_mcp.mcp.remove_tool("greet")

    result = mcp_server_sync(server=mcp_row)

    assert result.error == ""
    assert result.created == []
    assert result.updated == ["add"]
    assert result.removed == ["greet"]
    assert result.unchanged == ["fixture.9lives", "refuse", "shout", "slow"]
    assert Tool.objects.get(name="add").input_schema["properties"].keys() == {"a", "b", "c"}
    greet_row = Tool.objects.get(name="greet")  # kept, only marked
    assert greet_row.removed_at is not None
    refused = tool_invoke(tool=greet_row, arguments={"name": "Ada"})
    assert not refused.ok and "removed" in refused.error

    running_mcp.mcp.add_tool(greet)
    result = mcp_server_sync(server=mcp_row)

    assert result.updated == ["greet"] and result.removed == []
    assert Tool.objects.get(name="greet").removed_at is None
    assert AuditEvent.objects.filter(action="tool.marked_removed").count() == 1
    assert AuditEvent.objects.filter(action="tool.restored").count() == 1


def test_tool_set_removed_marks_and_restores_each_once(project):
    server = mcp_server_create(
        project=project, name="crm", transport="streamable_http", url="http://127.0.0.1:9/mcp"
    )
    tool = mcp_tool(project, server, "crm.lookup", "lookup")
    assert tool_set_removed(tool=tool, removed=True).removed_at is not None
    tool_set_removed(tool=tool, removed=True)  # already removed: nothing to record
    assert Tool.objects.get(pk=tool.pk).removed_at is not None
    assert tool_set_removed(tool=tool, removed=False).removed_at is None
    events = AuditEvent.objects.filter(
        object_repr="crm.lookup", action__in=["tool.marked_removed", "tool.restored"]
    )
    assert [(e.action, e.data) for e in events.order_by("sequence")] == [
        ("tool.marked_removed", {"mcp_server": "crm"}),
        ("tool.restored", {"mcp_server": "crm"}),
    ]


def test_only_mcp_tools_can_be_marked_removed(tools):
    with pytest.raises(ValidationError) as info:
        tool_set_removed(tool=tools["echo"], removed=True)
    assert list(info.value.message_dict) == ["kind"]
    assert Tool.objects.get(name="echo").removed_at is None


def test_a_remote_tool_with_a_reserved_name_is_prefixed(project, mcp_row, running_mcp):
    running_mcp.mcp.add_tool(greet, name="new")
    result = mcp_server_sync(server=mcp_row)
    assert result.error == "" and "fixture.new" in result.created
    assert Tool.objects.get(name="fixture.new").mcp_tool_name == "new"


def test_sync_prefixes_the_server_name_when_the_remote_name_is_taken(project, mcp_row):
    tool_create(
        project=project,
        name="greet",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object"},
    )
    result = mcp_server_sync(server=mcp_row)
    assert "fixture.greet" in result.created
    assert Tool.objects.get(name="fixture.greet").mcp_tool_name == "greet"
    assert Tool.objects.get(name="greet").kind == "builtin"


def test_unreachable_server_records_the_error_and_touches_no_tool(
    project, mcp_row, running_mcp, closed_port
):
    mcp_server_sync(server=mcp_row)
    before = list(Tool.objects.order_by("pk").values())
    mcp_row.refresh_from_db()
    last_synced_at = mcp_row.last_synced_at
    mcp_row.url = f"http://127.0.0.1:{closed_port}/mcp"
    mcp_row.save()

    result = mcp_server_sync(server=mcp_row)

    assert result.error.startswith("Cannot list tools: ConnectError")
    assert result.created == result.updated == result.removed == result.unchanged == []
    assert list(Tool.objects.order_by("pk").values()) == before
    mcp_row.refresh_from_db()
    assert mcp_row.last_sync_error == result.error
    assert mcp_row.last_synced_at == last_synced_at
    event = AuditEvent.objects.filter(action="mcp_server.sync_failed").get()
    assert event.data["error"] == result.error


def test_a_server_that_does_not_speak_mcp_fails_the_sync(project, http_server):
    http_server.respond = lambda request: (200, {"Content-Type": "text/plain"}, b"hello")
    server = mcp_server_create(
        project=project, name="web", transport="streamable_http", url=f"{http_server.url}/mcp"
    )
    result = mcp_server_sync(server=server)
    assert result.error == "Cannot list tools: MCPError: Unexpected content type: text/plain"
    assert not Tool.objects.exists()


def test_wrong_or_missing_token_fails_the_sync(project, mcp_row, monkeypatch):
    monkeypatch.setenv("FIXTURE_MCP_TOKEN", "wrong-token")
    result = mcp_server_sync(server=mcp_row)
    assert "401" in result.error
    assert "wrong-token" not in result.error

    monkeypatch.delenv("FIXTURE_MCP_TOKEN")
    result = mcp_server_sync(server=mcp_row)
    assert "FIXTURE_MCP_TOKEN" in result.error
    assert not Tool.objects.exists()


@pytest.fixture
def stdio_row(project):
    """The fixture server over stdio, launched as ``python mcp_fixture_server.py``."""
    return mcp_server_create(
        project=project,
        name="local",
        transport="stdio",
        command=[sys.executable, str(Path(mcp_fixture_server.__file__).resolve())],
    )


def test_sync_over_stdio(stdio_row, settings):
    settings.MCP_STDIO_COMMANDS_ALLOWED = [sys.executable]
    result = mcp_server_sync(server=stdio_row)
    assert result.error == ""
    assert "greet" in result.created

    answer = tool_invoke(tool=Tool.objects.get(name="add"), arguments={"a": 1, "b": 1})
    assert answer.ok and answer.output == {"sum": 2}


@pytest.mark.parametrize("allowed", [[], ["uvx", "python3-not-this-one"]])
def test_a_stdio_command_not_allowed_is_never_launched(stdio_row, settings, allowed):
    settings.MCP_STDIO_COMMANDS_ALLOWED = allowed
    with pytest.raises(StdioCommandNotAllowedError) as info:
        mcp_server_sync(server=stdio_row)
    [message] = info.value.message_dict["command"]
    assert message.startswith(f"The command {sys.executable!r} is not allowed")
    assert f"allowed now: {', '.join(allowed) or 'none'}" in message
    assert not Tool.objects.exists()  # launched, the server would have listed six tools
    stdio_row.refresh_from_db()
    assert stdio_row.last_sync_error == message and stdio_row.last_synced_at is None
    event = AuditEvent.objects.get(action="mcp_server.sync_refused")
    assert event.data == {"error": message}


def test_a_tool_of_a_stdio_server_no_longer_allowed_is_refused(stdio_row, settings):
    settings.MCP_STDIO_COMMANDS_ALLOWED = [sys.executable]
    mcp_server_sync(server=stdio_row)
    settings.MCP_STDIO_COMMANDS_ALLOWED = []

    answer = tool_invoke(tool=Tool.objects.get(name="add"), arguments={"a": 1, "b": 1})

    assert not answer.ok and answer.output is None
    assert "is not allowed for stdio MCP servers" in answer.error
    event = AuditEvent.objects.get(action="tool.invoke_refused")
    assert event.data == {"mcp_server": "local", "error": answer.error}
    assert event.object_repr == "add"


# --- tool_invoke: MCP ----------------------------------------------------------------------


def test_invoking_an_mcp_tool_returns_the_servers_answer(mcp_row):
    mcp_server_sync(server=mcp_row)

    answer = tool_invoke(tool=Tool.objects.get(name="add"), arguments={"a": 2, "b": 3})
    assert answer.ok, answer.error
    assert answer.output == {"sum": 5}
    assert answer.duration_ms >= 0

    answer = tool_invoke(tool=Tool.objects.get(name="greet"), arguments={"name": "Ada"})
    assert answer.ok and answer.output == {"result": "hello Ada"}

    answer = tool_invoke(tool=Tool.objects.get(name="shout"), arguments={"text": "hey"})
    assert answer.ok and answer.output == "HEY"  # text content when nothing is structured


def test_invoking_an_mcp_tool_from_inside_an_event_loop(mcp_row):
    """An async caller (an async view) already runs a loop; the call gets its own."""
    mcp_server_sync(server=mcp_row)
    tool = Tool.objects.select_related("mcp_server").get(name="add")

    async def caller():
        return tool_invoke(tool=tool, arguments={"a": 20, "b": 22})

    answer = asyncio.run(caller())
    assert answer.ok and answer.output == {"sum": 42}


def test_mcp_tool_errors_and_timeouts_fail_the_call(mcp_row):
    mcp_server_sync(server=mcp_row)

    answer = tool_invoke(tool=Tool.objects.get(name="refuse"), arguments={"reason": "no"})
    assert not answer.ok
    assert "refused: no" in answer.error

    mcp_fixture_server.slow_calls.clear()
    answer = tool_invoke(
        tool=Tool.objects.get(name="slow"), arguments={"seconds": 30}, timeout_seconds=1
    )
    assert mcp_fixture_server.slow_calls == [30]  # the server got the call...
    assert not answer.ok and answer.output is None  # ...and its answer never came back
    assert answer.error == "Timed out after 1 s."

    answer = tool_invoke(tool=Tool.objects.get(name="add"), arguments={"a": "x", "b": 1})
    assert not answer.ok and answer.error.startswith("Invalid arguments: a:")


# --- tool_invoke: HTTP ---------------------------------------------------------------------


def http_tool(project, url, **fields):
    return tool_create(
        project=project,
        name=fields.pop("name", "crm.lookup"),
        kind="http",
        http_url=url,
        input_schema=fields.pop(
            "input_schema",
            {
                "type": "object",
                "properties": {"customer": {"type": "string"}, "tags": {"type": "array"}},
                "required": ["customer"],
            },
        ),
        **fields,
    )


def test_http_post_sends_json_secret_header_and_idempotency_key(project, http_server, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "crm-secret-1")
    http_server.respond = lambda request: http_server.json(200, {"found": True})
    tool = http_tool(
        project,
        f"{http_server.url}/lookup",
        http_headers={"X-Api-Token": {"secret_env": "CRM_TOKEN"}, "X-Team": {"value": "ops"}},
    )

    answer = tool_invoke(
        tool=tool, arguments={"customer": "c-1", "tags": ["a"]}, idempotency_key="run1:s2:0"
    )

    assert answer.ok, answer.error
    assert answer.output == {"found": True}
    [request] = http_server.requests
    assert request["method"] == "POST" and request["path"] == "/lookup"
    assert json.loads(request["body"]) == {"customer": "c-1", "tags": ["a"]}
    assert request["headers"]["x-api-token"] == "crm-secret-1"
    assert request["headers"]["x-team"] == "ops"
    assert request["headers"]["idempotency-key"] == "run1:s2:0"


def test_http_get_sends_arguments_as_query_parameters(project, http_server):
    http_server.respond = lambda request: (200, {"Content-Type": "text/plain"}, b"plain answer")
    tool = http_tool(project, f"{http_server.url}/search", http_method="GET")

    answer = tool_invoke(tool=tool, arguments={"customer": "c 1", "tags": ["a", "b"]})

    assert answer.ok and answer.output == "plain answer"
    [request] = http_server.requests
    assert request["method"] == "GET" and request["body"] == b""
    assert request["query"] == [("customer", "c 1"), ("tags", "a"), ("tags", "b")]
    assert "idempotency-key" not in request["headers"]


def test_http_error_status_fails_the_call(project, http_server):
    http_server.respond = lambda request: http_server.json(500, {"error": "boom"})
    answer = tool_invoke(tool=http_tool(project, http_server.url), arguments={"customer": "x"})
    assert not answer.ok
    assert "HTTP 500" in answer.error
    assert answer.output == {"error": "boom"}


def test_invalid_arguments_make_no_request(project, http_server):
    tool = http_tool(project, http_server.url)
    answer = tool_invoke(tool=tool, arguments={"customer": 42})
    assert not answer.ok
    assert answer.error == "Invalid arguments: customer: 42 is not of type 'string'"
    answer = tool_invoke(tool=tool, arguments={})
    assert not answer.ok and "'customer' is a required property" in answer.error
    assert http_server.requests == []


def test_missing_secret_fails_naming_the_variable_and_sends_nothing(project, http_server):
    tool = http_tool(
        project, http_server.url, http_headers={"Authorization": {"secret_env": "UNSET_CRM_KEY"}}
    )
    answer = tool_invoke(tool=tool, arguments={"customer": "x"})
    assert not answer.ok
    assert "UNSET_CRM_KEY" in answer.error
    assert http_server.requests == []


def test_slow_http_tool_times_out(project, http_server):
    received = threading.Event()

    def respond(request):
        received.set()
        time.sleep(2)
        return http_server.json(200, {"late": True})

    http_server.respond = respond
    tool = http_tool(project, http_server.url, timeout_seconds=0.3)
    answer = tool_invoke(tool=tool, arguments={"customer": "x"})
    assert received.is_set()  # the server got the request...
    assert not answer.ok and answer.output is None  # ...and its late answer is not the result
    assert answer.error == "Timed out after 0.3 s."


def test_unreachable_http_tool_fails(project, closed_port):
    tool = http_tool(project, f"http://127.0.0.1:{closed_port}/x")
    answer = tool_invoke(tool=tool, arguments={"customer": "x"})
    assert not answer.ok and "ConnectError" in answer.error


def test_output_not_matching_the_output_schema_fails(project, http_server):
    http_server.respond = lambda request: http_server.json(200, {"found": "yes"})
    tool = http_tool(
        project,
        http_server.url,
        output_schema={"type": "object", "properties": {"found": {"type": "boolean"}}},
    )
    answer = tool_invoke(tool=tool, arguments={"customer": "x"})
    assert not answer.ok
    assert answer.error == "Output does not match the schema: found: 'yes' is not of type 'boolean'"
    assert answer.output == {"found": "yes"}


# --- tool_invoke: built-in -----------------------------------------------------------------


def test_builtin_echo(tools):
    answer = tool_invoke(tool=tools["echo"], arguments={"text": "hi"})
    assert answer.ok and answer.output == {"text": "hi"}


def test_builtin_rejects_bad_arguments(tools):
    answer = tool_invoke(tool=tools["echo"], arguments={"text": 3})
    assert not answer.ok and answer.error.startswith("Invalid arguments: text:")
    # payments.send is backed by echo, whose own schema wants "text".
    answer = tool_invoke(tool=tools["payments.send"], arguments={"to": "bob"})
    assert not answer.ok and "Invalid arguments for built-in echo" in answer.error


@pytest.fixture
def exploding_builtin(project):
    @builtin_tool(name="test.explode", input_schema={"type": "object"})
    def explode():
        raise RuntimeError("kaboom")

    yield tool_create(
        project=project,
        name="explode",
        kind="builtin",
        builtin_name="test.explode",
        input_schema={"type": "object"},
    )
    builtin_registry.pop("test.explode")


def test_builtin_exception_fails_with_type_and_message(exploding_builtin):
    answer = tool_invoke(tool=exploding_builtin, arguments={})
    assert not answer.ok
    assert answer.error == "RuntimeError: kaboom"


# --- Pricing -------------------------------------------------------------------------------


@pytest.fixture
def no_http(monkeypatch):
    """Any HTTP request through httpx2 (genai-prices' client) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during pricing")

    monkeypatch.setattr(httpx2.Client, "send", refuse)
    monkeypatch.setattr(httpx2.AsyncClient, "send", refuse)


def test_price_override_wins(project, no_http):
    endpoint = model_endpoint_create(
        project=project,
        name="oai",
        kind="openai",
        price_overrides={"gpt-4o": {"input_per_mtok": "1.10", "output_per_mtok": "4.40"}},
    )
    assert model_price(endpoint=endpoint, model_name="gpt-4o") == ModelPrice(
        input_usd_per_mtok=Decimal("1.10"), output_usd_per_mtok=Decimal("4.40"), source="override"
    )


def test_a_malformed_stored_override_is_an_error_not_a_zero_price(project, no_http):
    endpoint = model_endpoint_create(project=project, name="oai", kind="openai")
    # Written around the model's validation (as rows from before the rule may be).
    ModelEndpoint.objects.filter(pk=endpoint.pk).update(
        price_overrides={"gpt-4o": {"input_per_mtok": "1.10"}}
    )
    endpoint.refresh_from_db()
    with pytest.raises(ValueError, match=r"'gpt-4o' is invalid \(output_per_mtok: Field required"):
        model_price(endpoint=endpoint, model_name="gpt-4o")


def test_well_known_model_is_priced_from_genai_prices_offline(project, no_http):
    endpoint = model_endpoint_create(project=project, name="oai", kind="openai")
    price = model_price(endpoint=endpoint, model_name="gpt-4o")
    assert price is not None and price.source == "genai-prices"
    assert price.input_usd_per_mtok > 0 and price.output_usd_per_mtok > price.input_usd_per_mtok

    proxy = model_endpoint_create(
        project=project,
        name="proxy",
        kind="openai_compatible",
        base_url="http://127.0.0.1:1/v1",
        genai_prices_provider="anthropic",
    )
    assert model_price(endpoint=proxy, model_name="claude-sonnet-4-5").input_usd_per_mtok > 0


def test_unknown_models_and_unpriced_endpoints_have_no_price(project, endpoint, no_http):
    oai = model_endpoint_create(project=project, name="oai", kind="openai")
    assert model_price(endpoint=oai, model_name="no-such-model-123") is None
    local = model_endpoint_create(
        project=project, name="ollama", kind="openai_compatible", base_url="http://127.0.0.1:1/v1"
    )
    assert model_price(endpoint=local, model_name="gpt-4o") is None  # may be a free local model
    assert model_price(endpoint=endpoint, model_name="scripted-1") is None
    odd = model_endpoint_create(
        project=project, name="odd", kind="openai", genai_prices_provider="no-such-provider"
    )
    assert model_price(endpoint=odd, model_name="gpt-4o") is None


def test_call_cost_is_exact_and_rounds_half_up():
    price = ModelPrice(
        input_usd_per_mtok=Decimal("2.5"), output_usd_per_mtok=Decimal("10"), source="override"
    )
    assert call_cost_usd(price=price, input_tokens=1234, output_tokens=567) == Decimal("0.00875500")
    assert call_cost_usd(price=price, input_tokens=0, output_tokens=0) == Decimal("0E-8")
    tiny = ModelPrice(
        input_usd_per_mtok=Decimal("0.025"), output_usd_per_mtok=Decimal("0"), source="override"
    )
    # 1 token at $0.025/MTok = $0.000000025: half up to 3e-8 (half-even would give 2e-8).
    assert call_cost_usd(price=tiny, input_tokens=1, output_tokens=0) == Decimal("0.00000003")
    big = call_cost_usd(price=price, input_tokens=10**12, output_tokens=10**12)
    assert big == Decimal("12500000.00000000")
    with pytest.raises(ValueError):
        call_cost_usd(price=price, input_tokens=-1, output_tokens=0)
