"""Delegate agents exposed as tools: an agent version's ``delegates`` become tools
``delegate_<slug>`` whose call runs one governed turn of the delegate's active version in the
same run (``run_agent_turn`` again: its own model calls, tool calls, budgets and audit),
up to the policy's ``caps.max_delegation_depth`` levels deep (default
``MAX_DELEGATION_DEPTH``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from pydantic_ai import ApprovalRequired, RunContext
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.toolsets.abstract import ToolsetTool
from pydantic_ai.toolsets.external import TOOL_SCHEMA_VALIDATOR

from agents.models import Agent
from agents.runtime.context import TurnContext
from governance.services import audit_record

# A delegate's delegates count one level deeper; a call past this depth is refused.
MAX_DELEGATION_DEPTH = 3
INPUT_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "What to ask the agent."}},
    "required": ["input"],
    "additionalProperties": False,
}
PREFIX = "delegate_"


def delegate_tool_name(slug: str) -> str:
    """The tool name of delegate ``slug`` (provider tool names allow ``[A-Za-z0-9_-]``)."""
    return f"{PREFIX}{slug}"


@dataclass
class DelegateToolset(AbstractToolset[Any]):
    """One tool per delegate agent of ``ctx.version`` (those with an active version)."""

    ctx: TurnContext
    agents: dict[str, Agent] = field(default_factory=dict)

    @property
    def id(self) -> str | None:
        return "controlplane-delegates"

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        return {
            delegate_tool_name(slug): ToolsetTool(
                toolset=self,
                tool_def=ToolDefinition(
                    name=delegate_tool_name(slug),
                    description=(
                        f"Ask the agent {slug} and get its answer. {agent.description}".strip()
                    ),
                    parameters_json_schema=INPUT_SCHEMA,
                ),
                max_retries=1,
                args_validator=TOOL_SCHEMA_VALIDATOR,
            )
            for slug, agent in self.agents.items()
        }

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx, tool) -> Any:
        return await sync_to_async(self._delegate)(
            name.removeprefix(PREFIX), tool_args, ctx.tool_call_id or "", ctx.tool_call_approved
        )

    def _delegate(self, slug: str, arguments: dict, tool_call_id: str, again: bool = False) -> str:
        from agents.runtime.turn import run_agent_turn

        turn = self.ctx
        parked = turn.approved.get(tool_call_id) if again else None
        if parked is not None and parked.get("kind") == "delegate":
            return self._answer(slug, tool_call_id, self._resume_child(parked))
        text = arguments.get("input") if isinstance(arguments, dict) else None
        if not isinstance(text, str) or not text:
            return "REFUSED: give the delegate's input as a non-empty string `input`."
        data = {"delegate": slug, "tool_call_id": tool_call_id, "turn_id": turn.turn.pk}
        max_depth = turn.policy.document.caps.max_delegation_depth
        if max_depth is None:
            max_depth = MAX_DELEGATION_DEPTH
        if turn.depth + 1 > max_depth:
            audit_record(
                action="agent.delegation.refused",
                obj=turn.version,
                project=turn.project,
                data={**data, "rule": "delegation.max_depth", "depth": turn.depth + 1},
            )
            turn.events.append({"event": "agent.delegation.refused", **data})
            return (
                f"REFUSED by governance policy (rule delegation.max_depth): delegation "
                f"deeper than {max_depth} levels (policy caps.max_delegation_depth)."
            )
        agent = Agent.objects.select_related("active_version").get(pk=self.agents[slug].pk)
        result = run_agent_turn(
            agent_version=agent.active_version,
            input=text,
            run_id=turn.run_id,
            step_id=turn.step_id,
            user=turn.user,
            pii=turn.pii,
            depth=turn.depth + 1,
            root_turn_id=turn.root_id,
            should_stop=turn.should_stop,
            key_scope=(
                turn.tool_key_source(delegate_tool_name(slug), {"input": text}, tool_call_id)
                if turn.key_scope
                else ""
            ),
        )
        return self._answer(slug, tool_call_id, result)

    def _resume_child(self, parked: dict):
        """Resume the parked delegate turn of ``parked`` (a pending entry of kind
        ``delegate``) with its approvers' decisions; a delegate another worker already
        finished answers with what it ended with."""
        from agents.models import AgentTurn, TurnStatus
        from agents.runtime.resume import decisions_for
        from agents.runtime.turn import Resume, TurnResult, run_agent_turn
        from governance.approval_port import approval_outcomes

        turn = self.ctx
        child = AgentTurn.objects.get(pk=parked["child_turn_id"])
        if child.status == TurnStatus.PARKED:
            ids = [e["approval_request_id"] for e in child.pending if e.get("approval_request_id")]
            try:
                return run_agent_turn(
                    agent_version=None,
                    resume=Resume(
                        turn_id=child.pk,
                        decisions=decisions_for(approval_outcomes(ids), child.pending),
                    ),
                    user=turn.user,
                    pii=turn.pii,
                    depth=turn.depth + 1,
                    root_turn_id=turn.root_id,
                    should_stop=turn.should_stop,
                    key_scope=f"{turn.key_scope}:delegate:{child.pk}" if turn.key_scope else "",
                )
            except ValueError:
                child.refresh_from_db()
        status = "completed" if child.status == TurnStatus.COMPLETED else str(child.status)
        return TurnResult(status, child.pk, output=child.output, reason=child.error)

    def _answer(self, slug: str, tool_call_id: str, result) -> str:
        """What the supervisor's model receives for the delegate's turn ``result``; a
        parked delegate parks the supervisor's call too (``ApprovalRequired``), bound to the
        delegate's approval requests, and the call runs again when the top turn resumes."""
        turn = self.ctx
        turn.cost_usd += result.cost_usd
        data = {
            "delegate": slug,
            "tool_call_id": tool_call_id,
            "turn_id": turn.turn.pk,
            "child_turn_id": result.turn_id,
            "status": result.status,
            "rule": result.rule,
        }
        audit_record(action="agent.delegated", obj=turn.version, project=turn.project, data=data)
        turn.events.append({"event": "agent.delegated", **data})
        if result.status == "completed":
            return result.output
        if result.status == "parked":
            entries = [
                {
                    "kind": "delegate",
                    "tool_call_id": tool_call_id,
                    "tool_name": delegate_tool_name(slug),
                    "child_turn_id": result.turn_id,
                    "approval_request_id": request_id,
                }
                for request_id in result.approval_request_ids
            ]
            turn.pending.extend(entries)
            raise ApprovalRequired(metadata={"delegate": slug, "child_turn_id": result.turn_id})
        return f"The agent {slug} failed: {result.reason}"
