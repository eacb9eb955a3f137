"""Agent registry writes: endpoints, MCP servers, tools, agents, versions, activation. All audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.config import AgentVersionConfig, parse_config
from agents.models import (
    Agent,
    AgentActivation,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    Tool,
    ToolGrant,
    ToolKind,
)
from agents.selectors import config_diff, version_snapshot
from controlplane.context import signed_in_user
from controlplane.secrets import encrypt_secret
from governance.models import Budget, BudgetScope, Policy
from governance.services import audit_record

ENDPOINT_FIELDS = (
    "name",
    "kind",
    "base_url",
    "default_model",
    "genai_prices_provider",
    "credential_env_var",
    "price_overrides",
    "script",
)
MCP_SERVER_FIELDS = ("name", "transport", "url", "command", "auth_env_var")
TOOL_FIELDS = (
    "name",
    "description",
    "kind",
    "input_schema",
    "output_schema",
    "http_url",
    "http_method",
    "http_headers",
    "timeout_seconds",
    "mcp_server",
    "mcp_tool_name",
    "builtin_name",
    "risk",
    "idempotent",
    "cost_per_call_usd",
)


def _unknown(fields: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))


def _audit_fields(obj, fields) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = getattr(value, "name", value) if hasattr(value, "_meta") else value
    return out


def _changes(before: dict[str, Any], obj, fields) -> dict[str, dict[str, Any]]:
    """``{field: {"before", "after"}}`` for the ``fields`` of ``obj`` that differ from
    ``before`` (an earlier ``_audit_fields``)."""
    after = _audit_fields(obj, fields)
    return {k: {"before": before[k], "after": after[k]} for k in after if before[k] != after[k]}


# --- Model endpoints ------------------------------------------------------------------------


@transaction.atomic
def model_endpoint_create(*, project, api_key: str | None = None, **fields: Any) -> ModelEndpoint:
    """Create an endpoint. ``api_key`` (plaintext) is stored encrypted; or give
    ``credential_env_var``. Raises ``ValidationError``."""
    _unknown(fields, ENDPOINT_FIELDS)
    endpoint = ModelEndpoint(project=project, **fields)
    if api_key:
        endpoint.credential_encrypted = encrypt_secret(api_key)
    endpoint.full_clean()
    endpoint.save()
    audit_record(
        action="model_endpoint.created",
        obj=endpoint,
        data={**_audit_fields(endpoint, ENDPOINT_FIELDS), "stored_key": bool(api_key)},
    )
    return endpoint


@transaction.atomic
def model_endpoint_update(
    *, endpoint: ModelEndpoint, api_key: str | None = None, clear_api_key: bool = False, **fields
) -> ModelEndpoint:
    """Change an endpoint; ``api_key`` replaces the stored key, ``clear_api_key`` removes it.
    Raises ``ValidationError``."""
    _unknown(fields, ENDPOINT_FIELDS)
    endpoint = ModelEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    before = _audit_fields(endpoint, ENDPOINT_FIELDS)
    for name, value in fields.items():
        setattr(endpoint, name, value)
    if clear_api_key:
        endpoint.credential_encrypted = ""
    if api_key:
        endpoint.credential_encrypted = encrypt_secret(api_key)
        endpoint.credential_env_var = ""
    endpoint.full_clean()
    endpoint.save()
    audit_record(
        action="model_endpoint.updated",
        obj=endpoint,
        data={
            "changes": _changes(before, endpoint, ENDPOINT_FIELDS),
            "stored_key_replaced": bool(api_key),
            "stored_key_cleared": clear_api_key,
        },
    )
    return endpoint


# --- MCP servers ----------------------------------------------------------------------------


@transaction.atomic
def mcp_server_create(*, project, **fields: Any) -> MCPServer:
    _unknown(fields, MCP_SERVER_FIELDS)
    server = MCPServer(project=project, **fields)
    server.full_clean()
    server.save()
    audit_record(
        action="mcp_server.created", obj=server, data=_audit_fields(server, MCP_SERVER_FIELDS)
    )
    return server


@transaction.atomic
def mcp_server_update(*, server: MCPServer, **fields: Any) -> MCPServer:
    _unknown(fields, MCP_SERVER_FIELDS)
    server = MCPServer.objects.select_for_update().get(pk=server.pk)
    for name, value in fields.items():
        setattr(server, name, value)
    server.full_clean()
    server.save()
    audit_record(
        action="mcp_server.updated", obj=server, data=_audit_fields(server, MCP_SERVER_FIELDS)
    )
    return server


# --- Tools ----------------------------------------------------------------------------------


@transaction.atomic
def tool_create(*, project, **fields: Any) -> Tool:
    """Create a tool; its input schema is checked with jsonschema. Raises ``ValidationError``."""
    _unknown(fields, TOOL_FIELDS)
    tool = Tool(project=project, **fields)
    tool.full_clean()
    tool.save()
    audit_record(action="tool.created", obj=tool, data=_audit_fields(tool, TOOL_FIELDS))
    return tool


@transaction.atomic
def tool_update(*, tool: Tool, **fields: Any) -> Tool:
    """Change a tool. The name is permanent (grants and audit refer to it)."""
    _unknown(fields, TOOL_FIELDS)
    tool = Tool.objects.select_for_update().get(pk=tool.pk)
    if "name" in fields and fields["name"] != tool.name:
        raise ValidationError({"name": "A tool's name cannot change; create a new tool."})
    before = _audit_fields(tool, TOOL_FIELDS)
    for name, value in fields.items():
        setattr(tool, name, value)
    tool.full_clean()
    tool.save()
    audit_record(
        action="tool.updated", obj=tool, data={"changes": _changes(before, tool, TOOL_FIELDS)}
    )
    return tool


@transaction.atomic
def tool_set_removed(*, tool: Tool, removed: bool) -> Tool:
    """Mark an MCP tool as removed from its server (``removed_at`` set to now) or as listed
    again (``removed_at`` cleared). A removed tool keeps its row, name and grants but cannot
    be called or newly granted.

    Audited as ``tool.marked_removed`` or ``tool.restored`` with the server's name. A tool
    already in that state is left as it is, and nothing is recorded. Returns the tool.
    Raises ``ValidationError`` (on ``kind``) for a tool that is not an MCP tool.
    """
    # Not joined with its server: PostgreSQL cannot lock the nullable side of an outer join.
    tool = Tool.objects.select_for_update().get(pk=tool.pk)
    if tool.kind != ToolKind.MCP:
        raise ValidationError({"kind": "Only tools synced from an MCP server can be removed."})
    if (tool.removed_at is not None) == removed:
        return tool
    tool.removed_at = timezone.now() if removed else None
    tool.save(update_fields=["removed_at", "updated_at"])
    audit_record(
        action="tool.marked_removed" if removed else "tool.restored",
        obj=tool,
        data={"mcp_server": tool.mcp_server.name if tool.mcp_server else None},
    )
    return tool


# --- Agents and versions --------------------------------------------------------------------


def _resolve(project, config: AgentVersionConfig, *, agent: Agent | None):
    """Look up the endpoint, tools and delegates a config names; errors keyed by path."""
    errors: dict[str, list[str]] = {}
    endpoint = ModelEndpoint.objects.filter(project=project, name=config.model_endpoint).first()
    if endpoint is None:
        errors["model_endpoint"] = [f"No model endpoint {config.model_endpoint!r} in this project."]
    tools = {
        t.name: t
        for t in Tool.objects.filter(project=project, name__in=[g.tool for g in config.grants])
    }
    for index, grant in enumerate(config.grants):
        tool = tools.get(grant.tool)
        if tool is None:
            errors[f"grants.{index}.tool"] = [f"No tool {grant.tool!r} in this project."]
        elif tool.removed_at is not None:
            errors[f"grants.{index}.tool"] = [f"Tool {grant.tool!r} was removed from its server."]
    delegates = {
        a.slug: a for a in Agent.objects.filter(project=project, slug__in=config.delegates)
    }
    for index, slug in enumerate(config.delegates):
        if slug not in delegates:
            errors[f"delegates.{index}"] = [f"No agent {slug!r} in this project."]
        elif agent is not None and delegates[slug].pk == agent.pk:
            errors[f"delegates.{index}"] = ["An agent cannot delegate to itself."]
    policy = budget = None
    if config.policy is not None:
        policy = Policy.objects.filter(project=project, slug=config.policy).first()
        if policy is None:
            errors["policy"] = [f"No policy {config.policy!r} in this project."]
    if config.budget is not None:
        budget = Budget.objects.filter(project=project, name=config.budget).first()
        if budget is None:
            errors["budget"] = [f"No budget {config.budget!r} in this project."]
        elif budget.scope != BudgetScope.AGENT:
            errors["budget"] = [
                f"Budget {config.budget!r} has scope {budget.scope}; an agent needs an "
                "agent-scope budget (project and user budgets apply on their own)."
            ]
    if errors:
        raise ValidationError(errors)
    return endpoint, tools, [delegates[s] for s in config.delegates], policy, budget


def _create_version(
    *, agent: Agent, config: AgentVersionConfig, actor, change_note: str
) -> AgentVersion:
    endpoint, tools, delegates, policy, budget = _resolve(agent.project, config, agent=agent)
    number = (AgentVersion.objects.filter(agent=agent).aggregate(n=Max("number"))["n"] or 0) + 1
    version = AgentVersion(
        agent=agent,
        number=number,
        model_endpoint=endpoint,
        model_name=config.model_name,
        instructions=config.instructions,
        temperature=config.temperature,
        max_output_tokens=config.max_output_tokens,
        max_tool_calls_per_turn=config.max_tool_calls_per_turn,
        policy=policy,
        budget=budget,
        change_note=change_note,
        created_by=signed_in_user(actor),
    )
    version.full_clean(exclude=["agent"])
    version.save()
    version.delegates.set(delegates)
    errors: dict[str, list[str]] = {}
    for index, grant_config in enumerate(config.grants):
        data = grant_config.model_dump()
        data.pop("tool")
        data["rules"] = [dict(rule) for rule in data["rules"]]
        grant = ToolGrant(agent_version=version, tool=tools[grant_config.tool], **data)
        try:
            grant.full_clean(exclude=["agent_version", "tool"])
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(f"grants.{index}.{field}", []).extend(messages)
            continue
        grant.save()
    if errors:
        raise ValidationError(errors)
    return version


def _activate(*, agent: Agent, version: AgentVersion, actor) -> None:
    previous = agent.active_version
    Agent.objects.filter(pk=agent.pk).update(active_version=version, updated_at=timezone.now())
    agent.active_version = version
    AgentActivation.objects.create(
        agent=agent,
        version=version,
        activated_by=signed_in_user(actor),
    )
    audit_record(
        action="agent.version.activated",
        obj=agent,
        data={
            "version": version.number,
            "previous_version": previous.number if previous else None,
            "rollback": bool(previous and version.number < previous.number),
        },
    )


@transaction.atomic
def agent_create(
    *, project, slug: str, description: str = "", config: Any, actor=None, change_note: str = ""
) -> Agent:
    """Create an agent with version 1 from ``config`` (an ``AgentVersionConfig`` or its dict)
    and activate it. Raises ``ValidationError`` keyed by field path; nothing is written then."""
    parsed = config if isinstance(config, AgentVersionConfig) else parse_config(config)
    agent = Agent(
        project=project,
        slug=slug,
        description=description,
        owner=signed_in_user(actor),
    )
    agent.full_clean()
    agent.save()
    audit_record(action="agent.created", obj=agent, data={"slug": slug, "description": description})
    version = _create_version(
        agent=agent, config=parsed, actor=actor, change_note=change_note or "created"
    )
    audit_record(
        action="agent.version.created",
        obj=version,
        project=project,
        data={"agent": agent.slug, "version": version.number, "config": version_snapshot(version)},
    )
    _activate(agent=agent, version=version, actor=actor)
    return agent


@transaction.atomic
def agent_update(*, agent: Agent, description: str) -> Agent:
    """Change an agent's description (its configuration changes through new versions)."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    before = agent.description
    agent.description = description
    agent.full_clean()
    agent.save(update_fields=["description", "updated_at"])
    audit_record(
        action="agent.updated",
        obj=agent,
        data={"description": {"before": before, "after": description}},
    )
    return agent


@transaction.atomic
def agent_version_create(
    *,
    agent: Agent,
    config: Any = None,
    changes: dict[str, Any] | None = None,
    actor=None,
    change_note: str = "",
    activate: bool = True,
) -> AgentVersion:
    """Create the next version of ``agent``.

    Either a full ``config`` (a draft), or ``changes`` applied on top of the active
    version's snapshot (copy with changes). With ``activate`` the new version becomes
    active. Raises ``ValidationError`` keyed by field path; the active version stays.
    """
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if (config is None) == (changes is None):
        raise ValidationError({"config": "Give either a full config or changes, not both."})
    if config is None:
        if agent.active_version is None:
            raise ValidationError({"changes": "The agent has no active version to copy."})
        base = version_snapshot(agent.active_version)
        base.update(changes or {})
        config = base
    parsed = config if isinstance(config, AgentVersionConfig) else parse_config(config)
    previous = version_snapshot(agent.active_version) if agent.active_version else {}
    version = _create_version(agent=agent, config=parsed, actor=actor, change_note=change_note)
    snapshot = version_snapshot(version)
    audit_record(
        action="agent.version.created",
        obj=version,
        project=agent.project,
        data={
            "agent": agent.slug,
            "version": version.number,
            "config": snapshot,
            "diff_from_active": config_diff(previous, snapshot),
        },
    )
    if activate:
        _activate(agent=agent, version=version, actor=actor)
    return version


@transaction.atomic
def agent_version_activate(*, version: AgentVersion, actor=None) -> Agent:
    """Make ``version`` the active version of its agent (rollback = activating an older one).

    Activating the already active version is a no-op (nothing recorded)."""
    agent = Agent.objects.select_for_update().get(pk=version.agent_id)
    if agent.active_version_id == version.pk:
        return agent
    _activate(agent=agent, version=version, actor=actor)
    return agent


def agent_config_resolve(project, config: AgentVersionConfig, *, agent: Agent | None = None):
    """The endpoint, tools (by name), delegates, policy and budget a config names, without
    writing anything (e.g. to check a draft for a replay). Raises ``ValidationError``
    keyed by config path (``grants.0.tool``, ``model_endpoint``, ``budget``)."""
    return _resolve(project, config, agent=agent)
