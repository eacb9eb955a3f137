"""UI pages of the agent registry: agents and their versions, tools, MCP servers, model endpoints.

Every page lives under the current project; every write checks the operator role with
``check_project_access`` and goes through one service of ``agents.services``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents import services
from agents.forms import (
    AgentCreateForm,
    AgentDraft,
    AgentFilterForm,
    AgentVersionForm,
    DryRunForm,
    MCPServerCreateForm,
    ModelEndpointCreateForm,
    ToolCreateForm,
    VersionDiffForm,
)
from agents.governed import decide_for_version
from agents.models import Agent, ToolKind, mcp_server_write_role
from agents.selectors import (
    activations_for_agent,
    agent_version_diff,
    agents_for_list,
    agents_for_project,
    demo_outbox_for_project,
    mcp_servers_for_project,
    mcp_servers_with_tool_counts,
    model_endpoints_for_project,
    tools_for_project,
    version_snapshot,
    versions_for_agent,
)
from controlplane.forms import add_service_errors
from controlplane.htmx import is_partial_request, render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page

# --- Shared helpers ---------------------------------------------------------------------------


def _done(request: HttpRequest, url: str, notice: str) -> HttpResponse:
    """After a successful write: flash ``notice`` and go to ``url`` (POST-redirect-GET)."""
    messages.success(request, notice)
    if is_partial_request(request):
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _can_operate(role: Role) -> bool:
    return role.includes(Role.OPERATOR)


def _agent_or_404(project: Project, slug: str) -> Agent:
    return get_object_or_404(agents_for_project(project), slug=slug)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


# --- Agents -----------------------------------------------------------------------------------


@project_page
def agent_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Agents of the project; ``q`` searches slug and description, ``endpoint`` filters by the
    active version's model endpoint. htmx requests get only the results table."""
    form = AgentFilterForm(request.GET, project=project)
    form.is_valid()  # invalid values are left out and shown on the form
    search = form.cleaned_data.get("q", "")
    endpoint = form.cleaned_data.get("endpoint", "")
    context = {
        "project": project,
        "role": role,
        "can_operate": _can_operate(role),
        "form": form,
        "agents": agents_for_list(project, search=search, endpoint=endpoint),
        "filtered": bool(search or endpoint),
    }
    return render_page(
        request, "agents/agent_list.html", "agents/partials/agent_table.html", context
    )


def _draft_page(
    request: HttpRequest,
    *,
    template: str,
    project: Project,
    role: Role,
    draft: AgentDraft,
    **context: Any,
) -> HttpResponse:
    return render_page(
        request,
        template,
        "agents/partials/agent_form.html",
        {
            "project": project,
            "role": role,
            "can_operate": _can_operate(role),
            "draft": draft,
            "form": draft.form,
            "has_endpoints": bool(draft.form.fields["model_endpoint"].choices),
            **context,
        },
    )


@project_page
@require_http_methods(["GET", "POST"])
def agent_create(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """A new agent from a draft: ``agent_create`` makes and activates version 1. On error
    nothing is saved and each message is shown next to its input."""
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
        draft = AgentDraft.build(AgentCreateForm, project=project, data=request.POST)
        if draft.is_valid():
            try:
                agent = services.agent_create(
                    project=project,
                    slug=draft.form.cleaned_data["slug"],
                    description=draft.form.cleaned_data["description"],
                    config=draft.config(),
                    actor=request.user,
                )
            except ValidationError as error:
                draft.add_service_errors(error)
            else:
                url = reverse("agent-detail", args=[agent.slug])
                return _done(request, url, f"Created agent {agent.slug} with version 1.")
    else:
        draft = AgentDraft.build(AgentCreateForm, project=project)
    return _draft_page(
        request, template="agents/agent_create.html", project=project, role=role, draft=draft
    )


@project_page
@require_http_methods(["GET", "POST"])
def agent_edit(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """A new version from a draft pre-filled with the active version (versions never change).
    On error the active version stays and the messages are shown in place."""
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
    agent = _agent_or_404(project, slug)
    base = agent.active_version
    snapshot = version_snapshot(base) if base is not None else None
    data = request.POST if request.method == "POST" else None
    draft = AgentDraft.build(
        AgentVersionForm, project=project, data=data, agent=agent, snapshot=snapshot
    )
    if data is not None and draft.is_valid():
        cleaned = draft.form.cleaned_data
        try:
            version = services.agent_version_create(
                agent=agent,
                config=draft.config(),
                actor=request.user,
                change_note=cleaned["change_note"],
                activate=cleaned["activate"],
            )
        except ValidationError as error:
            draft.add_service_errors(error)
        else:
            state = "it is now active" if cleaned["activate"] else "the active version is unchanged"
            url = reverse("agent-detail", args=[agent.slug])
            return _done(request, url, f"Saved version {version.number} of {agent.slug}; {state}.")
    return _draft_page(
        request,
        template="agents/agent_edit.html",
        project=project,
        role=role,
        draft=draft,
        agent=agent,
        base=base,
    )


def _version_rows(agent: Agent) -> list[dict[str, Any]]:
    """The versions timeline, newest first, each with its activations (newest first)."""
    activations: dict[int, list] = defaultdict(list)
    for activation in activations_for_agent(agent):
        activations[activation.version_id].append(activation)
    return [
        {
            "version": version,
            "is_active": version.pk == agent.active_version_id,
            "activations": activations.get(version.pk, []),
        }
        for version in versions_for_agent(agent)
    ]


def _diff_form(agent: Agent, numbers: list[int], data=None) -> VersionDiffForm:
    """The diff picker (``numbers`` newest first). By default the active version against the
    newest one, or, when the newest is active, the version before it against the active."""
    active = agent.active_version.number if agent.active_version else None
    initial = {}
    if numbers:
        newest = numbers[0]
        if active is not None and active != newest:
            initial = {"a": active, "b": newest}
        else:
            older = [n for n in numbers if n < newest]
            initial = {"a": older[0] if older else newest, "b": newest}
    return VersionDiffForm(data, numbers=numbers, initial=initial)


def _detail_context(project: Project, role: Role, agent: Agent, **extra: Any) -> dict[str, Any]:
    active = agent.active_version
    snapshot = version_snapshot(active) if active is not None else None
    rows = _version_rows(agent)
    return {
        "project": project,
        "role": role,
        "can_operate": _can_operate(role),
        "agent": agent,
        "active": active,
        "snapshot": snapshot,
        "version_rows": rows,
        "diff_form": _diff_form(agent, [row["version"].number for row in rows]),
        "dry_run_form": DryRunForm(project=project, agent=agent),
        **extra,
    }


@project_page
def agent_detail(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """The agent: its active configuration, the versions timeline, rollback and diff."""
    agent = _agent_or_404(project, slug)
    return render_page(
        request,
        "agents/agent_detail.html",
        "agents/partials/agent_body.html",
        _detail_context(project, role, agent),
    )


def _display(field: str, value: Any) -> dict[str, Any]:
    """One side of a diff row: text to show and whether it is a block (``<pre>``)."""
    if value is None:
        return {"text": "not granted" if field.startswith("grants.") else "not set", "empty": True}
    if isinstance(value, dict | list):
        if field.startswith("grants.") and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "tool"}
        return {"text": _pretty(value), "block": True}
    if isinstance(value, str) and ("\n" in value or len(value) > 60):
        return {"text": value, "block": True}
    return {"text": str(value)}


def _diff_rows(changes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for change in changes:
        field = change["field"]
        label = f"Grant: {field.removeprefix('grants.')}" if field.startswith("grants.") else field
        rows.append(
            {
                "field": field,
                "label": label,
                "before": _display(field, change["before"]),
                "after": _display(field, change["after"]),
            }
        )
    return rows


@project_page
def agent_diff(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """Field-by-field differences from version ``a`` to version ``b`` (GET ``?a=1&b=2``)."""
    agent = _agent_or_404(project, slug)
    versions = {v.number: v for v in versions_for_agent(agent)}
    numbers = list(versions)
    if "a" in request.GET or "b" in request.GET:
        form = _diff_form(agent, numbers, request.GET)
    else:
        # Without a choice, compare the default pair (when there are two versions at all).
        form = _diff_form(agent, numbers)
        if len(numbers) > 1:
            form = _diff_form(agent, numbers, {"a": form.initial["a"], "b": form.initial["b"]})
    rows, a, b = None, None, None
    if form.is_bound and form.is_valid():
        a, b = versions[form.cleaned_data["a"]], versions[form.cleaned_data["b"]]
        rows = _diff_rows(agent_version_diff(a, b))
    context = {
        "project": project,
        "role": role,
        "agent": agent,
        "diff_form": form,
        "diff_rows": rows,
        "version_a": a,
        "version_b": b,
    }
    return render_page(request, "agents/agent_diff.html", "agents/partials/diff.html", context)


@project_page
@require_http_methods(["GET", "POST"])
def agent_version_activate(
    request: HttpRequest, slug: str, number: int, *, project: Project, role: Role
) -> HttpResponse:
    """Make a version active (a rollback when older). GET is the confirmation page used
    without JavaScript; with htmx the button confirms with ``hx-confirm`` and POSTs."""
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
    agent = _agent_or_404(project, slug)
    version = get_object_or_404(versions_for_agent(agent), number=number)
    if request.method == "GET":
        active = agent.active_version
        changes = agent_version_diff(active, version) if active and active != version else []
        context = {
            "project": project,
            "role": role,
            "can_operate": _can_operate(role),
            "agent": agent,
            "version": version,
            "active": active,
            "diff_rows": _diff_rows(changes),
            "version_a": active,
            "version_b": version,
        }
        return render(request, "agents/version_activate.html", context)
    previous = agent.active_version
    agent = services.agent_version_activate(version=version, actor=request.user)
    if previous is not None and previous.pk == version.pk:
        notice = f"Version {version.number} was already active."
    elif previous is not None and version.number < previous.number:
        notice = f"Rolled back: version {version.number} is active again."
    else:
        notice = f"Version {version.number} is now active."
    if is_partial_request(request):
        agent = _agent_or_404(project, slug)
        context = _detail_context(project, role, agent, notice=notice)
        return render_page(
            request, "agents/agent_detail.html", "agents/partials/agent_body.html", context
        )
    messages.success(request, notice)
    return redirect("agent-detail", slug=agent.slug)


# --- Tools ------------------------------------------------------------------------------------


@project_page
def tool_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    tools = tools_for_project(project).order_by("name")
    context = {"project": project, "role": role, "can_operate": _can_operate(role), "tools": tools}
    return render(request, "agents/tool_list.html", context)


JSON_TYPE_INPUTS = {
    "string": "text",
    "number": "number",
    "integer": "number",
    "boolean": "checkbox",
}


def schema_preview(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per top-level property of an object schema, for a read-only form preview:
    ``name``, ``type`` (as written, unions joined by " | "), ``required``, ``description``,
    ``input`` (text, number, checkbox, select or textarea), ``choices`` for enums."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    fields = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        types = spec.get("type", "any")
        types = list(types) if isinstance(types, list) else [types]
        main = next((t for t in types if t != "null"), "any")
        choices = spec.get("enum") if isinstance(spec.get("enum"), list) else None
        widget = "select" if choices is not None else JSON_TYPE_INPUTS.get(main, "textarea")
        fields.append(
            {
                "name": name,
                "type": " | ".join(str(t) for t in types),
                "required": name in required,
                "description": spec.get("description", ""),
                "input": widget,
                "choices": [str(c) for c in choices or []],
                "default": spec.get("default"),
            }
        )
    return fields


@project_page
def tool_detail(request: HttpRequest, name: str, *, project: Project, role: Role) -> HttpResponse:
    """A tool: settings of its kind, its argument schema as a read-only form and as JSON."""
    tool = get_object_or_404(tools_for_project(project), name=name)
    headers = [
        {"name": header, "value": spec.get("value"), "secret_env": spec.get("secret_env")}
        for header, spec in (tool.http_headers or {}).items()
        if isinstance(spec, dict)
    ]
    context = {
        "project": project,
        "role": role,
        "tool": tool,
        "headers": headers,
        "preview": schema_preview(tool.input_schema),
        "input_schema_json": _pretty(tool.input_schema),
        "output_schema_json": _pretty(tool.output_schema) if tool.output_schema else "",
        "is_http": tool.kind == ToolKind.HTTP,
        "is_mcp": tool.kind == ToolKind.MCP,
        "is_builtin": tool.kind == ToolKind.BUILTIN,
    }
    return render(request, "agents/tool_detail.html", context)


@project_page
@require_http_methods(["GET", "POST"])
def tool_create(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """A new HTTP or built-in tool; JSON and schema errors are shown next to the schema."""
    form = ToolCreateForm(request.POST or None)
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
        if form.is_valid():
            try:
                tool = services.tool_create(project=project, **form.service_fields())
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                url = reverse("tool-detail", args=[tool.name])
                return _done(request, url, f"Created tool {tool.name}.")
    context = {"project": project, "role": role, "can_operate": _can_operate(role), "form": form}
    return render(request, "agents/tool_create.html", context)


# --- MCP servers ------------------------------------------------------------------------------


def _may_add_server(form: MCPServerCreateForm, role: Role) -> bool:
    """Whether ``role`` may add the server ``form`` describes (a stdio server needs admin);
    if not, the form says so at the transport."""
    needed = mcp_server_write_role(form.cleaned_data["transport"])
    if role.includes(needed):
        return True
    form.add_error(
        "transport",
        "A stdio server runs a command on the control plane's host: adding one needs the "
        f"{needed.label.lower()} role.",
    )
    return False


@project_page
@require_http_methods(["GET", "POST"])
def mcp_server_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """MCP servers of the project and a form to add one (operators)."""
    form = MCPServerCreateForm(request.POST or None)
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
        if form.is_valid() and _may_add_server(form, role):
            try:
                server = services.mcp_server_create(project=project, **form.cleaned_data)
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                notice = f"Added MCP server {server.name}. Sync it to import its tools."
                return _done(request, reverse("mcp-servers"), notice)
    context = {
        "project": project,
        "role": role,
        "can_operate": _can_operate(role),
        "form": form,
        "servers": mcp_servers_with_tool_counts(project),
    }
    return render(request, "agents/mcp_server_list.html", context)


def _names(value: Any) -> list[str]:
    """A sync result's list of tool names (or a count) as strings."""
    if value is None:
        return []
    if isinstance(value, int):
        return [str(value)] if value else []
    return [str(getattr(item, "name", item)) for item in value]


@project_page
@require_POST
def mcp_server_sync(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    """Import the server's tools now; htmx gets the server's row with the result."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    server = get_object_or_404(mcp_servers_for_project(project), pk=pk)
    # The connectors load MCP clients: imported on use.
    from agents.connectors import StdioCommandNotAllowedError, SyncResult
    from agents.connectors import mcp_server_sync as sync

    try:
        result = sync(server=server)
    except StdioCommandNotAllowedError as refusal:  # recorded and audited by the sync
        result = SyncResult(error=" ".join(refusal.messages))
    outcome = {
        "error": getattr(result, "error", "") or "",
        "created": _names(getattr(result, "created", None)),
        "updated": _names(getattr(result, "updated", None)),
        "removed": _names(getattr(result, "removed", None)),
        "unchanged": _names(getattr(result, "unchanged", None)),
    }
    if is_partial_request(request):
        server = get_object_or_404(mcp_servers_with_tool_counts(project), pk=pk)
        context = {"project": project, "can_operate": True, "server": server, "sync": outcome}
        return render(request, "agents/partials/mcp_server_row.html", context)
    if outcome["error"]:
        messages.error(request, f"Sync of {server.name} failed: {outcome['error']}")
    else:
        counts = ", ".join(
            f"{len(outcome[key])} {key}" for key in ("created", "updated", "removed", "unchanged")
        )
        messages.success(request, f"Synced {server.name}: {counts}.")
    return redirect("mcp-servers")


# --- Model endpoints --------------------------------------------------------------------------


@project_page
@require_http_methods(["GET", "POST"])
def model_endpoint_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Model endpoints and a form to add one. The API key is write-only: never rendered."""
    form = ModelEndpointCreateForm(request.POST or None)
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
        if form.is_valid():
            try:
                endpoint = services.model_endpoint_create(project=project, **form.service_fields())
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                return _done(request, reverse("model-endpoints"), f"Added {endpoint.name}.")
    context = {
        "project": project,
        "role": role,
        "can_operate": _can_operate(role),
        "form": form,
        "endpoints": model_endpoints_for_project(project),
    }
    return render(request, "agents/model_endpoint_list.html", context)


@project_page
@require_POST
def model_endpoint_test(
    request: HttpRequest, pk: int, *, project: Project, role: Role
) -> HttpResponse:
    """Try the endpoint's credentials and list its models; htmx gets the row with the result."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    endpoint = get_object_or_404(model_endpoints_for_project(project), pk=pk)
    from agents.connectors import model_endpoint_test as connection_test

    result = connection_test(endpoint=endpoint)
    outcome = {
        "ok": bool(result.ok),
        "detail": result.detail,
        "models": [str(m) for m in (result.models or [])],
    }
    if is_partial_request(request):
        context = {"project": project, "can_operate": True, "endpoint": endpoint, "test": outcome}
        return render(request, "agents/partials/model_endpoint_row.html", context)
    if outcome["ok"]:
        messages.success(request, f"{endpoint.name}: connection works. {outcome['detail']}")
    else:
        messages.error(request, f"{endpoint.name}: connection failed. {outcome['detail']}")
    return redirect("model-endpoints")


# --- Dry run ----------------------------------------------------------------------------------


@project_page
@require_POST
def agent_dry_run(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """Decide a hypothetical tool call of the agent with no side effects (any role: it
    changes nothing). Renders the decision, or the form's errors in place."""
    agent = _agent_or_404(project, slug)
    form = DryRunForm(request.POST, project=project, agent=agent)
    decision = version = None
    if form.is_valid():
        number = form.cleaned_data["version"]
        version = agent.versions.get(number=int(number)) if number else agent.active_version
        if version is not None:
            decision = decide_for_version(
                version=version,
                tool_name=form.cleaned_data["tool"],
                arguments=form.cleaned_data["arguments"],
                user=request.user,
                dry_run=True,
            )
    context = {
        "project": project,
        "agent": agent,
        "dry_run_form": form,
        "decision": decision,
        "version": version,
    }
    status = 200 if decision is not None or not form.errors else 400
    if is_partial_request(request):
        return render(request, "agents/partials/dry_run.html", context, status=status)
    return render(request, "agents/agent_dry_run.html", context, status=status)


@project_page
@require_http_methods(["GET"])
def demo_outbox(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """What the demo's tools did: emails ``send_email`` queued and refunds ``issue_refund``
    issued (the demo never sends mail or money)."""
    emails, refunds = demo_outbox_for_project(project)
    context = {"project": project, "role": role, "emails": emails, "refunds": refunds}
    return render(request, "agents/demo_outbox.html", context)
