"""The registry's side of the governed call path: a proposed tool call of an agent version,
as the policy engine's request, and its decision.

``governance.engine`` decides on plain data and never imports this app; here the
registry's objects (the version's grant, the tool and its schema, the agent's policy)
become that data. The runtime and the dry run (REST and the agent page) both come here,
so a dry run answers exactly what a real call would get.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents.models import AgentVersion, Tool, ToolGrant
from controlplane.models import Membership
from governance.engine import (
    Decision,
    GrantSpec,
    PolicySnapshot,
    ToolCallRequest,
    ToolSpec,
    decide_tool_call,
)
from governance.selectors import effective_policy


def tool_spec(tool: Tool) -> ToolSpec:
    """The engine's view of ``tool`` (the validator cache key follows ``updated_at``)."""
    return ToolSpec(
        id=tool.pk,
        name=tool.name,
        input_schema=tool.input_schema,
        schema_key=tool.updated_at.isoformat(),
        removed=tool.removed_at is not None,
    )


def grant_spec(grant: ToolGrant) -> GrantSpec:
    """The engine's view of an (immutable) grant."""
    return GrantSpec(
        id=grant.pk,
        effect=grant.effect,
        rules=tuple(dict(rule) for rule in grant.rules),
        rate_limit_calls=grant.rate_limit_calls,
        rate_limit_window_seconds=grant.rate_limit_window_seconds,
        max_calls_per_run=grant.max_calls_per_run,
        approver_role=grant.approver_role,
        approval_quorum=grant.approval_quorum,
    )


def version_policy(version: AgentVersion) -> PolicySnapshot:
    """The policy in force for ``version``: its own policy when it names one, else the
    project's ``default`` policy, else the built-in defaults. Raises
    ``governance.models.Policy.DoesNotExist`` if the named policy is gone (callers deny)."""
    return effective_policy(
        project_id=version.agent.project_id, policy_id=getattr(version, "policy_id", None)
    )


def tool_call_request(
    *,
    version: AgentVersion,
    tool_name: str,
    arguments: Any,
    run: dict[str, Any] | None = None,
    user=None,
    usage: dict[str, Any] | None = None,
    now: datetime | None = None,
    policy: PolicySnapshot | None = None,
    granted: dict[str, ToolGrant] | None = None,
    user_role: str | None = None,
) -> ToolCallRequest:
    """The engine request for ``version`` calling ``tool_name`` with ``arguments``.

    A tool name unknown in the project becomes a tool without grant (denied by default);
    ``run`` is ``{"id", "trace_id", "tool_calls"}``; ``user`` (the user the run acts for)
    gives ``{"username", "role"}`` with the user's role in the project; ``usage`` is
    ``{"cost_usd": str, "tokens": int}`` so far in the run.

    ``granted`` (the version's grants by tool name, with ``tool`` loaded) and
    ``user_role`` let the runtime read them once per turn instead of once per call (grants
    are immutable with their version); a name not in ``granted`` is looked up.
    """
    agent = version.agent
    grant = (granted or {}).get(tool_name)
    if grant is not None:
        tool = grant.tool
    else:
        tool = Tool.objects.filter(project_id=agent.project_id, name=tool_name).first()
        grant = ToolGrant.objects.filter(agent_version=version, tool=tool).first() if tool else None
    spec = tool_spec(tool) if tool else ToolSpec(id=0, name=tool_name, input_schema={})
    user_vars = {"username": "", "role": ""}
    if user is not None and getattr(user, "is_authenticated", False):
        role = user_role
        if role is None:
            role = (
                Membership.objects.filter(user=user, project_id=agent.project_id)
                .values_list("role", flat=True)
                .first()
            )
        user_vars = {"username": user.get_username(), "role": role or ""}
    return ToolCallRequest(
        project_id=agent.project_id,
        tool=spec,
        grant=grant_spec(grant) if grant else None,
        arguments=arguments,
        policy=policy or version_policy(version),
        agent={"slug": agent.slug, "version": version.number},
        run=run or {},
        project={"slug": agent.project.slug},
        user=user_vars,
        usage=usage or {"cost_usd": "0", "tokens": 0},
        now=now,
    )


def decide_for_version(
    *, version: AgentVersion, tool_name: str, arguments: Any, dry_run: bool = False, **context
) -> Decision:
    """``governance.engine.decide_tool_call`` for ``version`` calling ``tool_name`` (see
    ``tool_call_request`` for ``context``). Never raises: a registry lookup that fails
    (e.g. the version's policy was deleted) denies with rule ``policy.error``."""
    try:
        request = tool_call_request(
            version=version, tool_name=tool_name, arguments=arguments, **context
        )
    except Exception as exc:  # noqa: BLE001 - fail closed
        return Decision(
            effect="deny",
            rule="policy.error",
            policy_version_id=None,
            policy_label="unknown",
            messages=(f"the call could not be prepared ({type(exc).__name__}); denied",),
        )
    return decide_tool_call(request, dry_run=dry_run)
