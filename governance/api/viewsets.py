"""Viewsets for the audit log (read-only, project-scoped, filterable, cursor-paged, exportable
as JSON Lines and CSV, with the chain's verification) and the decision log of a run."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet
from controlplane.models import Role
from governance import audit_export, selectors
from governance.api.serializers import (
    AuditEventSerializer,
    ChainVerificationSerializer,
    DecisionLogSerializer,
)
from governance.filters import AuditEventFilter
from governance.models import AuditEvent


class AuditCursorPagination(ProjectCursorPagination):
    """Newest first by sequence (unique, so pages never shift while events are appended)."""

    ordering = "-sequence"


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Audit events of a project, newest first, in cursor pages. Append-only: there is no
    write endpoint. ``export/jsonl`` and ``export/csv`` stream every event the filters
    match (oldest first, chain order); ``verify`` walks the whole chain (admin)."""

    queryset = AuditEvent.objects.none()
    serializer_class = AuditEventSerializer
    lookup_field = "sequence"
    filterset_class = AuditEventFilter
    ordering_fields = ["sequence"]
    ordering = ["-sequence"]
    pagination_class = AuditCursorPagination
    action_roles = {"verify": Role.ADMIN}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        return selectors.audit_events_for_projects([self.project.pk])

    @extend_schema(responses={(200, "application/jsonl"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export/jsonl", pagination_class=None)
    def export_jsonl(self, request, *args, **kwargs):
        """Every matching event as JSON Lines (one object per line, the fields of the list),
        streamed oldest first. Audit data was PII-scanned before it was written."""
        events = self.filter_queryset(self.get_queryset())
        return audit_export.streaming_response(events, "jsonl", self.project)

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export/csv", pagination_class=None)
    def export_csv(self, request, *args, **kwargs):
        """Every matching event as CSV (``data`` as a JSON column), streamed oldest first."""
        events = self.filter_queryset(self.get_queryset())
        return audit_export.streaming_response(events, "csv", self.project)

    @extend_schema(responses=ChainVerificationSerializer)
    @action(detail=False, methods=["get"], pagination_class=None, filterset_class=None)
    def verify(self, request, *args, **kwargs):
        """Walk the whole audit chain (every project's events share it): hashes, links,
        gaps and the head. Admin only; takes seconds per million events."""
        return Response(ChainVerificationSerializer(selectors.audit_chain_verify()).data)


class DecisionLogViewSet(mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """The decision log of one run: every decision in order (tool decisions with rule and
    policy version, approvals and their re-checks, PII findings as types and counts, model
    calls with the model's stated reason, refusals, turn outcomes)."""

    queryset = AuditEvent.objects.none()
    serializer_class = DecisionLogSerializer
    lookup_field = "run_id"
    lookup_value_regex = r"[^/]+"
    filterset_class = AuditEventFilter
    ordering_fields = ["sequence"]
    ordering = ["sequence"]
    pagination_class = None

    @extend_schema(
        parameters=[OpenApiParameter("run_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses=DecisionLogSerializer,
    )
    def retrieve(self, request, *args, **kwargs):
        """The run's decisions in order; 404 when the project has no event of that run."""
        log = selectors.run_decision_log(project=self.project, run_id=kwargs["run_id"])
        if log is None:
            raise NotFound("No decisions of this run in this project.")
        body = {"run_id": log.run_id, "decisions": log.decisions, "summary": log.summary}
        return Response(DecisionLogSerializer(body).data)
