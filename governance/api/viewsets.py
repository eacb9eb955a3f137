"""Viewsets for the audit log: read-only, project-scoped, filterable."""

from rest_framework import mixins

from controlplane.api.base import ProjectScopedViewSet
from governance.api.serializers import AuditEventSerializer
from governance.filters import AuditEventFilter
from governance.models import AuditEvent


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Audit events of a project, newest first. Append-only: there is no write endpoint."""

    queryset = AuditEvent.objects.none()
    serializer_class = AuditEventSerializer
    lookup_field = "sequence"
    filterset_class = AuditEventFilter
    ordering_fields = ["sequence", "occurred_at"]
    ordering = ["-sequence"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        return AuditEvent.objects.filter(project=self.project)
