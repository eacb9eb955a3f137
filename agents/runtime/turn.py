"""One agent turn: ``run_agent_turn`` builds a pydantic-ai ``Agent`` from an agent version
(governed model, governed toolset), runs it, and ends completed, parked for approval or
failed, with the turn stored in ``AgentTurn`` so a parked turn resumes in any worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.messages import ModelMessagesTypeAdapter
from pydantic_ai.usage import UsageLimits

from agents.governed import version_policy
from agents.models import Agent as RegisteredAgent
from agents.models import (
    AgentTurn,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    Tool,
    ToolGrant,
    TurnStatus,
)
from agents.runtime.context import STOPPED_RULE, TurnContext, TurnStopped
from agents.runtime.delegation import DelegateToolset
from agents.runtime.governed_model import GovernedModel, ModelCallRefused
from agents.runtime.providers import EndpointUnavailable, provider_model
from agents.runtime.toolset import ConnectorToolset, GovernedToolset
from controlplane.db import fetch_instances, select_clause
from controlplane.models import Membership, Project
from governance.engine import consume_run_cap
from governance.models import Budget
from governance.services import audit_record

# Model requests one turn may make (pydantic-ai UsageLimits.request_limit).
MAX_MODEL_REQUESTS_PER_TURN = 50


@dataclass(frozen=True)
class ApprovalDecision:
    """An approver's answer to one parked tool call: ``approved``; ``arguments`` (edited
    arguments, or ``None`` for the proposed ones: edited ones are decided again from the
    start); ``comment`` (returned to the model when denied)."""

    approved: bool
    arguments: dict[str, Any] | None = None
    comment: str = ""


@dataclass(frozen=True)
class Resume:
    """Resume the parked turn ``turn_id`` with a decision per pending tool call id."""

    turn_id: int
    decisions: dict[str, ApprovalDecision]


@dataclass
class TurnResult:
    """How a turn ended. ``status``: ``completed`` (``output`` is the final text),
    ``parked`` (``approval_request_ids`` wait for people; resume with ``Resume``) or
    ``failed`` (``reason`` says why; ``rule`` names the check; rule ``cancelled``: the
    turn's ``should_stop`` said stop at a call boundary). ``cost_usd``: Decimal USD
    of this run of the turn's model calls; ``events``: the transcript of calls and
    decisions (JSON-able dicts)."""

    status: str
    turn_id: int
    output: str = ""
    reason: str = ""
    rule: str = ""
    approval_request_ids: list[int] = field(default_factory=list)
    cost_usd: Decimal = Decimal(0)
    events: list[dict[str, Any]] = field(default_factory=list)


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _version_sql(vendor: str) -> tuple[str, tuple]:
    qn = connection.ops.quote_name
    select, parts = select_clause(
        (AgentVersion, "v"),
        (RegisteredAgent, "a"),
        (Project, "p"),
        (ModelEndpoint, "e"),
        (Budget, "b"),
    )
    sql = (
        f"{select} FROM {_table(AgentVersion)} v "  # noqa: S608 - names are ours
        f"JOIN {_table(RegisteredAgent)} a ON a.{qn('id')} = v.{qn('agent_id')} "
        f"JOIN {_table(Project)} p ON p.{qn('id')} = a.{qn('project_id')} "
        f"JOIN {_table(ModelEndpoint)} e ON e.{qn('id')} = v.{qn('model_endpoint_id')} "
        f"LEFT JOIN {_table(Budget)} b ON b.{qn('id')} = v.{qn('budget_id')} "
        f"WHERE v.{qn('id')} = %s"
    )
    return sql, parts


def load_version(pk: int) -> AgentVersion:
    """Agent version ``pk`` with its agent, the agent's project, its model endpoint and its
    budget loaded, in one hand-written query (the ORM's compiler cost more CPU than the
    round trip). Raises ``AgentVersion.DoesNotExist``."""
    sql, parts = _version_sql(connection.vendor)
    rows = fetch_instances(sql, [pk], parts)
    if not rows:
        raise AgentVersion.DoesNotExist(f"agent version {pk} does not exist")
    version, agent, project, endpoint, budget = rows[0]
    agent.project = project
    version.agent = agent
    version.model_endpoint = endpoint
    version.budget = budget
    return version


@cache
def _grants_sql(vendor: str) -> tuple[str, tuple]:
    qn = connection.ops.quote_name
    select, parts = select_clause((ToolGrant, "g"), (Tool, "t"), (MCPServer, "m"))
    sql = (
        f"{select} FROM {_table(ToolGrant)} g "  # noqa: S608 - names are ours
        f"JOIN {_table(Tool)} t ON t.{qn('id')} = g.{qn('tool_id')} "
        f"LEFT JOIN {_table(MCPServer)} m ON m.{qn('id')} = t.{qn('mcp_server_id')} "
        f"WHERE g.{qn('agent_version_id')} = %s AND t.{qn('removed_at')} IS NULL "
        f"ORDER BY t.{qn('name')}"
    )
    return sql, parts


def version_grants(version: AgentVersion) -> dict[str, ToolGrant]:
    """The version's grants of tools that still exist on their server, by tool name in
    name order (each grant's tool and the tool's MCP server loaded), in one hand-written
    query."""
    sql, parts = _grants_sql(connection.vendor)
    grants = {}
    for grant, tool, server in fetch_instances(sql, [version.pk], parts):
        tool.mcp_server = server
        grant.tool = tool
        grant.agent_version = version
        grants[tool.name] = grant
    return grants


@cache
def _delegates_sql(vendor: str) -> tuple[str, tuple]:
    qn = connection.ops.quote_name
    m2m = AgentVersion._meta.get_field("delegates")
    select, parts = select_clause((RegisteredAgent, "a"))
    sql = (
        f"{select} FROM {_table(RegisteredAgent)} a "  # noqa: S608 - names are ours
        f"JOIN {_table(m2m.remote_field.through)} d "
        f"ON d.{qn(m2m.m2m_reverse_name())} = a.{qn('id')} "
        f"WHERE d.{qn(m2m.m2m_column_name())} = %s AND a.{qn('active_version_id')} IS NOT NULL "
        f"ORDER BY a.{qn('project_id')}, a.{qn('slug')}"
    )
    return sql, parts


def version_delegates(version: AgentVersion) -> dict[str, RegisteredAgent]:
    """The version's delegate agents that have an active version, by slug (slug order)."""
    sql, parts = _delegates_sql(connection.vendor)
    return {agent.slug: agent for (agent,) in fetch_instances(sql, [version.pk], parts)}


def granted_tools(version: AgentVersion) -> dict[str, Tool]:
    """The version's granted tools that still exist on their server, by name."""
    return {name: grant.tool for name, grant in version_grants(version).items()}


def user_role(version: AgentVersion, user) -> str | None:
    """The role of ``user`` in the version's project: None for no (authenticated) user,
    "" for a user who is not a member."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    with connection.cursor() as cursor:
        cursor.execute(_role_sql(connection.vendor), [user.pk, version.agent.project_id])
        row = cursor.fetchone()
    return (row[0] if row else "") or ""


@cache
def _role_sql(vendor: str) -> str:
    qn = connection.ops.quote_name
    return (
        f"SELECT {qn('role')} FROM {_table(Membership)} "  # noqa: S608 - names are ours
        f"WHERE {qn('user_id')} = %s AND {qn('project_id')} = %s"
    )


def build_agent(ctx: TurnContext, *, governed: bool = True) -> Agent:
    """The pydantic-ai agent of ``ctx.version``: its endpoint's model (``GovernedModel``
    unless ``governed`` is false: benchmarks only), its instructions, its granted tools
    (``GovernedToolset`` over ``ConnectorToolset``), its delegates as tools
    (``DelegateToolset``), text or deferred tool calls as output.
    Raises ``EndpointUnavailable``."""
    version = ctx.version
    base = provider_model(endpoint=version.model_endpoint, model_name=version.model_name)
    ctx.grants = version_grants(version)
    ctx.user_role = user_role(version, ctx.user)
    tools = ConnectorToolset(tools={n: g.tool for n, g in ctx.grants.items()}, ctx=ctx)
    delegates = version_delegates(version)
    settings: dict[str, Any] = {"max_tokens": version.max_output_tokens}
    if version.temperature is not None:
        settings["temperature"] = version.temperature
    return Agent(
        GovernedModel(base, ctx=ctx) if governed else base,
        instructions=version.instructions,
        toolsets=[
            GovernedToolset(tools, ctx=ctx) if governed else tools,
            DelegateToolset(ctx=ctx, agents=delegates),
        ],
        output_type=[str, DeferredToolRequests],
        model_settings=settings,
    )


def usage_limits(version: AgentVersion) -> UsageLimits:
    """Per-turn caps: the version's ``max_tool_calls_per_turn`` and
    ``MAX_MODEL_REQUESTS_PER_TURN`` model requests."""
    return UsageLimits(
        request_limit=MAX_MODEL_REQUESTS_PER_TURN,
        tool_calls_limit=version.max_tool_calls_per_turn,
    )


# What a turn's end writes (its input, version and ids were written when it started).
_FINISHED_FIELDS = (
    "status",
    "output",
    "error",
    "messages",
    "pending",
    "model_requests",
    "tool_calls",
    "cost_usd",
    "updated_at",
)


def _finish(ctx: TurnContext, result: TurnResult, messages_json: bytes | None) -> TurnResult:
    turn = ctx.turn
    turn.status = result.status
    turn.output = result.output
    turn.error = result.reason
    if messages_json is not None:
        # pydantic-ai's own JSON of the messages (what ModelMessagesTypeAdapter reads).
        turn.messages = json.loads(messages_json)
    turn.pending = ctx.pending if result.status == TurnStatus.PARKED else []
    turn.model_requests += ctx.model_requests
    turn.tool_calls += ctx.tool_calls
    turn.cost_usd = Decimal(turn.cost_usd) + ctx.cost_usd
    with ctx.batch():
        turn.save(update_fields=_FINISHED_FIELDS)
        audit_record(
            action=f"agent.turn.{result.status}",
            obj=ctx.version,
            project=ctx.project,
            data={
                "turn_id": turn.pk,
                "run_id": ctx.run_id,
                "step_id": ctx.step_id,
                "rule": result.rule,
                "reason": result.reason,
                "cost_usd": ctx.cost_usd,
                "model_requests": ctx.model_requests,
                "tool_calls": ctx.tool_calls,
                "approval_request_ids": result.approval_request_ids,
            },
        )
    result.cost_usd = ctx.cost_usd
    result.events = ctx.events
    return result


def run_agent_turn(
    *,
    agent_version: AgentVersion | None,
    input: str = "",  # noqa: A002 - the issue's name for it
    run_id: str | None = None,
    step_id: str | None = None,
    user=None,
    resume: Resume | None = None,
    pii: bool = True,
    depth: int = 0,
    root_turn_id: int | None = None,
    should_stop: Callable[[], str | None] | None = None,
    key_scope: str = "",
) -> TurnResult:
    """Run one turn of ``agent_version`` on ``input`` through governance and return how it
    ended (``TurnResult``); never raises for a refused or failed call.

    ``run_id`` / ``step_id`` tie it to a flow run (per-run caps and counters, cost ledger
    entries, idempotency keys); without ``run_id`` the turn is its own run (``turn-<id>``).
    ``user``: the user the run acts for (CEL ``user``, user budgets). ``resume``: continue
    a parked turn from the database (its stored messages and pending calls) with the
    approvers' decisions (``agent_version`` and ``input`` are then ignored; raises
    ``ValueError`` when the turn is not parked, e.g. another worker resumed it; a call
    without a decision is denied). ``pii=False`` skips PII scanning (benchmarks only).
    ``depth`` and ``root_turn_id`` (the supervisor's top turn): set by delegation
    (``agents.runtime.delegation``). ``should_stop``: asked (sync, in the turn's thread)
    before each model request and each tool call, its delegates' too; a non-empty answer
    (the reason) stops the turn there: nothing further is sent or executed, the stop is
    audited ``agent.turn.stopped`` and the turn ends ``failed`` with rule ``cancelled``
    (a call already under way finishes first). ``key_scope``: tool calls' idempotency
    keys from the scope, the tool, its arguments and their occurrence instead of the turn
    (``TurnContext.tool_key_source``; a flow step passes its run and step run, so a turn
    run again after a crash repeats its keys; a resumed turn's scope gets the turn and
    its model request count added, so calls after an approval never reuse the keys of
    calls made before it). Sync: call it from a
    worker or a management command, not from a running event loop.
    """
    deferred = None
    history = None
    if resume is not None:
        # Claim the parked turn with a conditional UPDATE: of two workers resuming it, one
        # wins; the other gets ValueError and changes nothing.
        claimed = AgentTurn.objects.filter(pk=resume.turn_id, status=TurnStatus.PARKED).update(
            status=TurnStatus.RUNNING
        )
        turn = AgentTurn.objects.select_related("agent_version").get(pk=resume.turn_id)
        if not claimed:
            raise ValueError(f"turn {turn.pk} is {turn.status}, not parked")
        agent_version = turn.agent_version
        history = ModelMessagesTypeAdapter.validate_python(turn.messages)
        deferred = DeferredToolResults()
        for entry in turn.pending:
            if entry.get("kind") == "delegate":
                # A parked delegate: the call runs again and resumes the delegate's turn,
                # which applies the approvers' decisions to its own calls.
                deferred.approvals[entry["tool_call_id"]] = ToolApproved()
                continue
            answer = resume.decisions.get(entry["tool_call_id"])
            if answer is None or not answer.approved:
                message = (answer.comment if answer else "") or "The tool call was denied."
                deferred.approvals[entry["tool_call_id"]] = ToolDenied(
                    message=f"Denied by the approver: {message}"
                )
            else:
                deferred.approvals[entry["tool_call_id"]] = ToolApproved(
                    override_args=answer.arguments
                )
    else:
        turn = AgentTurn.objects.create(
            agent_version=agent_version,
            run_id=run_id or "",
            step_id=step_id or "",
            user=user if getattr(user, "pk", None) else None,
            input=input,
        )
    version = load_version(agent_version.pk)
    ctx = TurnContext(
        version=version,
        turn=turn,
        policy=version_policy(version),
        run_id=turn.run_id or f"turn-{turn.pk}",
        step_id=turn.step_id,
        user=user or turn.user,
        pii=pii,
        depth=depth,
        root_turn_id=root_turn_id,
        deferred_writes=[],
        should_stop=should_stop,
        key_scope=(
            f"{key_scope}:resumed:{turn.pk}:{turn.model_requests}"
            if key_scope and resume is not None
            else key_scope
        ),
    )
    if resume is not None:
        ctx.approved = {entry["tool_call_id"]: entry for entry in turn.pending}
    else:
        cap = consume_run_cap(
            run_id=ctx.run_id, cap="max_agent_invocations_per_run", policy=ctx.policy
        )
        if not cap.allowed:
            reason = "; ".join(cap.messages)
            return _finish(ctx, TurnResult("failed", turn.pk, reason=reason, rule=cap.rule), None)

    try:
        agent = build_agent(ctx)
        run = async_to_sync(agent.run)(
            None if resume else input,
            message_history=history,
            deferred_tool_results=deferred,
            usage_limits=usage_limits(version),
        )
    except ModelCallRefused as exc:
        result = TurnResult("failed", turn.pk, reason=exc.message, rule=exc.rule)
        return _finish(ctx, result, None)
    except TurnStopped as exc:
        result = TurnResult("failed", turn.pk, reason=exc.reason, rule=STOPPED_RULE)
        return _finish(ctx, result, None)
    except UsageLimitExceeded as exc:
        result = TurnResult("failed", turn.pk, reason=str(exc), rule="usage_limit")
        return _finish(ctx, result, None)
    except EndpointUnavailable as exc:
        result = TurnResult("failed", turn.pk, reason=str(exc), rule="model.endpoint_unavailable")
        return _finish(ctx, result, None)
    except Exception as exc:  # noqa: BLE001 - a turn ends failed, never half-way
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        return _finish(ctx, TurnResult("failed", turn.pk, reason=reason, rule="error"), None)
    output = run.output
    messages_json = run.all_messages_json()
    if isinstance(output, DeferredToolRequests):
        ids = [entry["approval_request_id"] for entry in ctx.pending]
        result = TurnResult("parked", turn.pk, approval_request_ids=ids)
        return _finish(ctx, result, messages_json)
    return _finish(ctx, TurnResult("completed", turn.pk, output=str(output)), messages_json)
