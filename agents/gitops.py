"""Policy-as-code for the agent registry: export a project's registry as a document, plan and apply one.

The document (YAML on disk, a dict here) lists a project's model endpoints, MCP servers,
tools and agents; each agent's ``config`` is the ``agents.config.AgentVersionConfig`` of
its active version, the same shape the API and diffs use. ``registry_plan`` validates the
whole document and says what would change; ``registry_apply`` writes the changes in one
transaction through ``agents.services`` (which validate and audit). Nothing missing from
the document is ever deleted: such objects are reported as ``not_in_file``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import pydantic
import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Max

from agents.config import (
    AgentVersionConfig,
    DecimalText,
    GrantConfig,
    PriceOverride,
    decimal_text,
)
from agents.models import (
    Agent,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    Tool,
    ToolGrant,
    mcp_server_write_role,
)
from agents.selectors import (
    agents_for_project,
    agents_with_config,
    config_diff,
    mcp_servers_for_project,
    model_endpoints_for_project,
    tools_for_project,
    version_snapshot,
)
from agents.services import (
    agent_create,
    agent_update,
    agent_version_create,
    mcp_server_create,
    mcp_server_update,
    model_endpoint_create,
    model_endpoint_update,
    tool_create,
    tool_update,
)
from controlplane.models import Project, Role
from controlplane.permissions import membership_role

DOCUMENT_VERSION = 1
CHANGE_NOTE = "applied from a registry file (agents_apply)"

MODEL_ENDPOINT = "model_endpoint"
MCP_SERVER = "mcp_server"
TOOL = "tool"
AGENT = "agent"

CREATE = "create"
UPDATE = "update"
UNCHANGED = "unchanged"
NOT_IN_FILE = "not_in_file"

ErrorList = list[tuple[str, str]]


# --- The document ---------------------------------------------------------------------------


class _Spec(pydantic.BaseModel):
    # Unlike AgentVersionConfig, no whitespace stripping: descriptions are stored as given,
    # and a stripped copy would differ from the stored one (export -> apply must be a no-op).
    model_config = pydantic.ConfigDict(extra="forbid")


class ModelEndpointSpec(_Spec):
    """A model endpoint (``agents.models.ModelEndpoint``). A key stored encrypted is never
    part of the document and is left as it is; ``credential_env_var`` names a variable."""

    name: str
    kind: str
    base_url: str = ""
    default_model: str = ""
    genai_prices_provider: str = ""
    credential_env_var: str = ""
    price_overrides: dict[str, PriceOverride] = {}


class MCPServerSpec(_Spec):
    """An MCP server (``agents.models.MCPServer``); sync state is not part of the document."""

    name: str
    transport: str
    url: str = ""
    command: list[str] = []
    auth_env_var: str = ""


class ToolSpec(_Spec):
    """A tool (``agents.models.Tool``); ``mcp_server`` is the server's name.
    ``cost_per_call_usd`` is USD as a decimal string."""

    name: str
    kind: str
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    http_url: str = ""
    http_method: str = "POST"
    http_headers: dict[str, Any] = {}
    timeout_seconds: float = 30.0
    mcp_server: str | None = None
    mcp_tool_name: str = ""
    builtin_name: str = ""
    risk: str = "read"
    idempotent: bool = False
    cost_per_call_usd: DecimalText | None = None


class AgentSpec(_Spec):
    """An agent and the configuration its active version should have."""

    slug: str
    description: str = ""
    config: AgentVersionConfig


class _Envelope(_Spec):
    """The top level only; sections are validated item by item so every error is found."""

    version: Literal[1]
    project: str
    model_endpoints: list[Any] = []
    mcp_servers: list[Any] = []
    tools: list[Any] = []
    agents: list[Any] = []

    @pydantic.field_validator("model_endpoints", "mcp_servers", "tools", "agents", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # "tools:" with nothing under it loads as None in YAML: an empty section.
        return [] if value is None else value


class RegistryDocument(_Envelope):
    """The whole document. ``project`` must be the slug of the project it is applied to."""

    model_endpoints: list[ModelEndpointSpec] = []
    mcp_servers: list[MCPServerSpec] = []
    tools: list[ToolSpec] = []
    agents: list[AgentSpec] = []


SECTIONS: dict[str, type[_Spec]] = {
    "model_endpoints": ModelEndpointSpec,
    "mcp_servers": MCPServerSpec,
    "tools": ToolSpec,
    "agents": AgentSpec,
}
_KEY_FIELD = {"model_endpoints": "name", "mcp_servers": "name", "tools": "name", "agents": "slug"}

# Shown in exports even at their default value: what a reviewer of the file must see.
_ALWAYS_SHOWN: dict[type[pydantic.BaseModel], set[str]] = {
    RegistryDocument: set(SECTIONS),
    ToolSpec: {"risk"},
    GrantConfig: {"effect"},
}


# --- Results --------------------------------------------------------------------------------


class GitopsError(Exception):
    """The document is invalid (or could not be applied); nothing was changed.

    ``errors`` is a list of ``(path, message)``; ``path`` locates the value in the
    document, e.g. ``agents[0].config.grants[1].rules[0].when`` ("" for the whole file).
    """

    def __init__(self, errors: ErrorList):
        self.errors = errors
        super().__init__(f"{len(errors)} error(s) in the registry document; nothing was changed")


@dataclass(frozen=True)
class Change:
    """What happens to one object.

    ``kind`` is model_endpoint / mcp_server / tool / agent; ``action`` is create / update /
    unchanged / not_in_file (exists in the project, absent from the document: kept).
    ``fields`` lists differences as ``[{"field", "before", "after"}]`` (JSON-able); for an
    agent they are ``description`` and the ``config_diff`` of its active version's snapshot
    against the document. ``new_version`` is the number the agent's next version gets
    (None: no new version). ``path`` locates the object in the document.
    """

    kind: str
    name: str
    action: str
    path: str = ""
    fields: list[dict[str, Any]] = field(default_factory=list)
    new_version: int | None = None
    desired: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Plan:
    """The changes a document makes to a project, in the order they are applied, and the
    errors that block it. ``applied`` is True once ``registry_apply`` wrote the changes."""

    project: str
    changes: list[Change] = field(default_factory=list)
    errors: ErrorList = field(default_factory=list)
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        return any(c.action in (CREATE, UPDATE) for c in self.changes)

    def with_action(self, action: str) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    def get(self, kind: str, name: str) -> Change | None:
        return next((c for c in self.changes if c.kind == kind and c.name == name), None)


# --- Paths and values -----------------------------------------------------------------------


def _path(*parts: Any) -> str:
    """``_path("agents", 0, "config", "grants", 1)`` -> ``agents[0].config.grants[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "":
            out = f"{out}.{part}" if out else str(part)
    return out


def _pydantic_errors(exc: pydantic.ValidationError, base: str) -> ErrorList:
    return [(_path(base, *error["loc"]), error["msg"]) for error in exc.errors()]


def _django_errors(exc: ValidationError, base: str) -> ErrorList:
    if not hasattr(exc, "error_dict"):
        return [(base, message) for message in exc.messages]
    return [
        (base if name == NON_FIELD_ERRORS else _path(base, name), message)
        for name, messages in exc.message_dict.items()
        for message in messages
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    # Type-strict: 1 and True, or 10 and 10.0, count as different (an update too many is
    # harmless; a change missed is not).
    return json.dumps(_jsonable(value), sort_keys=True)


def _prices(overrides: Any) -> Any:
    """Price overrides with every price as decimal text, so "0.5", 0.5 and "0.50" compare equal."""
    if not isinstance(overrides, dict):
        return overrides
    out: dict[str, Any] = {}
    for model_name, prices in overrides.items():
        if not isinstance(prices, dict):
            out[model_name] = prices
            continue
        out[model_name] = {}
        for key, price in prices.items():
            try:
                out[model_name][key] = decimal_text(Decimal(str(price)))
            except InvalidOperation:
                out[model_name][key] = price
    return out


def _differences(current: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    changes = []
    for name, after in desired.items():
        before = current[name]
        if isinstance(before, Decimal) or isinstance(after, Decimal):
            same = before == after  # Decimal("0.01") == Decimal("0.010000")
        else:
            same = _canonical(before) == _canonical(after)
        if not same:
            changes.append({"field": name, "before": _jsonable(before), "after": _jsonable(after)})
    return changes


# --- Export ---------------------------------------------------------------------------------


def _compact(model: pydantic.BaseModel) -> dict[str, Any]:
    """The model as JSON-able data in field order, leaving out fields at their default."""
    dumped = model.model_dump(mode="json")
    shown = _ALWAYS_SHOWN.get(type(model), set())
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if (
            not info.is_required()
            and name not in shown
            and value == info.get_default(call_default_factory=True)
        ):
            continue
        if isinstance(value, pydantic.BaseModel):
            out[name] = _compact(value)
        elif isinstance(value, list) and any(isinstance(v, pydantic.BaseModel) for v in value):
            out[name] = [_compact(v) for v in value]
        else:
            out[name] = dumped[name]
    return out


def registry_export(*, project: Project) -> dict[str, Any]:
    """The registry document of ``project`` as JSON-able data (decimals as strings).

    Objects are sorted by name, fields in document order, fields at their default left out.
    Agents are exported with their active version's configuration. Tools removed from
    their MCP server are left out; synced MCP tools are included. Keys stored encrypted
    are never exported. ``registry_apply`` of the result changes nothing.
    """
    document = RegistryDocument(
        version=DOCUMENT_VERSION,
        project=project.slug,
        model_endpoints=[
            ModelEndpointSpec(**_endpoint_values(e))
            for e in model_endpoints_for_project(project).order_by("name")
        ],
        mcp_servers=[
            MCPServerSpec(**_server_values(s))
            for s in mcp_servers_for_project(project).order_by("name")
        ],
        tools=[
            ToolSpec(**_tool_values(t))
            for t in tools_for_project(project, include_removed=False).order_by("name")
        ],
        agents=[
            AgentSpec(
                slug=a.slug,
                description=a.description,
                config=AgentVersionConfig.model_validate(version_snapshot(a.active_version)),
            )
            for a in agents_with_config(project).order_by("slug")
            if a.active_version_id is not None
        ],
    )
    return _compact(document)


# --- YAML -----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (instructions) as a literal block, readable and diffable in review.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML would silently keep the last one,
    so ``effect: allow`` then ``effect: deny`` would not say which one a reviewer saw)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def document_to_yaml(document: dict[str, Any]) -> str:
    """YAML text for a document from ``registry_export``; keys keep their order."""
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def document_from_yaml(text: str) -> Any:
    """Parse YAML text (safe loader, duplicate keys refused).

    Raises ``GitopsError`` with one error naming the line and column (1-based).
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise GitopsError([("", f"invalid YAML at {where}: {problem}{context}")]) from exc
    except yaml.YAMLError as exc:
        raise GitopsError([("", f"invalid YAML: {exc}")]) from exc


# --- Plan -----------------------------------------------------------------------------------


ENDPOINT_DOC_FIELDS = tuple(ModelEndpointSpec.model_fields)
MCP_SERVER_DOC_FIELDS = tuple(MCPServerSpec.model_fields)
TOOL_DOC_FIELDS = tuple(ToolSpec.model_fields)


@dataclass
class _Parsed:
    """Specs that passed the shape check, with their index in the file; every name given
    in a section (even in an item with errors, so it is not also reported as unknown)."""

    items: dict[str, list[tuple[int, Any, Any]]] = field(default_factory=dict)
    names: dict[str, set[str]] = field(default_factory=dict)


def _parse(document: Any, project: Project, errors: ErrorList) -> _Parsed | None:
    if not isinstance(document, dict):
        errors.append(
            ("", "The document must be a mapping with version, project and the sections.")
        )
        return None
    try:
        envelope = _Envelope.model_validate(document)
    except pydantic.ValidationError as exc:
        errors.extend(_pydantic_errors(exc, ""))
        envelope = None
    if envelope is not None and envelope.project != project.slug:
        errors.append(
            ("project", f"The document is for project {envelope.project!r}, not {project.slug!r}.")
        )
    parsed = _Parsed()
    for section, spec_class in SECTIONS.items():
        raw_items = document.get(section) or []
        parsed.items[section] = []
        parsed.names[section] = set()
        if not isinstance(raw_items, list):
            continue  # reported by the envelope
        first_index: dict[str, int] = {}
        key_field = _KEY_FIELD[section]
        for index, raw in enumerate(raw_items):
            key = raw.get(key_field) if isinstance(raw, dict) else None
            if isinstance(key, str):
                parsed.names[section].add(key)
                if key in first_index:
                    errors.append(
                        (
                            _path(section, index, key_field),
                            f"{key!r} is already defined at {_path(section, first_index[key])}.",
                        )
                    )
                    continue
                first_index[key] = index
            try:
                spec = spec_class.model_validate(raw)
            except pydantic.ValidationError as exc:
                errors.extend(_pydantic_errors(exc, _path(section, index)))
                continue
            parsed.items[section].append((index, spec, raw))
    return parsed


def _full_clean(instance, base: str, errors: ErrorList, exclude: list[str] | None = None) -> None:
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        errors.extend(_django_errors(exc, base))


def _endpoint_fields(spec: ModelEndpointSpec) -> dict[str, Any]:
    data = {name: getattr(spec, name) for name in ENDPOINT_DOC_FIELDS}
    # Stored as JSON: prices as decimal strings.
    data["price_overrides"] = {
        model_name: prices.model_dump(mode="json", exclude_none=True)
        for model_name, prices in spec.price_overrides.items()
    }
    return data


def _plan_object(
    plan: Plan,
    errors: ErrorList,
    *,
    kind: str,
    path: str,
    current: Any,
    new: Callable[[dict[str, Any]], Any],
    desired: dict[str, Any],
    before: Callable[[Any], dict[str, Any]],
    model_fields: dict[str, Any] | None = None,
) -> Any:
    """Validate the object the document describes and record its change.

    ``desired`` holds the document's values as they are compared and applied;
    ``model_fields`` the same as model attributes (default: ``desired``), set on a new
    instance (``new(model_fields)``) or on ``current``, whose own values ``before(current)``
    gives in ``desired``'s terms. Returns the validated, unsaved instance.
    """
    model_fields = desired if model_fields is None else model_fields
    name = desired.get("name", "")
    if current is None:
        instance = new(model_fields)
        _full_clean(instance, path, errors)
        plan.changes.append(Change(kind, name, CREATE, path, desired=desired))
        return instance
    fields = _differences(before(current), desired)
    for field_name, value in model_fields.items():
        setattr(current, field_name, value)
    _full_clean(current, path, errors)
    action = UPDATE if fields else UNCHANGED
    plan.changes.append(Change(kind, name, action, path, fields, None, desired))
    return current


def _not_in_file(plan: Plan, kind: str, names: set[str]) -> None:
    plan.changes.extend(Change(kind, name, NOT_IN_FILE) for name in sorted(names))


# An object's values in the document's terms: exported, and compared with the document.


def _endpoint_values(endpoint: ModelEndpoint) -> dict[str, Any]:
    values = {name: getattr(endpoint, name) for name in ENDPOINT_DOC_FIELDS}
    values["price_overrides"] = _prices(endpoint.price_overrides)
    return values


def _plan_endpoints(project, parsed: _Parsed, plan: Plan, errors: ErrorList) -> None:
    existing = {e.name: e for e in model_endpoints_for_project(project)}
    for index, spec, _raw in parsed.items["model_endpoints"]:
        _plan_object(
            plan,
            errors,
            kind=MODEL_ENDPOINT,
            path=_path("model_endpoints", index),
            current=existing.get(spec.name),
            new=lambda fields: ModelEndpoint(project=project, **fields),
            desired=_endpoint_fields(spec),
            before=_endpoint_values,
        )
    _not_in_file(plan, MODEL_ENDPOINT, set(existing) - parsed.names["model_endpoints"])


def _server_values(server: MCPServer) -> dict[str, Any]:
    return {name: getattr(server, name) for name in MCP_SERVER_DOC_FIELDS}


def _plan_servers(
    project, parsed: _Parsed, plan: Plan, errors: ErrorList, actor_role: Role | None
) -> dict[str, MCPServer]:
    """Plan MCP servers; returns the servers tools may name (existing and new, unsaved).

    With ``actor_role`` (a user applies the file), creating or changing a stdio server
    needs ``mcp_server_write_role``: admin."""
    existing = {s.name: s for s in mcp_servers_for_project(project)}
    known = dict(existing)
    for index, spec, _raw in parsed.items["mcp_servers"]:
        path = _path("mcp_servers", index)
        current = existing.get(spec.name)
        transports = (spec.transport, current.transport if current else spec.transport)
        server = _plan_object(
            plan,
            errors,
            kind=MCP_SERVER,
            path=path,
            current=current,
            new=lambda fields: MCPServer(project=project, **fields),
            desired=_server_values(spec),
            before=_server_values,
        )
        known[spec.name] = server
        needed = mcp_server_write_role(*transports)
        if (
            actor_role is not None
            and plan.changes[-1].action in (CREATE, UPDATE)
            and not actor_role.includes(needed)
        ):
            errors.append(
                (
                    _path(path, "transport"),
                    "A stdio MCP server runs a command on the control plane's host: creating "
                    f"or changing one needs the {needed.label.lower()} role.",
                )
            )
    _not_in_file(plan, MCP_SERVER, set(existing) - parsed.names["mcp_servers"])
    return known


def _tool_values(tool: Tool) -> dict[str, Any]:
    values = {name: getattr(tool, name) for name in TOOL_DOC_FIELDS}
    values["mcp_server"] = tool.mcp_server.name if tool.mcp_server_id else None
    return values


def _plan_tools(
    project, parsed: _Parsed, plan: Plan, errors: ErrorList, servers: dict[str, MCPServer]
) -> set[str]:
    """Plan tools; returns the names of tools removed from their MCP server."""
    all_tools = {t.name: t for t in tools_for_project(project)}
    removed = {name for name, t in all_tools.items() if t.removed_at is not None}
    for index, spec, _raw in parsed.items["tools"]:
        path = _path("tools", index)
        if spec.name in removed:
            errors.append(
                (
                    _path(path, "name"),
                    f"Tool {spec.name!r} was removed from its MCP server and keeps its name; "
                    "use another name.",
                )
            )
            continue
        server = None
        if spec.mcp_server is not None:
            # A server new in this file is unsaved: Tool.clean() checks the object itself.
            server = servers.get(spec.mcp_server)
            if server is None:
                errors.append(
                    (
                        _path(path, "mcp_server"),
                        f"No MCP server {spec.mcp_server!r} in this file or project.",
                    )
                )
                server = MCPServer(project=project, name=spec.mcp_server)
        desired = {name: getattr(spec, name) for name in TOOL_DOC_FIELDS}
        _plan_object(
            plan,
            errors,
            kind=TOOL,
            path=path,
            current=all_tools.get(spec.name),
            new=lambda fields: Tool(project=project, **fields),
            desired=desired,
            before=_tool_values,
            model_fields={**desired, "mcp_server": server},
        )
    _not_in_file(plan, TOOL, set(all_tools) - removed - parsed.names["tools"])
    return removed


@dataclass
class _Known:
    """Names a configuration may refer to: in the document or already in the project."""

    endpoints: set[str]
    tools: set[str]
    removed_tools: set[str]
    agents: set[str]


def _check_config(
    config: AgentVersionConfig, raw: Any, slug: str, path: str, known: _Known, errors: ErrorList
) -> ErrorList:
    """Check a config's references and model rules; appends to ``errors``. Returns the
    errors that only matter if a new version is created (grants of removed tools: an
    unchanged active version may still hold them)."""
    deferred: ErrorList = []
    if config.model_endpoint not in known.endpoints:
        errors.append(
            (
                _path(path, "model_endpoint"),
                f"No model endpoint {config.model_endpoint!r} in this file or project.",
            )
        )
    version = AgentVersion(
        number=1,
        model_name=config.model_name,
        instructions=config.instructions,
        temperature=config.temperature,
        max_output_tokens=config.max_output_tokens,
        max_tool_calls_per_turn=config.max_tool_calls_per_turn,
    )
    _full_clean(version, path, errors, exclude=["agent", "model_endpoint"])
    for index, grant in enumerate(config.grants):
        grant_path = _path(path, "grants", index)
        if grant.tool in known.removed_tools:
            deferred.append(
                (
                    _path(grant_path, "tool"),
                    f"Tool {grant.tool!r} was removed from its MCP server.",
                )
            )
        elif grant.tool not in known.tools:
            errors.append(
                (_path(grant_path, "tool"), f"No tool {grant.tool!r} in this file or project.")
            )
        # The config schema compiled the conditions; the model checks the rest of the grant.
        data = grant.model_dump(exclude={"tool"})
        _full_clean(ToolGrant(**data), grant_path, errors, exclude=["agent_version", "tool"])
    raw_delegates = raw.get("delegates") if isinstance(raw, dict) else None
    for sorted_index, delegate in enumerate(config.delegates):
        # The config sorts delegates; point at the position in the file.
        in_file = isinstance(raw_delegates, list) and delegate in raw_delegates
        delegate_path = _path(
            path, "delegates", raw_delegates.index(delegate) if in_file else sorted_index
        )
        if delegate == slug:
            errors.append((delegate_path, "An agent cannot delegate to itself."))
        elif delegate not in known.agents:
            errors.append((delegate_path, f"No agent {delegate!r} in this file or project."))
    return deferred


def _creation_order(new: dict[str, tuple[str, AgentSpec]], errors: ErrorList) -> list[str]:
    """New agents ordered so that each is created after the new agents it delegates to."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(slug: str, trail: list[str]) -> None:
        if state.get(slug) == "done":
            return
        if state.get(slug) == "visiting":
            cycle = trail[trail.index(slug) :] + [slug]
            errors.append(
                (
                    _path(new[slug][0], "config", "delegates"),
                    "New agents delegate to each other in a cycle ("
                    + " -> ".join(cycle)
                    + "); create one without the delegate first, then apply again.",
                )
            )
            return
        state[slug] = "visiting"
        for delegate in new[slug][1].config.delegates:
            if delegate in new:
                visit(delegate, [*trail, slug])
        state[slug] = "done"
        order.append(slug)

    for slug in sorted(new):
        visit(slug, [])
    return order


def _plan_agents(project, parsed: _Parsed, plan: Plan, errors: ErrorList, known: _Known) -> None:
    existing = {a.slug: a for a in agents_with_config(project)}
    new: dict[str, tuple[str, AgentSpec]] = {}
    updates: list[Change] = []
    for index, spec, raw in parsed.items["agents"]:
        path = _path("agents", index)
        current = existing.get(spec.slug)
        old_description = current.description if current else ""
        candidate = current or Agent(project=project, slug=spec.slug)
        candidate.description = spec.description
        _full_clean(candidate, path, errors, exclude=["active_version", "owner"])
        deferred = _check_config(
            spec.config, raw.get("config"), spec.slug, _path(path, "config"), known, errors
        )
        desired = {"description": spec.description, "config": spec.config.model_dump()}
        if current is None:
            errors.extend(deferred)
            new[spec.slug] = (path, spec)
            continue
        fields = []
        if old_description != spec.description:
            fields.append(
                {"field": "description", "before": old_description, "after": spec.description}
            )
        active = version_snapshot(current.active_version) if current.active_version else {}
        diff = config_diff(active, desired["config"])
        new_version = None
        if diff:
            errors.extend(deferred)
            latest = AgentVersion.objects.filter(agent=current).aggregate(n=Max("number"))["n"]
            new_version = (latest or 0) + 1
        fields.extend(diff)
        action = UPDATE if fields else UNCHANGED
        updates.append(Change(AGENT, spec.slug, action, path, fields, new_version, desired))
    for slug in _creation_order(new, errors):
        path, spec = new[slug]
        desired = {"description": spec.description, "config": spec.config.model_dump()}
        plan.changes.append(Change(AGENT, slug, CREATE, path, new_version=1, desired=desired))
    plan.changes.extend(updates)
    _not_in_file(plan, AGENT, set(existing) - parsed.names["agents"])


def registry_plan(*, project: Project, document: Any, actor=None) -> Plan:
    """Validate ``document`` against ``project`` and list the changes applying it would make.

    Reads only. Every problem is collected in ``plan.errors`` as ``(path, message)``:
    the document's shape (pydantic, CEL conditions included), each object's model rules
    (``full_clean()`` on unsaved instances), and references (endpoints, tools, MCP servers
    and delegates named in the document or existing in the project). When ``actor`` is a
    user, creating or changing a stdio MCP server needs their admin role in the project
    (without a user, the system acts: whoever runs the command already has the host).
    Changes are listed in the order
    ``registry_apply`` makes them: endpoints, MCP servers, tools, new agents (each after
    the new agents it delegates to), then existing agents.
    """
    plan = Plan(project=project.slug)
    errors: ErrorList = []
    parsed = _parse(document, project, errors)
    if parsed is not None:
        _plan_endpoints(project, parsed, plan, errors)
        actor_role = None
        if getattr(actor, "is_authenticated", False):
            # Not a member at all: the lowest role (the command checks membership first).
            actor_role = membership_role(actor, project) or Role.VIEWER
        servers = _plan_servers(project, parsed, plan, errors, actor_role)
        removed = _plan_tools(project, parsed, plan, errors, servers)
        live_tools = {t.name for t in tools_for_project(project, include_removed=False)}
        known = _Known(
            endpoints=parsed.names["model_endpoints"]
            | set(model_endpoints_for_project(project).values_list("name", flat=True)),
            tools=(parsed.names["tools"] - removed) | live_tools,
            removed_tools=removed,
            agents=parsed.names["agents"]
            | set(agents_for_project(project).values_list("slug", flat=True)),
        )
        _plan_agents(project, parsed, plan, errors, known)
    plan.errors = errors
    return plan


# --- Apply ----------------------------------------------------------------------------------


def _apply_change(project: Project, change: Change, actor) -> None:
    changed = [f["field"] for f in change.fields]
    if change.kind == MODEL_ENDPOINT:
        if change.action == CREATE:
            model_endpoint_create(project=project, **change.desired)
        else:
            endpoint = ModelEndpoint.objects.get(project=project, name=change.name)
            model_endpoint_update(endpoint=endpoint, **{f: change.desired[f] for f in changed})
    elif change.kind == MCP_SERVER:
        if change.action == CREATE:
            mcp_server_create(project=project, **change.desired)
        else:
            server = MCPServer.objects.get(project=project, name=change.name)
            mcp_server_update(server=server, **{f: change.desired[f] for f in changed})
    elif change.kind == TOOL:
        fields = dict(change.desired)
        if fields["mcp_server"] is not None:
            fields["mcp_server"] = MCPServer.objects.get(project=project, name=fields["mcp_server"])
        if change.action == CREATE:
            tool_create(project=project, **fields)
        else:
            tool = Tool.objects.get(project=project, name=change.name)
            tool_update(tool=tool, **{f: fields[f] for f in changed})
    elif change.action == CREATE:
        agent_create(
            project=project,
            slug=change.name,
            description=change.desired["description"],
            config=change.desired["config"],
            actor=actor,
            change_note=CHANGE_NOTE,
        )
    else:
        agent = Agent.objects.get(project=project, slug=change.name)
        if "description" in changed:
            agent = agent_update(agent=agent, description=change.desired["description"])
        if change.new_version is not None:
            agent_version_create(
                agent=agent, config=change.desired["config"], actor=actor, change_note=CHANGE_NOTE
            )


def registry_apply(*, project: Project, document: Any, dry_run: bool, actor=None) -> Plan:
    """Plan ``document`` and, unless ``dry_run``, apply it in one transaction.

    Creates or updates endpoints, MCP servers and tools whose fields differ, creates new
    agents, and gives an agent a new (activated) version only where the document's config
    differs from its active version's snapshot. Deletes nothing. Writes go through
    ``agents.services`` (validated, audited under the current actor; ``actor`` is the user
    recorded as creator of new versions and owner of new agents, or None; a user needs the
    admin role for stdio MCP server changes, see ``registry_plan``).
    Raises ``GitopsError`` with every error when the document is invalid; nothing is
    changed then. Applying an unchanged document writes nothing, not even an audit event.
    """
    if dry_run:
        plan = registry_plan(project=project, document=document, actor=actor)
        if plan.errors:
            raise GitopsError(plan.errors)
        return plan
    with transaction.atomic():
        # One apply per project at a time: the plan must still hold when it is applied.
        Project.objects.select_for_update().get(pk=project.pk)
        plan = registry_plan(project=project, document=document, actor=actor)
        if plan.errors:
            raise GitopsError(plan.errors)
        for change in plan.changes:
            if change.action not in (CREATE, UPDATE):
                continue
            try:
                _apply_change(project, change, actor)
            except ValidationError as exc:
                # Validated above, so only a concurrent change gets here; roll back all.
                raise GitopsError(_django_errors(exc, change.path)) from exc
        plan.applied = True
    return plan


# --- Plan as text ---------------------------------------------------------------------------


LABELS = {
    MODEL_ENDPOINT: "model endpoint",
    MCP_SERVER: "mcp server",
    TOOL: "tool",
    AGENT: "agent",
}


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def _grant_text(grant: dict[str, Any]) -> str:
    """A grant from a snapshot without the fields at their default."""
    try:
        return _show(_compact(GrantConfig.model_validate(grant)))
    except pydantic.ValidationError:
        return _show(grant)


def _field_lines(name: str, before: Any, after: Any, indent: str = "    ") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in [*before, *(k for k in after if k not in before)]:
            if _canonical(before.get(key)) != _canonical(after.get(key)):
                lines.extend(_field_lines(f"{name}.{key}", before.get(key), after.get(key), indent))
        return lines
    if before is None and isinstance(after, dict):
        return [f"{indent}{name}: added {_grant_text(after)}"]
    if isinstance(before, dict) and after is None:
        return [f"{indent}{name}: removed (was {_grant_text(before)})"]
    if isinstance(before, str) and isinstance(after, str) and ("\n" in before + after):
        diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1)
        return [f"{indent}{name}:"] + [f"{indent}  {line}" for line in list(diff)[2:]]
    return [f"{indent}{name}: {_show(before)} -> {_show(after)}"]


def plan_lines(plan: Plan) -> list[str]:
    """The plan as readable lines: ``+ tool x`` (create), ``~ agent y: new version 3`` with
    indented field differences (update), ``= unchanged tool z``, ``? not in file (kept) ...``,
    and a summary line."""
    lines: list[str] = []
    for change in plan.changes:
        label = f"{LABELS[change.kind]} {change.name}"
        if change.action == CREATE:
            lines.append(f"+ {label}" + (" (version 1)" if change.kind == AGENT else ""))
        elif change.action == UPDATE:
            suffix = f": new version {change.new_version}" if change.new_version else ""
            lines.append(f"~ {label}{suffix}")
            for entry in change.fields:
                lines.extend(_field_lines(entry["field"], entry["before"], entry["after"]))
    for change in plan.with_action(UNCHANGED):
        lines.append(f"= unchanged {LABELS[change.kind]} {change.name}")
    for change in plan.with_action(NOT_IN_FILE):
        lines.append(f"? not in file (kept) {LABELS[change.kind]} {change.name}")
    versions = sum(1 for c in plan.changes if c.kind == AGENT and c.new_version)
    lines.append(
        f"{len(plan.with_action(CREATE))} to create, {len(plan.with_action(UPDATE))} to update, "
        f"{len(plan.with_action(UNCHANGED))} unchanged, "
        f"{len(plan.with_action(NOT_IN_FILE))} not in file (kept); "
        f"{versions} new agent version{'s' if versions != 1 else ''}."
    )
    return lines
