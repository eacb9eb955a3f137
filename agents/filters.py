"""django-filter filtersets for the agent registry API: endpoints, MCP servers, tools, agents, versions."""

from __future__ import annotations

import django_filters
from django.db.models import Q

from agents.models import (
    Agent,
    AgentActivation,
    AgentTurn,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    ReplayJob,
    Tool,
)
from controlplane.filters import IsoDateTimeFilter


class ModelEndpointFilter(django_filters.FilterSet):
    class Meta:
        model = ModelEndpoint
        fields = ["kind", "name"]


class MCPServerFilter(django_filters.FilterSet):
    class Meta:
        model = MCPServer
        fields = ["transport", "name"]


class ToolFilter(django_filters.FilterSet):
    removed = django_filters.BooleanFilter(
        field_name="removed_at",
        lookup_expr="isnull",
        exclude=True,
        label="Only tools removed from their MCP server (true) or only callable ones (false).",
    )
    search = django_filters.CharFilter(method="filter_search", label="Name or description.")
    mcp_server = django_filters.CharFilter(field_name="mcp_server__name", label="MCP server name.")

    class Meta:
        model = Tool
        fields = ["kind", "risk"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))


class AgentFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", label="Slug or description.")
    model_endpoint = django_filters.CharFilter(
        field_name="active_version__model_endpoint__name",
        label="Name of the model endpoint the active version uses.",
    )
    # (agent version, tool) is unique, so this join yields each agent at most once.
    tool = django_filters.CharFilter(
        field_name="active_version__grants__tool__name",
        label="Name of a tool the active version grants.",
    )

    class Meta:
        model = Agent
        fields = ["model_endpoint", "tool"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(slug__icontains=value) | Q(description__icontains=value))


class AgentVersionFilter(django_filters.FilterSet):
    created_by = django_filters.CharFilter(field_name="created_by__username")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AgentVersion
        fields = ["created_by"]


class AgentTurnFilter(django_filters.FilterSet):
    agent = django_filters.CharFilter(field_name="agent_version__agent__slug", label="Agent slug.")
    agent_version = django_filters.NumberFilter(
        field_name="agent_version__number", label="Version number (use with agent)."
    )
    user = django_filters.CharFilter(field_name="user__username", label="Username.")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AgentTurn
        fields = ["agent", "agent_version", "status", "run_id", "step_id", "user"]


class AgentActivationFilter(django_filters.FilterSet):
    agent = django_filters.CharFilter(field_name="agent__slug", label="Agent slug.")
    activated_after = IsoDateTimeFilter(field_name="activated_at", lookup_expr="gte")
    activated_before = IsoDateTimeFilter(field_name="activated_at", lookup_expr="lt")

    class Meta:
        model = AgentActivation
        fields = ["agent"]


class ReplayJobFilter(django_filters.FilterSet):
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = ReplayJob
        fields = ["kind", "target", "status"]
