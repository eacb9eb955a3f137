"""``/api/v1/audit-events/``: the audit log across every project the caller administers
(an API token: its own project only, with the ``read`` scope), with the project filters'
``project`` slug besides the per-project endpoint's filters and exports."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied

from controlplane.api.base import request_token
from controlplane.models import Membership, Project, Role, TokenScope
from governance import audit_export
from governance.api.serializers import AuditEventSerializer
from governance.api.viewsets import AuditCursorPagination
from governance.filters import AuditEventFilter
from governance.models import AuditEvent


class GlobalAuditEventFilter(AuditEventFilter):
    project = django_filters.CharFilter(field_name="project__slug", label="Project slug.")


class GlobalAuditEventSerializer(AuditEventSerializer):
    class Meta(AuditEventSerializer.Meta):
        fields = ["project_ref", *AuditEventSerializer.Meta.fields]
        read_only_fields = fields


def administered_project_ids(request) -> list[int]:
    """Projects the caller is an admin of (a token: its project, if its creator is an admin
    there and it has the read scope). Raises ``PermissionDenied`` when there is none."""
    token = request_token(request)
    memberships = Membership.objects.filter(user=request.user, role=Role.ADMIN)
    if token is not None:
        if not token.has_scope(TokenScope.READ):
            raise PermissionDenied("This API token lacks the 'read' scope.")
        memberships = memberships.filter(project_id=token.project_id)
    ids = list(memberships.values_list("project_id", flat=True))
    if not ids:
        raise PermissionDenied("The audit log across projects needs the admin role in one.")
    return ids


class GlobalAuditEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Audit events of every project you administer, newest first, in cursor pages;
    ``export/jsonl`` and ``export/csv`` stream the matches oldest first."""

    queryset = AuditEvent.objects.none()
    serializer_class = GlobalAuditEventSerializer
    filterset_class = GlobalAuditEventFilter
    ordering_fields = ["sequence"]
    ordering = ["-sequence"]
    pagination_class = AuditCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        return AuditEvent.objects.filter(project_id__in=administered_project_ids(self.request))

    def _export(self, fmt: str):
        events = self.filter_queryset(self.get_queryset())
        label = Project(slug="all-projects")
        return audit_export.streaming_response(events, fmt, label)

    @extend_schema(responses={(200, "application/jsonl"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export/jsonl", pagination_class=None)
    def export_jsonl(self, request, *args, **kwargs):
        """Every matching event as JSON Lines, oldest first."""
        return self._export("jsonl")

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export/csv", pagination_class=None)
    def export_csv(self, request, *args, **kwargs):
        """Every matching event as CSV, oldest first."""
        return self._export("csv")
