"""Viewsets for the agent registry: endpoints, MCP servers, tools, agents and their versions.

Thin: each write parses input and calls one service of ``agents.services``; reads go
through ``agents.selectors``. Lists use cursor pagination over a unique ordering field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from agents import selectors, services
from agents.api.serializers import (
    AgentActiveAtSerializer,
    AgentCreateSerializer,
    AgentDiffSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    AgentVersionCreateSerializer,
    AgentVersionSerializer,
    ConnectionTestResultSerializer,
    DecisionSerializer,
    DryRunSerializer,
    MCPServerSerializer,
    ModelEndpointSerializer,
    SyncResultSerializer,
    ToolSerializer,
)
from agents.filters import (
    AgentFilter,
    AgentVersionFilter,
    MCPServerFilter,
    ModelEndpointFilter,
    ToolFilter,
)
from agents.governed import decide_for_version
from agents.models import (
    Agent,
    AgentVersion,
    MCPServer,
    ModelEndpoint,
    Tool,
    mcp_server_write_role,
)
from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet, request_token
from controlplane.models import Role, TokenScope
from controlplane.permissions import check_project_access

# Request fields of agent and version writes; any other error key is a config path.
_REQUEST_FIELDS = {"slug", "description", "change_note", "config", "changes", NON_FIELD_ERRORS}


@contextmanager
def config_error_paths(*, changes: dict[str, Any] | None = None) -> Iterator[None]:
    """Re-key a service's ``ValidationError`` under the request field holding the config.

    The services key errors by config path (``grants.0.rules``); the API answers
    ``config.grants.0.rules``, or ``changes.temperature`` for a field sent in ``changes``.
    """
    try:
        yield
    except DjangoValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise
        errors: dict[str, list[str]] = {}
        for key, messages in exc.message_dict.items():
            if key in _REQUEST_FIELDS:
                errors[key] = messages
                continue
            root = "changes" if changes is not None and key.split(".")[0] in changes else "config"
            errors[f"{root}.{key}"] = messages
        raise ValidationError(errors) from exc


class ServiceUpdateMixin(mixins.UpdateModelMixin):
    """PUT/PATCH through a service: ``perform_service_update(instance, validated_data)``
    returns the changed object, which the response shows."""

    def perform_service_update(self, instance, data: dict[str, Any]):
        raise NotImplementedError

    def perform_update(self, serializer):
        serializer.instance = self.perform_service_update(
            serializer.instance, dict(serializer.validated_data)
        )


# --- Model endpoints ------------------------------------------------------------------------


class ModelEndpointViewSet(
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ProjectScopedViewSet,
):
    """Model endpoints of a project. The API key is write-only: stored encrypted, never
    returned (``has_stored_key`` says whether one is stored)."""

    queryset = ModelEndpoint.objects.none()
    serializer_class = ModelEndpointSerializer
    lookup_field = "name"
    filterset_class = ModelEndpointFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelEndpoint.objects.none()
        return selectors.model_endpoints_for_project(self.project)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("clear_api_key", None)  # nothing to clear yet
        serializer.instance = services.model_endpoint_create(project=self.project, **data)

    def perform_service_update(self, instance, data):
        return services.model_endpoint_update(endpoint=instance, **data)

    @extend_schema(request=None, responses=ConnectionTestResultSerializer)
    @action(detail=True, methods=["post"], url_path="test", url_name="test")
    def connection_test(self, request, *args, **kwargs):
        """Try the endpoint's credentials and list its models (audited)."""
        # Imported here: the connectors call providers and are only needed by this action.
        from agents.connectors import model_endpoint_test

        result = model_endpoint_test(endpoint=self.get_object())
        return Response(ConnectionTestResultSerializer(result).data)


# --- MCP servers ----------------------------------------------------------------------------


class MCPServerViewSet(
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ProjectScopedViewSet,
):
    """MCP servers of a project; ``sync`` refreshes the registry's tools from a server.
    Creating or changing a stdio server needs the admin role."""

    queryset = MCPServer.objects.none()
    serializer_class = MCPServerSerializer
    lookup_field = "name"
    filterset_class = MCPServerFilter
    ordering_fields = ["name", "created_at", "last_synced_at"]
    ordering = ["name"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return MCPServer.objects.none()
        return selectors.mcp_servers_for_project(self.project)

    def _check_transport_role(self, *transports: str) -> None:
        # A stdio server runs a command on the control plane's host: admins only (403).
        check_project_access(
            user=self.request.user,
            project=self.project,
            role=mcp_server_write_role(*transports),
            token=request_token(self.request),
        )

    def perform_create(self, serializer):
        self._check_transport_role(serializer.validated_data.get("transport", ""))
        serializer.instance = services.mcp_server_create(
            project=self.project, **serializer.validated_data
        )

    def perform_service_update(self, instance, data):
        self._check_transport_role(instance.transport, data.get("transport", instance.transport))
        return services.mcp_server_update(server=instance, **data)

    @extend_schema(request=None, responses=SyncResultSerializer)
    @action(detail=True, methods=["post"])
    def sync(self, request, *args, **kwargs):
        """List the server's tools and create, update or mark removed the registry's tools.
        A server that cannot be reached answers 200 with ``error`` set; a stdio server whose
        command is not in MCP_STDIO_COMMANDS_ALLOWED answers 400 under ``command``."""
        from agents.connectors import mcp_server_sync

        result = mcp_server_sync(server=self.get_object())
        return Response(SyncResultSerializer(result).data)


# --- Tools ----------------------------------------------------------------------------------


class ToolViewSet(
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    ProjectScopedViewSet,
):
    """Tools of a project, including ones removed from their MCP server (``removed``)."""

    queryset = Tool.objects.none()
    serializer_class = ToolSerializer
    lookup_field = "name"
    # Tool names contain dots (payments.send), which the default lookup pattern excludes.
    lookup_value_regex = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
    filterset_class = ToolFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tool.objects.none()
        return selectors.tools_for_project(self.project)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "project": getattr(self, "project", None)}

    def perform_create(self, serializer):
        serializer.instance = services.tool_create(
            project=self.project, **serializer.validated_data
        )

    def perform_service_update(self, instance, data):
        return services.tool_update(tool=instance, **data)


# --- Agents ---------------------------------------------------------------------------------


def _version_param(request, agent: Agent, name: str, errors: dict) -> AgentVersion | None:
    raw = request.query_params.get(name, "")
    if not raw:
        errors[name] = ["This query parameter is required."]
        return None
    try:
        number = int(raw)
    except ValueError:
        errors[name] = [f"{raw!r} is not a version number."]
        return None
    version = selectors.versions_for_agent(agent).filter(number=number).first()
    if version is None:
        errors[name] = [f"Agent {agent.slug!r} has no version {number}."]
    return version


class AgentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Agents of a project with their active configuration. Configuration changes make new
    versions (``agents/{agent}/versions/``); only the description is edited in place."""

    queryset = Agent.objects.none()
    serializer_class = AgentSerializer
    lookup_field = "slug"
    lookup_url_kwarg = "agent"  # as in the nested agents/{agent}/versions/ routes
    # A dry run changes nothing: viewers may ask, with a read-only token.
    action_roles = {"dry_run": Role.VIEWER}
    action_scopes = {"dry_run": TokenScope.READ}
    filterset_class = AgentFilter
    ordering_fields = ["slug", "created_at", "updated_at"]
    ordering = ["slug"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Agent.objects.none()
        return selectors.agents_with_config(self.project)

    @extend_schema(request=DryRunSerializer, responses=DecisionSerializer)
    @action(detail=True, methods=["post"], url_path="dry-run", url_name="dry-run")
    def dry_run(self, request, *args, **kwargs):
        """Decide a hypothetical tool call of the agent (its active version, or
        ``version``) exactly as a real call would be decided: schema, grant, CEL rules,
        breaker, caps and rate limits; counters are read, not changed, nothing is
        audited. Needs viewer and the ``read`` scope."""
        agent = self.get_object()
        serializer = DryRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = agent.active_version
        if "version" in data:
            version = selectors.versions_for_agent(agent).filter(number=data["version"]).first()
            if version is None:
                raise ValidationError(
                    {"version": [f"{agent.slug} has no version {data['version']}."]}
                )
        if version is None:
            raise ValidationError({"version": [f"{agent.slug} has no active version."]})
        run = {"id": data["run_id"], "trace_id": "", "tool_calls": 0} if "run_id" in data else None
        decision = decide_for_version(
            version=version,
            tool_name=data["tool"],
            arguments=data["arguments"],
            run=run,
            user=request.user,
            dry_run=True,
        )
        return Response({**decision.as_data(), "version": version.number})

    @extend_schema(request=AgentCreateSerializer, responses={201: AgentSerializer})
    def create(self, request, *args, **kwargs):
        """Create an agent; its version 1 is built from ``config`` and activated."""
        serializer = AgentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with config_error_paths():
            agent = services.agent_create(
                project=self.project,
                slug=data["slug"],
                description=data["description"],
                config=data["config"],
                change_note=data.get("change_note", ""),
                actor=request.user,
            )
        return Response(self.get_serializer(agent).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AgentUpdateSerializer, responses=AgentSerializer)
    def partial_update(self, request, *args, **kwargs):
        agent = self.get_object()
        serializer = AgentUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = services.agent_update(
            agent=agent, description=serializer.validated_data["description"]
        )
        return Response(self.get_serializer(agent).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from", OpenApiTypes.INT, required=True, description="Version number."
            ),
            OpenApiParameter("to", OpenApiTypes.INT, required=True, description="Version number."),
        ],
        responses=AgentDiffSerializer,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request, *args, **kwargs):
        """Field-by-field differences going from version ``from`` to version ``to``."""
        agent = self.get_object()
        errors: dict[str, list[str]] = {}
        before = _version_param(request, agent, "from", errors)
        after = _version_param(request, agent, "to", errors)
        if errors:
            raise ValidationError(errors)
        changes = selectors.agent_version_diff(before, after)
        return Response(
            AgentDiffSerializer(
                {"from": before.number, "to": after.number, "changes": changes}
            ).data
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "at",
                OpenApiTypes.DATETIME,
                required=True,
                description="ISO 8601 time, e.g. 2025-01-31T12:00:00Z.",
            )
        ],
        responses=AgentActiveAtSerializer,
    )
    @action(detail=True, methods=["get"], url_path="active-at", url_name="active-at")
    def active_at(self, request, *args, **kwargs):
        """The version that was active at ``at`` (``version`` is null before the first)."""
        agent = self.get_object()
        raw = request.query_params.get("at", "")
        if not raw:
            raise ValidationError({"at": ["This query parameter is required."]})
        try:
            at = serializers.DateTimeField().to_internal_value(raw)
        except ValidationError as exc:
            raise ValidationError({"at": exc.detail}) from exc
        version = selectors.agent_version_active_at(agent, at)
        context = {**self.get_serializer_context(), "active_version_id": agent.active_version_id}
        return Response(
            AgentActiveAtSerializer({"at": at, "version": version}, context=context).data
        )


class AgentVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Versions of one agent, newest first. Versions are immutable: there is no PUT, PATCH
    or DELETE. POST makes the next version; ``activate`` makes one active (rollback)."""

    queryset = AgentVersion.objects.none()
    serializer_class = AgentVersionSerializer
    lookup_field = "number"
    lookup_value_converter = "int"
    filterset_class = AgentVersionFilter
    ordering_fields = ["number", "created_at"]
    ordering = ["-number"]
    pagination_class = ProjectCursorPagination

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.agent = get_object_or_404(
            selectors.agents_for_project(self.project), slug=self.kwargs["agent"]
        )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AgentVersion.objects.none()
        return selectors.versions_with_config(self.agent)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if hasattr(self, "agent"):
            context["active_version_id"] = self.agent.active_version_id
        return context

    @extend_schema(request=AgentVersionCreateSerializer, responses={201: AgentVersionSerializer})
    def create(self, request, *args, **kwargs):
        """Make the next version from a full ``config`` or from ``changes`` to the active
        one; it becomes active unless ``activate`` is false."""
        serializer = AgentVersionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with config_error_paths(changes=data.get("changes")):
            version = services.agent_version_create(
                agent=self.agent,
                config=data.get("config"),
                changes=data.get("changes"),
                change_note=data.get("change_note", ""),
                activate=data["activate"],
                actor=request.user,
            )
        # The service's agent row knows whether the new version became active.
        body = AgentVersionSerializer(version, context=super().get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, *args, **kwargs):
        """Make this version the active one; activating an older version is a rollback."""
        agent = services.agent_version_activate(version=self.get_object(), actor=request.user)
        return Response(AgentSerializer(agent, context=self.get_serializer_context()).data)
