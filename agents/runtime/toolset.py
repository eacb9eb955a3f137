"""Governed tool calls, in one place: ``GovernedToolset.call_tool``.

``ConnectorToolset`` lists an agent version's granted tools and executes them through
``agents.connectors.tool_invoke`` (HTTP, MCP, built-in), ungoverned; ``GovernedToolset``
wraps it with the governed call path: the turn's stop check (``TurnContext.stop_check``:
``TurnStopped``, nothing executed) -> the decision (``agents.governed.decide_for_version``:
schema, grant, CEL rules, breaker, caps, rate limit) audited with its rule -> invalid
arguments: the model is asked to retry -> deny: a refusal as the tool result -> PII scan of
the arguments (``tool_input``) -> require_approval: an approval request through
``governance.approval_port`` and pydantic-ai's ``ApprovalRequired`` (the turn parks) ->
execution with the tool's timeout and an idempotency key -> the circuit breaker outcome
-> PII scan of the result (``tool_output``) before the model sees it -> audit
``tool.executed``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from pydantic_ai import ApprovalRequired, ModelRetry, RunContext
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_ai.toolsets.external import TOOL_SCHEMA_VALIDATOR

from agents.connectors import tool_invoke
from agents.governed import decide_for_version
from agents.models import Tool
from agents.runtime.context import TurnContext, args_hash
from governance.approval_port import approval_request
from governance.engine import record_tool_outcome
from governance.services import audit_batch, audit_record

TOOL_MAX_RETRIES = 2

# Function names OpenAI and Anthropic accept (their tool-name pattern); our tool names may
# also hold dots (``crm.lookup``), which both reject.
PROVIDER_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def provider_safe_name(name: str) -> str:
    """``name`` with every character a provider rejects replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:60]


def provider_tool_names(names) -> dict[str, str]:
    """``{name shown to the model: tool name}`` for ``names``: a safe name stays as it is;
    any other character becomes ``_`` (``crm.lookup`` -> ``crm_lookup``), with ``_2``,
    ``_3``... added when that collides with another tool's name."""
    aliases: dict[str, str] = {}
    for name in sorted(n for n in names if PROVIDER_SAFE_NAME.match(n)):
        aliases[name] = name
    for name in sorted(n for n in names if not PROVIDER_SAFE_NAME.match(n)):
        base = provider_safe_name(name)
        alias, counter = base, 1
        while alias in aliases:
            counter += 1
            alias = f"{base}_{counter}"
        aliases[alias] = name
    return aliases


def idempotency_key(
    ctx: TurnContext, tool_call_id: str, name: str = "", arguments: Any = None
) -> str:
    """The key sent with a tool call: SHA-256 of (run, step, turn, tool call id), so a
    retried step repeats the same key and the tool can drop the duplicate; with the
    call's tool ``name`` and ``arguments`` in a turn with a ``key_scope`` (a flow's agent
    step), of (scope, name, arguments hash, occurrence): ``TurnContext.tool_key_source``."""
    source = (
        ctx.tool_key_source(name, arguments, tool_call_id)
        if name
        else ctx.call_id("tool", tool_call_id)
    )
    return hashlib.sha256(source.encode()).hexdigest()


@dataclass
class ConnectorToolset(AbstractToolset[Any]):
    """The tools, by name, executed with ``tool_invoke``; no governance (the baseline of
    ``bench/governed_call.py`` and the inner toolset of ``GovernedToolset``)."""

    tools: dict[str, Tool]
    ctx: TurnContext | None = None
    _defs: dict[str, ToolsetTool] = field(default_factory=dict, repr=False)
    aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.aliases = provider_tool_names(self.tools)

    def tool_name(self, alias: str) -> str:
        """The tool name behind the name the model used (see ``provider_tool_names``)."""
        return self.aliases.get(alias, alias)

    @property
    def id(self) -> str | None:
        return "controlplane-tools"

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        if not self._defs:
            for alias, name in self.aliases.items():
                tool = self.tools[name]
                self._defs[alias] = ToolsetTool(
                    toolset=self,
                    tool_def=ToolDefinition(
                        name=alias,
                        description=tool.description or None,
                        parameters_json_schema=tool.input_schema or {"type": "object"},
                    ),
                    max_retries=TOOL_MAX_RETRIES,
                    args_validator=TOOL_SCHEMA_VALIDATOR,
                )
        return self._defs

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx, tool) -> Any:
        key = idempotency_key(self.ctx, ctx.tool_call_id) if self.ctx else ""
        result = await sync_to_async(tool_invoke)(
            tool=self.tools[self.tool_name(name)], arguments=tool_args, idempotency_key=key
        )
        return result.output if result.ok else {"error": result.error}


def refusal(rule: str, messages) -> str:
    """The tool result a denied call returns to the model."""
    detail = "; ".join(messages) if messages else "denied"
    return f"REFUSED by governance policy (rule {rule}): {detail}. Do not retry this call."


@dataclass
class GovernedToolset(WrapperToolset[Any]):
    """``ConnectorToolset`` behind the governed call path (see the module docstring)."""

    ctx: TurnContext = None  # type: ignore[assignment]

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx, tool) -> Any:
        return await sync_to_async(self._call)(
            self.wrapped.tool_name(name),
            dict(tool_args),
            ctx.tool_call_id or "",
            ctx.tool_call_approved,
        )

    # --- the path (sync: database) ---------------------------------------------------------

    def _payload(self, tool_name: str, tool_call_id: str, data: dict[str, Any]) -> dict:
        turn = self.ctx
        payload = {
            "tool": tool_name,
            "tool_call_id": tool_call_id,
            "turn_id": turn.turn.pk,
            "run_id": turn.run_id,
        }
        payload.update(data)
        return payload

    def _event(self, action: str, tool_name: str, tool_call_id: str, **data: Any) -> None:
        turn = self.ctx
        payload = self._payload(tool_name, tool_call_id, data)
        audit_record(action=action, obj=turn.version, project=turn.project, data=payload)
        turn.events.append({"event": action, **payload})

    def _decide(self, name: str, arguments: dict, tool_call_id: str):
        """Decide the call and audit the decision in one transaction (the counters the
        decision consumed commit with its audit event)."""
        turn = self.ctx
        with turn.batch():
            decision = decide_for_version(
                version=turn.version,
                tool_name=name,
                arguments=arguments,
                run={"id": turn.run_id, "trace_id": "", "tool_calls": turn.tool_calls},
                user=turn.user,
                usage={"cost_usd": str(turn.cost_usd), "tokens": turn.tokens},
                policy=turn.policy,
                granted=turn.grants,
                user_role=turn.user_role,
            )
            self._event(
                "tool.decision",
                name,
                tool_call_id,
                args_hash=args_hash(arguments),
                **decision.as_data(),
            )
        return decision

    def _call(self, name: str, arguments: dict, tool_call_id: str, approved: bool) -> Any:
        turn = self.ctx
        turn.stop_check("tool", tool=name, tool_call_id=tool_call_id)  # TurnStopped
        turn.tool_calls += 1
        if approved:
            bound = turn.approved.get(tool_call_id)
            same = (
                bound is not None
                and bound.get("args_hash") == args_hash(arguments)
                and bound.get("policy_version_id") == turn.policy.version_id
            )
            self._event("tool.approval.recheck", name, tool_call_id, matches=same)
            if not same:
                # Edited arguments or a new policy: decided again from the start; a
                # require_approval now is covered by the approver's decision on exactly
                # these arguments.
                decision = self._decide(name, arguments, tool_call_id)
                if decision.rule == "schema" or decision.effect == "deny":
                    return refusal(decision.rule, decision.messages)
        else:
            decision = self._decide(name, arguments, tool_call_id)
            if decision.rule == "schema":
                raise ModelRetry("Invalid arguments: " + "; ".join(decision.messages))
            if decision.effect == "deny":
                return refusal(decision.rule, decision.messages)
        proposed_hash = args_hash(arguments)
        arguments = self._scan_arguments(name, arguments, tool_call_id)
        if isinstance(arguments, str):
            return arguments
        if not approved and decision.effect == "require_approval":
            return self._park(name, arguments, proposed_hash, tool_call_id, decision)
        return self._execute(name, arguments, tool_call_id)

    def _scan_arguments(self, name: str, arguments: dict, tool_call_id: str) -> dict | str:
        turn = self.ctx
        if not turn.pii:
            return arguments
        from governance.pii import scan_data

        result = scan_data(arguments, "tool_input", turn.pii_policy)
        if result.action == "block" or result.error:
            self._event(
                "tool.pii_blocked",
                name,
                tool_call_id,
                direction="tool_input",
                entities=sorted({f.entity_type for f in result.findings}),
                pii_counts=dict(Counter(f.entity_type for f in result.findings)),
            )
            return refusal("pii.tool_input", ["the arguments hold data the policy blocks"])
        return result.value_out if result.findings else arguments

    def _park(self, name: str, arguments: dict, proposed_hash: str, tool_call_id: str, decision):
        """Ask for approval (bound to the policy version and the hash of the arguments as
        the model proposed them; the request shows them after the tool_input scan)."""
        turn = self.ctx
        entry = {
            "tool_call_id": tool_call_id,
            "tool_name": name,
            "arguments": arguments,
            "args_hash": proposed_hash,
            "policy_version_id": decision.policy_version_id,
            "rule": decision.rule,
        }
        entry["approval_request_id"] = approval_request(
            project_id=turn.project.pk,
            summary=f"{turn.version.agent.slug} wants to call {name}",
            payload={
                "tool": name,
                "arguments": arguments,
                "args_hash": entry["args_hash"],
                "policy_version_id": decision.policy_version_id,
                "rule": decision.rule,
                # The top turn of a delegation chain: the one to resume.
                "turn_id": turn.root_id,
                "delegate_turn_id": turn.turn.pk if turn.root_turn_id else None,
                "tool_call_id": tool_call_id,
                "agent": turn.version.agent.slug,
                "agent_version": turn.version.number,
                "run_id": turn.run_id,
                "step_id": turn.step_id,
                # The approver's edited arguments are checked against it (approvals may
                # not import agents).
                "input_schema": self.wrapped.tools[name].input_schema or {"type": "object"},
            },
            approver_role=decision.approver_role,
            quorum=decision.approval_quorum or 1,
            subject_kind="tool_call",
            risk=self.wrapped.tools[name].risk,
            requested_by_user_id=getattr(turn.user, "pk", None),
            agent_version_id=turn.version.pk,
        )
        turn.pending.append(entry)
        raise ApprovalRequired(metadata=entry)

    def _execute(self, name: str, arguments: dict, tool_call_id: str) -> Any:
        turn = self.ctx
        tool = self.wrapped.tools[name]
        result = tool_invoke(
            tool=tool,
            arguments=arguments,
            timeout_seconds=tool.timeout_seconds,
            idempotency_key=idempotency_key(turn, tool_call_id, name, arguments),
        )
        output: Any = result.output if result.ok else {"error": result.error}
        entities: list[str] = []
        counts: dict[str, int] = {}
        if turn.pii:
            from governance.pii import scan_data

            scanned = scan_data(output, "tool_output", turn.pii_policy)
            entities = sorted({f.entity_type for f in scanned.findings})
            counts = dict(Counter(f.entity_type for f in scanned.findings))
            if scanned.action == "block" or scanned.error:
                output = refusal("pii.tool_output", ["the result holds data the policy blocks"])
            elif scanned.findings:
                output = scanned.value_out
        payload = self._payload(
            name,
            tool_call_id,
            {
                "ok": result.ok,
                "error": result.error[:300],
                "duration_ms": result.duration_ms,
                "pii": entities,
                "pii_counts": counts,
            },
        )

        def write() -> None:
            # The breaker outcome and the execution's audit event: one transaction.
            record_tool_outcome(
                tool_id=tool.pk,
                ok=result.ok,
                policy=turn.policy,
                project_id=turn.project.pk,
                label=tool.name,
            )
            audit_record(
                action="tool.executed", obj=turn.version, project=turn.project, data=payload
            )

        if turn.deferred_writes is not None:
            turn.deferred_writes.append(write)
        else:
            with audit_batch():
                write()
        turn.events.append({"event": "tool.executed", **payload})
        return output
