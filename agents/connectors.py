"""Connectors from the registry to the outside world: endpoint checks, MCP tool sync, tool calls."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from agents.builtins import BuiltinCall
from agents.builtins import registry as builtin_registry
from agents.models import (
    RESERVED_TOOL_NAMES,
    MCPServer,
    MCPTransport,
    ModelEndpoint,
    ProviderKind,
    Tool,
    ToolKind,
    tool_name_validator,
)
from agents.services import tool_create, tool_set_removed, tool_update
from controlplane.secrets import SecretUnavailableError, resolve_secret
from governance.services import audit_record

T = TypeVar("T")

MODEL_ENDPOINT_TEST_TIMEOUT_SECONDS = 5.0
MCP_SYNC_TIMEOUT_SECONDS = 30.0
# A paginating server that never stops must not hang a sync.
MCP_LIST_PAGE_LIMIT = 100
# HTTP tool responses are read into memory and handed to a model: cap them.
HTTP_TOOL_MAX_RESPONSE_BYTES = 5 * 1024 * 1024
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com/v1",
}
_DETAIL_MAX_CHARS = 500


# --- Results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionTestResult:
    """Outcome of ``model_endpoint_test``: ``models`` are the ids the provider listed."""

    ok: bool
    detail: str
    models: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Outcome of ``mcp_server_sync``: local tool names per outcome; ``error`` empty on success.

    A tool that reappeared on its server (``removed_at`` cleared) counts as updated.
    """

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """Outcome of ``tool_invoke``. ``output`` is the tool's answer (also kept when ``ok`` is
    False and there was one, e.g. an HTTP error body); ``duration_ms`` is wall time in ms."""

    ok: bool
    output: Any = None
    error: str = ""
    duration_ms: int = 0


# --- Shared helpers ------------------------------------------------------------------------


def _scrub(text: str, *secrets: str) -> str:
    """``text`` without any of ``secrets`` (provider error bodies sometimes echo the key)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def _root_cause(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap the real cause)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe_error(exc: BaseException) -> str:
    """A one-line ``Type: message`` description of ``exc``'s root cause."""
    exc = _root_cause(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _run_async(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code (Django views, Celery tasks).

    If this thread already runs an event loop (an async view), the coroutine gets its own
    loop in a worker thread: ``asyncio.run`` refuses to nest.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def _validation_error(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def _schema_error(schema: dict, instance: Any) -> str:
    """The first (most relevant) violation of ``schema`` by ``instance``, or ``""``."""
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    return _validation_error(error) if error is not None else ""


# --- Model endpoints -----------------------------------------------------------------------


def endpoint_base_url(*, endpoint: ModelEndpoint) -> str:
    """The API root of ``endpoint`` without a trailing slash, including its version path.

    ``endpoint.base_url`` when set (``http://localhost:11434/v1`` for Ollama), else the
    provider's public API (``https://api.openai.com/v1``, ``https://api.anthropic.com/v1``).
    ``""`` for kinds without an HTTP API (scripted).
    """
    return (endpoint.base_url or DEFAULT_BASE_URLS.get(endpoint.kind, "")).rstrip("/")


def model_endpoint_test(*, endpoint: ModelEndpoint) -> ConnectionTestResult:
    """Check that ``endpoint`` answers and accepts its credential by listing its models.

    ``scripted``: ok without any network call. ``openai`` / ``openai_compatible``:
    ``GET {base}/models`` with ``Authorization: Bearer <key>`` (a compatible endpoint
    without a configured credential is called without one, as Ollama expects).
    ``anthropic``: ``GET {base}/models`` with ``x-api-key`` and ``anthropic-version:
    2023-06-01``. ``{base}`` is ``endpoint_base_url``. One request, 5 s timeout.

    Never raises for provider or network trouble: an unset key variable, an HTTP error
    status (named in ``detail``), an unreachable host or a malformed answer give
    ``ok=False``. The key never appears in ``detail``. Records the audit event
    ``model_endpoint.tested`` with ``ok``, ``detail``, the URL and the model count.
    """
    base = endpoint_base_url(endpoint=endpoint)
    url = f"{base}/models" if base else ""
    result = _model_endpoint_check(endpoint, url)
    audit_record(
        action="model_endpoint.tested",
        obj=endpoint,
        data={
            "ok": result.ok,
            "detail": result.detail,
            "url": url,
            "model_count": len(result.models),
        },
    )
    return result


def _model_endpoint_check(endpoint: ModelEndpoint, url: str) -> ConnectionTestResult:
    if endpoint.kind == ProviderKind.SCRIPTED:
        models = [endpoint.default_model] if endpoint.default_model else []
        return ConnectionTestResult(ok=True, detail="Scripted endpoint: no network.", models=models)
    if not url:
        return ConnectionTestResult(ok=False, detail=f"Unknown provider kind {endpoint.kind!r}.")

    key = ""
    if endpoint.has_credential:
        try:
            key = resolve_secret(
                env_var=endpoint.credential_env_var, encrypted=endpoint.credential_encrypted
            )
        except SecretUnavailableError as exc:
            return ConnectionTestResult(ok=False, detail=f"No API key: {exc}.")
    elif endpoint.kind != ProviderKind.OPENAI_COMPATIBLE:
        return ConnectionTestResult(
            ok=False, detail="No API key: set an environment variable name or store a key."
        )

    headers = {"Accept": "application/json"}
    if endpoint.kind == ProviderKind.ANTHROPIC:
        headers.update({"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION})
    elif key:
        headers["Authorization"] = f"Bearer {key}"

    try:
        with httpx.Client(timeout=MODEL_ENDPOINT_TEST_TIMEOUT_SECONDS) as client:
            response = client.get(url, headers=headers)
    except httpx.TimeoutException:
        detail = f"No answer from {url} within {MODEL_ENDPOINT_TEST_TIMEOUT_SECONDS:g} s."
        return ConnectionTestResult(ok=False, detail=detail)
    except httpx.HTTPError as exc:
        detail = _scrub(f"Cannot reach {url}: {_describe_error(exc)}", key)
        return ConnectionTestResult(ok=False, detail=detail[:_DETAIL_MAX_CHARS])

    if not response.is_success:
        detail = f"HTTP {response.status_code} from {url}"
        # The provider's message says why (bad key, no access); some echo the key back.
        excerpt = " ".join(response.text.split())[:200]
        if excerpt:
            detail = _scrub(f"{detail}: {excerpt}", key)
        return ConnectionTestResult(ok=False, detail=detail[:_DETAIL_MAX_CHARS])
    try:
        models = [str(entry["id"]) for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        detail = f"HTTP {response.status_code} from {url}, but the answer is not a model list."
        return ConnectionTestResult(ok=False, detail=detail)
    return ConnectionTestResult(
        ok=True, detail=f"Connected to {url}: {len(models)} models.", models=models
    )


# --- MCP servers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RemoteTool:
    name: str
    description: str
    input_schema: dict
    output_schema: dict | None
    read_only: bool | None
    destructive: bool | None
    idempotent: bool | None


class StdioCommandNotAllowedError(ValidationError):
    """A stdio MCP server's ``command[0]`` is not in ``settings.MCP_STDIO_COMMANDS_ALLOWED``.

    A ``ValidationError`` keyed ``command``: the API answers 400 ``{"command": [...]}``.
    """


def stdio_command_refusal(command: list[str]) -> str:
    """Why the stdio ``command`` (argv) may not be launched, or ``""`` when it may.

    Allowed only when ``command[0]`` equals an entry of ``settings.MCP_STDIO_COMMANDS_ALLOWED``
    exactly (a bare name such as ``uvx`` is then looked up on the control plane's PATH; a
    path must match as written). The list is empty by default: no stdio server runs.
    """
    allowed = list(getattr(settings, "MCP_STDIO_COMMANDS_ALLOWED", []))
    if not command:
        return "The stdio MCP server has no command."
    if command[0] in allowed:
        return ""
    return (
        f"The command {command[0]!r} is not allowed for stdio MCP servers: add it to "
        f"MCP_STDIO_COMMANDS_ALLOWED (allowed now: {', '.join(allowed) or 'none'})."
    )


def _stdio_refusal(server: MCPServer) -> str:
    if server.transport != MCPTransport.STDIO:
        return ""
    return stdio_command_refusal(list(server.command or []))


def _mcp_token(server: MCPServer) -> str:
    """The server's bearer token, or ``""`` when none is configured. Raises
    ``SecretUnavailableError`` when the configured variable is unset."""
    if server.transport == MCPTransport.STREAMABLE_HTTP and server.auth_env_var:
        return resolve_secret(env_var=server.auth_env_var)
    return ""


@dataclass(slots=True)
class _MCPTarget:
    """Where and how to connect, as plain values: nothing inside the event loop touches the
    ORM. ``http_errors`` collects the HTTP error statuses seen (the SDK reports them only
    as a generic protocol error)."""

    transport: str
    url: str
    command: list[str]
    token: str
    http_errors: list[int] = field(default_factory=list)

    @classmethod
    def for_server(cls, server: MCPServer, token: str) -> _MCPTarget:
        return cls(
            transport=server.transport,
            url=server.url,
            command=list(server.command or []),
            token=token,
        )

    def describe(self, exc: BaseException) -> str:
        error = _describe_error(exc)
        if self.http_errors:
            error += f" (HTTP {self.http_errors[-1]} from {self.url})"
        return _scrub(error, self.token)


@asynccontextmanager
async def _mcp_session(target: _MCPTarget, *, timeout: float):
    """An initialized MCP client session for ``target``.

    The caller's ``anyio.fail_after(timeout)`` is the one deadline; the transport's own
    timeouts are set beyond it so they never race it with a less clear error.
    """
    if target.transport == MCPTransport.STDIO:
        # The callers refuse (and audit) a command that is not allowed; this is the last
        # guard before a process is started.
        refusal = stdio_command_refusal(target.command)
        if refusal:
            raise PermissionError(refusal)
        params = StdioServerParameters(command=target.command[0], args=target.command[1:])
        async with Client(params, cache=None) as client:
            yield client
        return

    async def record_status(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            target.http_errors.append(response.status_code)

    headers = {"Authorization": f"Bearer {target.token}"} if target.token else None
    # The SDK's HTTP transport takes headers only through a client it does not own.
    async with httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout + 5),
        event_hooks={"response": [record_status]},
    ) as http:
        transport_streams = streamable_http_client(target.url, http_client=http)
        async with Client(transport_streams, cache=None) as client:
            yield client


async def _mcp_list_tools(target: _MCPTarget, *, timeout: float) -> list[_RemoteTool]:
    remote: dict[str, _RemoteTool] = {}
    with anyio.fail_after(timeout):
        async with _mcp_session(target, timeout=timeout) as client:
            cursor: str | None = None
            for _ in range(MCP_LIST_PAGE_LIMIT):
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    annotations = tool.annotations
                    remote.setdefault(
                        tool.name,
                        _RemoteTool(
                            name=tool.name,
                            description=tool.description or tool.title or "",
                            input_schema=dict(tool.input_schema),
                            output_schema=dict(tool.output_schema) if tool.output_schema else None,
                            read_only=annotations.read_only_hint if annotations else None,
                            destructive=annotations.destructive_hint if annotations else None,
                            idempotent=annotations.idempotent_hint if annotations else None,
                        ),
                    )
                cursor = page.next_cursor
                if not cursor:
                    break
    return list(remote.values())


def _initial_risk(remote: _RemoteTool) -> str:
    # MCP's defaults for a tool without annotations: not read-only, destructive.
    if remote.read_only:
        return "read"
    if remote.destructive is False:
        return "write"
    return "destructive"


def _local_tool_name(server_name: str, remote_name: str, taken: set[str]) -> str:
    """The remote name if it is a valid, free, unreserved tool name, else ``<server>.<remote>``
    (characters outside the name alphabet replaced by ``_``, cut to 64, numbered if taken)."""
    if (
        tool_name_validator.regex.match(remote_name)
        and remote_name not in taken
        and remote_name not in RESERVED_TOOL_NAMES
    ):
        return remote_name
    base = f"{server_name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', remote_name)}"
    if not base[0].isalpha():
        base = f"mcp-{base}"
    candidate = base[:64]
    number = 2
    while candidate in taken:
        suffix = f"-{number}"
        candidate = base[: 64 - len(suffix)] + suffix
        number += 1
    return candidate


def mcp_server_sync(*, server: MCPServer) -> SyncResult:
    """Import the tools ``server`` lists into the registry as ``mcp`` tools.

    Connects with the MCP SDK (streamable HTTP at ``server.url``, with ``Authorization:
    Bearer`` from ``server.auth_env_var`` when set; or stdio, launching ``server.command``),
    lists every tool (all pages), then in one transaction:

    - a new remote tool becomes a Tool named like the remote tool if that name is valid,
      free in the project and not reserved (``new``), else ``<server>.<remote>``
      (sanitized); its description, input and output schemas come from the server, its
      initial ``risk`` and ``idempotent`` from the tool's annotations (MCP defaults:
      destructive). Created with ``tool_create``.
    - a known tool whose description or schemas changed is updated with ``tool_update``
      (risk, grants and name are never changed by a sync); one that had been marked
      removed is restored with ``tool_set_removed`` (audit ``tool.restored``), counted as
      updated.
    - a tool of this server that is no longer listed is marked removed with
      ``tool_set_removed`` (audit ``tool.marked_removed``); the row stays for grants and
      history.

    Then ``server.last_synced_at`` is set, ``last_sync_error`` cleared, and
    ``mcp_server.synced`` is audited with the name lists.

    Never raises for server trouble: an unset token variable, an unreachable server, a
    protocol error, a 30 s timeout or a listed tool the registry rejects (invalid schema)
    give a result with ``error`` set; then no tool is touched, ``last_sync_error`` records
    the error and ``mcp_server.sync_failed`` is audited.

    Raises ``StdioCommandNotAllowedError`` for a stdio server whose ``command[0]`` is not
    in ``settings.MCP_STDIO_COMMANDS_ALLOWED`` (see ``stdio_command_refusal``): nothing is
    launched, ``last_sync_error`` records why and ``mcp_server.sync_refused`` is audited.
    """
    refusal = _stdio_refusal(server)
    if refusal:
        _sync_failed(server, refusal, action="mcp_server.sync_refused")
        raise StdioCommandNotAllowedError({"command": [refusal]})
    try:
        token = _mcp_token(server)
    except SecretUnavailableError as exc:
        return _sync_failed(server, f"No bearer token: {exc}.")
    target = _MCPTarget.for_server(server, token)
    try:
        remote_tools = _run_async(lambda: _mcp_list_tools(target, timeout=MCP_SYNC_TIMEOUT_SECONDS))
    except Exception as exc:
        if isinstance(_root_cause(exc), TimeoutError):
            error = f"no answer within {MCP_SYNC_TIMEOUT_SECONDS:g} s"
        else:
            error = target.describe(exc)
        return _sync_failed(server, f"Cannot list tools: {error}")
    try:
        result = _apply_sync(server, remote_tools)
    except _RejectedToolError as exc:
        return _sync_failed(server, str(exc))
    except DatabaseError as exc:
        return _sync_failed(server, f"Could not save the tools: {_describe_error(exc)}")
    server.refresh_from_db(fields=["last_synced_at", "last_sync_error"])
    return result


class _RejectedToolError(Exception):
    pass


def _sync_failed(
    server: MCPServer, error: str, *, action: str = "mcp_server.sync_failed"
) -> SyncResult:
    error = error[:_DETAIL_MAX_CHARS]
    with transaction.atomic():
        MCPServer.objects.filter(pk=server.pk).update(last_sync_error=error)
        audit_record(action=action, obj=server, data={"error": error})
    server.last_sync_error = error
    return SyncResult(error=error)


@transaction.atomic
def _apply_sync(server: MCPServer, remote_tools: list[_RemoteTool]) -> SyncResult:
    # Serializes concurrent syncs of one server: both would create the same tools.
    server = MCPServer.objects.select_for_update().get(pk=server.pk)
    now = timezone.now()
    existing = {t.mcp_tool_name: t for t in Tool.objects.filter(mcp_server=server)}
    taken = set(Tool.objects.filter(project_id=server.project_id).values_list("name", flat=True))
    created, updated, removed, unchanged = [], [], [], []

    for remote in remote_tools:
        tool = existing.get(remote.name)
        wanted = {
            "description": remote.description,
            "input_schema": remote.input_schema,
            "output_schema": remote.output_schema,
        }
        try:
            if tool is None:
                name = _local_tool_name(server.name, remote.name, taken)
                taken.add(name)
                tool_create(
                    project=server.project,
                    name=name,
                    kind=ToolKind.MCP,
                    mcp_server=server,
                    mcp_tool_name=remote.name,
                    risk=_initial_risk(remote),
                    idempotent=bool(remote.idempotent),
                    **wanted,
                )
                created.append(name)
                continue
            changes = {k: v for k, v in wanted.items() if getattr(tool, k) != v}
            if changes:
                tool = tool_update(tool=tool, **changes)
        except ValidationError as exc:
            messages = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise _RejectedToolError(f"Tool {remote.name!r} was rejected: {messages}") from exc
        restored = tool.removed_at is not None
        if restored:
            tool = tool_set_removed(tool=tool, removed=False)
        if changes or restored:
            updated.append(tool.name)
        else:
            unchanged.append(tool.name)

    listed = {remote.name for remote in remote_tools}
    for remote_name, tool in existing.items():
        if remote_name not in listed and tool.removed_at is None:
            tool_set_removed(tool=tool, removed=True)
            removed.append(tool.name)

    MCPServer.objects.filter(pk=server.pk).update(last_synced_at=now, last_sync_error="")
    result = SyncResult(
        created=sorted(created),
        updated=sorted(updated),
        removed=sorted(removed),
        unchanged=sorted(unchanged),
    )
    audit_record(
        action="mcp_server.synced",
        obj=server,
        data={
            "created": result.created,
            "updated": result.updated,
            "removed": result.removed,
            "unchanged": result.unchanged,
        },
    )
    return result


# --- Tool calls ----------------------------------------------------------------------------


class _CallFailed(Exception):
    """A tool call that failed in an expected way; ``output`` is what the tool answered."""

    def __init__(self, message: str, output: Any = None):
        super().__init__(message)
        self.output = output


def tool_invoke(
    *,
    tool: Tool,
    arguments: dict,
    timeout_seconds: float | None = None,
    idempotency_key: str = "",
) -> ToolResult:
    """Execute ``tool`` with ``arguments`` and return what it answered.

    This is the bare execution step: it does NOT check grants, conditions, rate limits or
    PII and does NOT audit (but for a refused stdio command, below); the governed call path
    wraps it. It does refuse a tool marked
    removed from its MCP server, and validates ``arguments`` against ``tool.input_schema``
    (JSON Schema, formats checked) before anything is sent; invalid arguments give
    ``ok=False`` with the failing path and message.

    - ``http``: ``tool.http_method`` to ``tool.http_url`` with the arguments as a JSON body
      (GET: as query parameters; lists repeat the parameter, objects are JSON-encoded).
      Headers from ``tool.http_headers``; a ``secret_env`` header whose variable is unset
      fails the call, naming the variable (never sent empty). ``Idempotency-Key`` is sent
      when ``idempotency_key`` is given. Redirects are not followed. A non-2xx status
      fails with the status; a JSON answer is parsed, anything else returned as text;
      answers over 5 MiB fail.
    - ``mcp``: ``tools/call`` on the tool's MCP server; the output is the structured
      content when the server sent some, else the text content joined by newlines. A
      result flagged ``isError`` fails with that text. ``idempotency_key`` is sent in the
      request's ``_meta`` as ``idempotency_key``. A stdio server whose ``command[0]`` is not in
      ``settings.MCP_STDIO_COMMANDS_ALLOWED`` is not launched: the call fails saying so,
      and that refusal (only it) is audited as ``tool.invoke_refused``.
    - ``builtin``: the registered function called with the arguments as keyword arguments
      (after also checking its own schema); an exception fails the call with its type and
      message; the return value must be JSON-serializable. Built-ins run in-process, so
      ``timeout_seconds`` does not bound them.

    When ``tool.output_schema`` is set, a successful output that does not match it fails.
    ``timeout_seconds`` (default ``tool.timeout_seconds``) bounds the whole HTTP or MCP
    call, connecting included. Never raises for tool-side trouble: every failure is a
    ``ToolResult`` with ``ok=False`` and ``error`` set; ``duration_ms`` is wall time.
    """
    started = time.monotonic()

    def done(ok: bool, output: Any = None, error: str = "") -> ToolResult:
        duration_ms = int((time.monotonic() - started) * 1000)
        return ToolResult(ok=ok, output=output, error=error, duration_ms=duration_ms)

    if tool.removed_at is not None:
        return done(False, error=f"Tool {tool.name} was removed from its MCP server.")
    if not isinstance(arguments, dict):
        return done(False, error="Invalid arguments: (root): must be an object.")
    try:
        problem = _schema_error(tool.input_schema or {"type": "object"}, arguments)
    except jsonschema.SchemaError as exc:
        return done(False, error=f"Tool {tool.name} has an invalid input schema: {exc.message}")
    if problem:
        return done(False, error=f"Invalid arguments: {problem}")

    timeout = float(timeout_seconds if timeout_seconds is not None else tool.timeout_seconds)
    try:
        if tool.kind == ToolKind.HTTP:
            output = _invoke_http(tool, arguments, timeout, idempotency_key)
        elif tool.kind == ToolKind.MCP:
            output = _invoke_mcp(tool, arguments, timeout, idempotency_key)
        elif tool.kind == ToolKind.BUILTIN:
            output = _invoke_builtin(tool, arguments, idempotency_key)
        else:
            raise _CallFailed(f"Tool {tool.name} has an unknown kind {tool.kind!r}.")
    except _CallFailed as exc:
        return done(False, output=exc.output, error=str(exc))

    if tool.output_schema is not None:
        try:
            problem = _schema_error(tool.output_schema, output)
        except jsonschema.SchemaError as exc:
            problem = f"invalid output schema: {exc.message}"
        if problem:
            return done(False, output=output, error=f"Output does not match the schema: {problem}")
    return done(True, output=output)


def _query_params(arguments: dict) -> list[tuple[str, str]]:
    params = []
    for key, value in arguments.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, bool):
                text = "true" if item else "false"
            elif isinstance(item, dict | list):
                text = json.dumps(item, separators=(",", ":"))
            else:
                text = str(item)
            params.append((key, text))
    return params


def _decode(content: bytes, charset: str | None) -> str:
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


def _invoke_http(tool: Tool, arguments: dict, timeout: float, idempotency_key: str) -> Any:
    headers: dict[str, str] = {}
    secrets: list[str] = []
    for name, spec in (tool.http_headers or {}).items():
        if "secret_env" in spec:
            try:
                value = resolve_secret(env_var=spec["secret_env"])
            except SecretUnavailableError as exc:
                raise _CallFailed(f"Header {name}: {exc}.") from exc
            secrets.append(value)
        else:
            value = str(spec.get("value", ""))
        headers[name] = value
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    method = tool.http_method or "POST"
    body = {"params": _query_params(arguments)} if method == "GET" else {"json": arguments}

    deadline = time.monotonic() + timeout
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream(method, tool.http_url, headers=headers, **body) as response,
        ):
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > HTTP_TOOL_MAX_RESPONSE_BYTES:
                    raise _CallFailed(
                        f"The answer is larger than {HTTP_TOOL_MAX_RESPONSE_BYTES} bytes."
                    )
                # httpx's timeout is per read; a server trickling bytes must not outlast ours.
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline passed", request=response.request)
                chunks.append(chunk)
            content = b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise _CallFailed(f"Timed out after {timeout:g} s.") from exc
    except httpx.HTTPError as exc:
        message = _scrub(f"Request to {tool.http_url} failed: {_describe_error(exc)}", *secrets)
        raise _CallFailed(message[:_DETAIL_MAX_CHARS]) from exc

    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content:
        output = None
    elif content_type == "application/json" or content_type.endswith("+json"):
        try:
            output = json.loads(content)
        except ValueError as exc:
            if response.is_success:
                raise _CallFailed("The answer claims to be JSON but does not parse.") from exc
            output = _decode(content, response.charset_encoding)
    else:
        output = _decode(content, response.charset_encoding)
    if not response.is_success:
        raise _CallFailed(f"HTTP {response.status_code} from {tool.http_url}.", output=output)
    return output


async def _mcp_call(
    target: _MCPTarget, *, name: str, arguments: dict, timeout: float, idempotency_key: str = ""
) -> tuple[bool, Any, str]:
    # MCP has no header for it: the key travels in the request's _meta.
    meta = {"idempotency_key": idempotency_key} if idempotency_key else None
    with anyio.fail_after(timeout):
        async with _mcp_session(target, timeout=timeout) as client:
            result = await client.call_tool(name, arguments, meta=meta)
    text = "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")
    if result.is_error:
        return False, text, text or "The MCP tool reported an error."
    output = result.structured_content if result.structured_content is not None else text
    return True, output, ""


def _invoke_mcp(tool: Tool, arguments: dict, timeout: float, idempotency_key: str = "") -> Any:
    server = tool.mcp_server
    if server is None or not tool.mcp_tool_name:
        raise _CallFailed(f"Tool {tool.name} has no MCP server.")
    refusal = _stdio_refusal(server)
    if refusal:
        audit_record(
            action="tool.invoke_refused",
            obj=tool,
            data={"mcp_server": server.name, "error": refusal},
        )
        raise _CallFailed(refusal)
    try:
        token = _mcp_token(server)
    except SecretUnavailableError as exc:
        raise _CallFailed(f"No bearer token for MCP server {server.name}: {exc}.") from exc
    target = _MCPTarget.for_server(server, token)
    try:
        ok, output, error = _run_async(
            lambda: _mcp_call(
                target,
                name=tool.mcp_tool_name,
                arguments=arguments,
                timeout=timeout,
                idempotency_key=idempotency_key,
            )
        )
    except Exception as exc:
        if isinstance(_root_cause(exc), TimeoutError):
            raise _CallFailed(f"Timed out after {timeout:g} s.") from exc
        message = f"MCP server {server.name}: {target.describe(exc)}"
        raise _CallFailed(message[:_DETAIL_MAX_CHARS]) from exc
    if not ok:
        raise _CallFailed(error[:_DETAIL_MAX_CHARS], output=output)
    return output


def _invoke_builtin(tool: Tool, arguments: dict, idempotency_key: str = "") -> Any:
    builtin = builtin_registry.get(tool.builtin_name)
    if builtin is None:
        raise _CallFailed(f"No built-in tool {tool.builtin_name!r} is registered.")
    problem = _schema_error(builtin.input_schema, arguments)
    if problem:
        raise _CallFailed(f"Invalid arguments for built-in {builtin.name}: {problem}")
    try:
        if builtin.takes_call:
            call = BuiltinCall(
                project_id=tool.project_id,
                tool_name=tool.name,
                idempotency_key=idempotency_key or "",
            )
            output = builtin.function(**arguments, call=call)
        else:
            output = builtin.function(**arguments)
    except Exception as exc:
        raise _CallFailed(f"{type(exc).__name__}: {exc}"[:_DETAIL_MAX_CHARS]) from exc
    try:
        json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise _CallFailed(f"Built-in {builtin.name} returned a value that is not JSON.") from exc
    return output
