"""Agent registry reads: snapshots, diffs, the version active at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, prefetch_related_objects

from agents.models import (
    Agent,
    AgentActivation,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    Tool,
    ToolGrant,
)


def agents_for_project(project, *, search: str = "") -> QuerySet[Agent]:
    qs = Agent.objects.filter(project=project).select_related(
        "active_version",
        "active_version__model_endpoint",
        "active_version__policy",
        "active_version__budget",
        "owner",
    )
    if search:
        qs = qs.filter(Q(slug__icontains=search) | Q(description__icontains=search))
    return qs


def _snapshot_prefetch(through: str = "") -> tuple[Prefetch, ...]:
    """What ``version_snapshot`` reads, as lookups (from a version, or ``through`` a
    relation to one): one query each for a whole list of versions."""
    return (
        Prefetch(f"{through}grants", queryset=ToolGrant.objects.select_related("tool")),
        Prefetch(f"{through}delegates"),
    )


def agents_with_config(project) -> QuerySet[Agent]:
    """``agents_for_project`` with what ``version_snapshot(agent.active_version)`` reads
    prefetched: a list of agents with their configs costs the same few queries for any
    number of agents."""
    return agents_for_project(project).prefetch_related(*_snapshot_prefetch("active_version__"))


def agents_for_list(project, *, search: str = "", endpoint: str = "") -> QuerySet[Agent]:
    """The agent list page: ``agents_for_project`` (``search`` in slug and description),
    only agents whose active version uses the model endpoint named ``endpoint`` when given,
    each annotated with ``grant_count`` (tools its active version grants)."""
    agents = agents_for_project(project, search=search)
    if endpoint:
        agents = agents.filter(active_version__model_endpoint__name=endpoint)
    return agents.annotate(grant_count=Count("active_version__grants", distinct=True))


def versions_with_config(agent: Agent) -> QuerySet[AgentVersion]:
    """``versions_for_agent`` with what ``version_snapshot`` reads prefetched."""
    return versions_for_agent(agent).prefetch_related(*_snapshot_prefetch())


def versions_for_agent(agent: Agent) -> QuerySet[AgentVersion]:
    return (
        AgentVersion.objects.filter(agent=agent)
        .select_related("model_endpoint", "created_by", "policy", "budget")
        .order_by("-number")
    )


def tools_for_project(project, *, include_removed: bool = True) -> QuerySet[Tool]:
    qs = Tool.objects.filter(project=project).select_related("mcp_server")
    return qs if include_removed else qs.filter(removed_at__isnull=True)


def model_endpoints_for_project(project) -> QuerySet[ModelEndpoint]:
    return ModelEndpoint.objects.filter(project=project)


def mcp_servers_for_project(project) -> QuerySet[MCPServer]:
    return MCPServer.objects.filter(project=project)


def mcp_servers_with_tool_counts(project) -> QuerySet[MCPServer]:
    """``mcp_servers_for_project``, each annotated with ``tool_count``: the tools synced
    from it, those since removed from the server included."""
    return mcp_servers_for_project(project).annotate(tool_count=Count("tools", distinct=True))


def version_snapshot(version: AgentVersion) -> dict[str, Any]:
    """The version as an ``AgentVersionConfig``-shaped dict (grants sorted by tool name).

    The same document the API, the YAML export and diffs use. Reads the grants (with
    their tools) and delegates prefetched on ``version`` when they are (see
    ``agents_with_config``, ``versions_with_config``), else fetches them.
    """
    prefetch_related_objects([version], *_snapshot_prefetch())
    grants = [
        {
            "tool": grant.tool.name,
            "effect": grant.effect,
            "rules": [dict(rule) for rule in grant.rules],
            "rate_limit_calls": grant.rate_limit_calls,
            "rate_limit_window_seconds": grant.rate_limit_window_seconds,
            "max_calls_per_run": grant.max_calls_per_run,
            "approver_role": grant.approver_role,
            "approval_quorum": grant.approval_quorum,
        }
        for grant in sorted(version.grants.all(), key=lambda grant: grant.tool.name)
    ]
    return {
        "model_endpoint": version.model_endpoint.name,
        "model_name": version.model_name,
        "instructions": version.instructions,
        "temperature": version.temperature,
        "max_output_tokens": version.max_output_tokens,
        "max_tool_calls_per_turn": version.max_tool_calls_per_turn,
        "delegates": sorted(agent.slug for agent in version.delegates.all()),
        "grants": grants,
        "policy": version.policy.slug if version.policy_id else None,
        "budget": version.budget.name if version.budget_id else None,
    }


def config_diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field differences between two snapshots.

    Returns ``[{"field": "temperature", "before": 0.2, "after": 0.7}, ...]``; grants are
    compared per tool (``grants.<tool>``: added, removed or changed, with both sides), so
    a reordered list is not a change.
    """
    changes: list[dict[str, Any]] = []
    for field in after.keys() | before.keys():
        if field == "grants":
            continue
        if before.get(field) != after.get(field):
            changes.append({"field": field, "before": before.get(field), "after": after.get(field)})
    old = {g["tool"]: g for g in before.get("grants", [])}
    new = {g["tool"]: g for g in after.get("grants", [])}
    for tool in sorted(old.keys() | new.keys()):
        if old.get(tool) != new.get(tool):
            changes.append(
                {"field": f"grants.{tool}", "before": old.get(tool), "after": new.get(tool)}
            )
    order = list(after.keys())
    changes.sort(
        key=lambda c: (
            order.index(c["field"].split(".")[0]) if c["field"].split(".")[0] in order else 99,
            c["field"],
        )
    )
    return changes


def agent_version_diff(a: AgentVersion, b: AgentVersion) -> list[dict[str, Any]]:
    """Differences going from version ``a`` to version ``b`` (see ``config_diff``)."""
    return config_diff(version_snapshot(a), version_snapshot(b))


def agent_version_active_at(agent: Agent, at: datetime) -> AgentVersion | None:
    """The version of ``agent`` that was active at ``at`` (None before the first activation)."""
    activation = (
        AgentActivation.objects.filter(agent=agent, activated_at__lte=at)
        .select_related("version")
        .order_by("-activated_at", "-pk")
        .first()
    )
    return activation.version if activation else None


def activations_for_agent(agent: Agent) -> QuerySet[AgentActivation]:
    return AgentActivation.objects.filter(agent=agent).select_related("version", "activated_by")


def demo_outbox_for_project(project, *, limit: int = 100):
    """The demo's outbox emails and refund ledger (newest first, at most ``limit`` each):
    ``(emails, refunds)``."""
    from agents.demo_models import OutboxEmail, RefundEntry

    emails = OutboxEmail.objects.filter(project=project).select_related("customer")[:limit]
    refunds = RefundEntry.objects.filter(project=project).select_related("customer")[:limit]
    return emails, refunds
