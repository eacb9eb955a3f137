"""Viewsets for flows: flows and their versions, schedules and webhook; runs (start,
cancel, retry), their step runs and spans.

Thin: each write parses input and calls one service of ``flows.services``; reads go
through ``flows.selectors``. Reads need viewer + ``read``; starting, cancelling and
retrying runs and writing flows need operator + ``write``; the webhook token needs admin.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api.base import (
    ProjectCursorPagination,
    ProjectHistoryViewSet,
    ProjectScopedViewSet,
)
from controlplane.models import Role, TokenScope
from flows import selectors, services
from flows.api.serializers import (
    FlowCreateSerializer,
    FlowScheduleSerializer,
    FlowSerializer,
    FlowUpdateSerializer,
    FlowVersionCreateSerializer,
    FlowVersionSerializer,
    RunSerializer,
    RunStartSerializer,
    SpanSerializer,
    StepRunSerializer,
    ValidateSerializer,
    ValidationResultSerializer,
    WebhookSerializer,
)
from flows.filters import (
    FlowFilter,
    FlowScheduleFilter,
    FlowVersionFilter,
    RunFilter,
    SpanFilter,
    StepRunFilter,
)
from flows.models import Flow, FlowSchedule, FlowVersion, Run, Span, StepRun


def _source(data: dict):
    """The definition as the services take it: text, or an already-loaded object."""
    source = data["source"]
    if not isinstance(source, str | dict):
        raise ValidationError({"source": ["Give the definition as YAML/JSON text or an object."]})
    return source


def webhook_url(request, flow: Flow, token: str) -> str:
    return request.build_absolute_uri(reverse("flow-webhook-token", args=[flow.pk, token]))


class FlowViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, ProjectScopedViewSet
):
    """Flows of a project with their active version. The definition changes through
    versions (``flows/{flow}/versions/``); name and description are edited in place.
    Flows are not deleted: their runs' history stays readable."""

    queryset = Flow.objects.none()
    serializer_class = FlowSerializer
    lookup_field = "slug"
    lookup_url_kwarg = "flow"
    action_roles = {
        "validate": Role.VIEWER,
        "webhook": Role.ADMIN,
        "webhook_disable": Role.ADMIN,
    }
    action_scopes = {"validate": TokenScope.READ}
    filterset_class = FlowFilter
    ordering_fields = ["slug", "created_at", "updated_at"]
    ordering = ["slug"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Flow.objects.none()
        return selectors.flows_for_project(project=self.project).select_related(
            "webhook", "created_by"
        )

    @extend_schema(request=FlowCreateSerializer, responses={201: FlowSerializer})
    def create(self, request, *args, **kwargs):
        """Create a flow; its version 1 is built from ``source`` and activated. Every error
        comes back at once, keyed by path; nothing is stored then."""
        serializer = FlowCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flow = services.flow_create(
            project=self.project,
            slug=data["slug"],
            name=data["name"],
            description=data["description"],
            source=_source(data),
            source_format=data["source_format"],
            actor=request.user,
        )
        return Response(self.get_serializer(flow).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=FlowUpdateSerializer, responses=FlowSerializer)
    def partial_update(self, request, *args, **kwargs):
        flow = self.get_object()
        serializer = FlowUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flow = services.flow_update(flow=flow, **serializer.validated_data)
        return Response(self.get_serializer(flow).data)

    @extend_schema(request=ValidateSerializer, responses=ValidationResultSerializer)
    @action(detail=False, methods=["post"])
    def validate(self, request, *args, **kwargs):
        """Check a definition as a new version would be checked, without storing
        anything: 200 with ``valid`` and every error by path. Viewer, ``read`` scope."""
        serializer = ValidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            services.definition_validate(
                project=self.project, source=_source(data), source_format=data["source_format"]
            )
        except DjangoValidationError as exc:
            errors = (
                exc.message_dict if hasattr(exc, "error_dict") else {"definition": exc.messages}
            )
            return Response({"valid": False, "errors": errors})
        return Response({"valid": True, "errors": {}})

    @extend_schema(request=RunStartSerializer, responses={201: RunSerializer})
    @action(detail=True, methods=["post"], url_path="runs", url_name="runs")
    def start_run(self, request, *args, **kwargs):
        """Start a run of the flow's active version (or ``version``) on ``input``."""
        flow = self.get_object()
        serializer = RunStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = None
        if "version" in data:
            version = selectors.flow_versions(flow=flow).filter(number=data["version"]).first()
            if version is None:
                raise ValidationError(
                    {"version": [f"{flow.slug} has no version {data['version']}."]}
                )
        run = services.run_start(
            flow=flow, input=data["input"], user=request.user, trigger="api", version=version
        )
        run = selectors.runs_for_project(project=self.project).get(pk=run.pk)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: WebhookSerializer})
    @action(detail=True, methods=["post"])
    def webhook(self, request, *args, **kwargs):
        """Make or rotate the flow's inbound webhook token (admin). The token and the URL
        holding it are in this answer only; the previous token stops working."""
        flow = self.get_object()
        webhook, raw = services.flow_webhook_rotate(flow=flow, actor=request.user)
        body = {"url": webhook_url(request, flow, raw), "token": raw, "prefix": webhook.prefix}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @webhook.mapping.delete
    def webhook_disable(self, request, *args, **kwargs):
        """Turn the webhook off (admin); its token stops working."""
        services.flow_webhook_disable(flow=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class _FlowChildViewSet(ProjectScopedViewSet):
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.flow = get_object_or_404(
            selectors.flows_for_project(project=self.project), slug=self.kwargs["flow"]
        )


class FlowVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _FlowChildViewSet):
    """Versions of one flow, newest first. Versions are immutable: there is no PUT,
    PATCH or DELETE. POST makes the next version (invalid: 400 with every error by path,
    the active version stays); ``activate`` makes one active (rollback)."""

    queryset = FlowVersion.objects.none()
    serializer_class = FlowVersionSerializer
    lookup_field = "number"
    lookup_value_converter = "int"
    filterset_class = FlowVersionFilter
    ordering_fields = ["number", "created_at"]
    ordering = ["-number"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return FlowVersion.objects.none()
        return selectors.flow_versions(flow=self.flow).select_related("flow")

    @extend_schema(request=FlowVersionCreateSerializer, responses={201: FlowVersionSerializer})
    def create(self, request, *args, **kwargs):
        serializer = FlowVersionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = services.flow_version_create(
            flow=self.flow,
            source=_source(data),
            source_format=data["source_format"],
            change_note=data["change_note"],
            activate=data["activate"],
            actor=request.user,
        )
        version = self.get_queryset().get(pk=version.pk)
        return Response(self.get_serializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=FlowSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, *args, **kwargs):
        """Make this version the active one; activating an older one is a rollback."""
        flow = services.flow_version_activate(version=self.get_object(), actor=request.user)
        flow = (
            selectors.flows_for_project(project=self.project)
            .select_related("webhook")
            .get(pk=flow.pk)
        )
        return Response(FlowSerializer(flow).data)


class FlowScheduleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    _FlowChildViewSet,
):
    """Schedules of one flow: start a run with ``input`` by a cron expression (UTC) or
    every ``interval_seconds``; PATCH ``enabled`` to pause or resume."""

    queryset = FlowSchedule.objects.none()
    serializer_class = FlowScheduleSerializer
    filterset_class = FlowScheduleFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return FlowSchedule.objects.none()
        return selectors.schedules_for_flow(flow=self.flow)

    def perform_create(self, serializer):
        serializer.instance = services.flow_schedule_create(
            flow=self.flow, actor=self.request.user, **serializer.validated_data
        )

    @extend_schema(request=FlowScheduleSerializer(partial=True), responses=FlowScheduleSerializer)
    def partial_update(self, request, *args, **kwargs):
        schedule = self.get_object()
        serializer = self.get_serializer(schedule, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if data.pop("name", schedule.name) != schedule.name:
            raise ValidationError({"name": ["A schedule's name cannot change; make a new one."]})
        schedule = services.flow_schedule_update(schedule=schedule, actor=request.user, **data)
        return Response(self.get_serializer(schedule).data)

    def perform_destroy(self, instance):
        services.flow_schedule_delete(schedule=instance, actor=self.request.user)


class RunViewSet(ProjectHistoryViewSet):
    """Runs of the project's flows, newest first (start one with ``POST flows/{flow}/runs/``).
    Filters: ``status`` (repeatable), ``flow``, ``started_by``, ``started_after`` /
    ``started_before`` (ISO 8601), ``trigger``, ``trace_id``."""

    queryset = Run.objects.none()
    serializer_class = RunSerializer
    filterset_class = RunFilter
    ordering_fields = ["id", "created_at", "started_at", "finished_at", "cost_usd"]

    def project_queryset(self):
        return selectors.runs_for_project(project=self.project)

    def _answer(self, run: Run) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=run.pk)).data)

    @extend_schema(request=None, responses=RunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        """Cancel the run: pending steps never start, running ones stop at their next call
        boundary, compensations run. A finished run is returned unchanged."""
        return self._answer(services.run_cancel(run=self.get_object(), actor=request.user))

    @extend_schema(request=None, responses=RunSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, *args, **kwargs):
        """Retry a failed run from its failed step(s); 400 unless the run failed."""
        return self._answer(services.run_retry(run=self.get_object(), actor=request.user))


class _RunChildViewSet(ProjectHistoryViewSet):
    """Read-only records of the run ``self.run`` (``runs/<run>/...``), oldest first."""

    ordering = ["id"]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.run = get_object_or_404(
            selectors.runs_for_project(project=self.project), pk=self.kwargs["run"]
        )


class StepRunViewSet(_RunChildViewSet):
    """Step runs of one run (map items have ``parent`` and ``item_index``), with their
    attempts. Inputs and outputs are returned as stored (the API is for members)."""

    queryset = StepRun.objects.none()
    serializer_class = StepRunSerializer
    filterset_class = StepRunFilter
    ordering_fields = ["id", "created_at", "started_at"]

    def project_queryset(self):
        return selectors.run_steps(run=self.run)


class SpanViewSet(_RunChildViewSet):
    """Spans of one run's trace: the run, its step runs, model and tool calls, approval
    waits; ``parent_span_id`` links them (W3C trace and span ids)."""

    queryset = Span.objects.none()
    serializer_class = SpanSerializer
    filterset_class = SpanFilter
    ordering_fields = ["id", "start_time"]

    def project_queryset(self):
        return selectors.run_spans(run=self.run)
