"""Viewsets for approvals: list / filter / order / retrieve requests, and decide one; the
project's approval settings (members read them, admins change them).

Deciding needs the approver role and a token with the ``approve`` scope; every other rule
(the request's own role, no self-approval, quorum, schema of edited arguments, one
outcome under races) is ``approvals.services.approval_decide``'s, as in the UI.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from approvals.api.serializers import (
    ApprovalDecideSerializer,
    ApprovalRequestSerializer,
    ApprovalSettingsSerializer,
)
from approvals.filters import ApprovalRequestFilter, ApprovalSettingsFilter
from approvals.models import ApprovalRequest, ApprovalSettings
from approvals.selectors import approval_settings_for
from approvals.services import (
    SETTINGS_FIELDS,
    ApprovalNotPending,
    approval_decide,
    approval_settings_update,
)
from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet, request_token
from controlplane.models import Role, TokenScope


class ApprovalRequestViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet
):
    """Approval requests of a project, newest first (``?ordering=`` requested_at,
    expires_at, decided_at, id; ``-`` for descending)."""

    queryset = ApprovalRequest.objects.none()
    serializer_class = ApprovalRequestSerializer
    pagination_class = ProjectCursorPagination
    filterset_class = ApprovalRequestFilter
    ordering_fields = ["id", "requested_at", "expires_at", "decided_at"]
    ordering = ["-id"]
    action_roles = {"decide": Role.APPROVER}
    action_scopes = {"decide": TokenScope.APPROVE}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApprovalRequest.objects.none()
        return (
            ApprovalRequest.objects.filter(project=self.project)
            .select_related("requested_by", "decided_by")
            .prefetch_related("decisions")
        )

    @extend_schema(
        request=ApprovalDecideSerializer,
        responses={
            200: ApprovalRequestSerializer,
            400: OpenApiResponse(description="Invalid verdict or arguments, keyed by field."),
            403: OpenApiResponse(description="Role too low, self-approval, or no approve scope."),
            409: OpenApiResponse(description="The request is no longer pending."),
        },
    )
    @action(detail=True, methods=["post"])
    def decide(self, request, *args, **kwargs):
        """Approve (optionally with edited ``arguments``) or reject (with a ``comment``).
        Answers the request as it stands after the decision: ``pending`` while the quorum
        is not reached."""
        approval = self.get_object()
        serializer = ApprovalDecideSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            approval = approval_decide(
                request_id=approval.pk,
                user=request.user,
                verdict=data["verdict"],
                comment=data.get("comment") or "",
                arguments=data.get("arguments"),
                via_token=request_token(request) is not None,
            )
        except ApprovalNotPending as exc:
            return Response(
                {"status": exc.message_dict["status"], "current_status": exc.status},
                status=status.HTTP_409_CONFLICT,
            )
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        approval = self.get_queryset().get(pk=approval.pk)
        return Response(ApprovalRequestSerializer(approval).data)


class ApprovalSettingsViewSet(ProjectScopedViewSet):
    """The project's approval settings, one object at ``approval-settings/``, as on the
    settings page: retrieve (GET) for every member (viewer and up, ``read`` scope), change
    (PUT / PATCH) for admins (``write`` scope); a token acts with its creator's role. The
    webhook URL is write-only: never returned, ``has_webhook`` says whether one is set.
    Validated like the settings page: durations 0..129600
    minutes, email addresses, an http(s) webhook URL; errors are a 400 keyed by field.
    Changes are audited ``approval.settings.updated`` (never the webhook URL)."""

    queryset = ApprovalSettings.objects.none()
    serializer_class = ApprovalSettingsSerializer
    filterset_class = ApprovalSettingsFilter
    ordering_fields = ["id"]
    ordering = ["id"]
    pagination_class = None
    action_roles = {
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
    }

    def get_object(self):
        return approval_settings_for(self.project)

    @extend_schema(responses=ApprovalSettingsSerializer)
    def retrieve(self, request, *args, **kwargs):
        """The settings (defaults until an admin changes them)."""
        return Response(ApprovalSettingsSerializer(self.get_object()).data)

    @extend_schema(request=ApprovalSettingsSerializer, responses=ApprovalSettingsSerializer)
    def update(self, request, *args, **kwargs):
        """Change the settings; PUT needs every writable field but ``webhook_url``, PATCH any."""
        partial = kwargs.pop("partial", False)
        settings = self.get_object()
        serializer = ApprovalSettingsSerializer(settings, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        webhook_url = data.pop("webhook_url", None)
        settings = approval_settings_update(
            project=self.project,
            changes={k: v for k, v in data.items() if k in SETTINGS_FIELDS},
            webhook_url=webhook_url,
        )
        return Response(ApprovalSettingsSerializer(settings).data)

    @extend_schema(request=ApprovalSettingsSerializer, responses=ApprovalSettingsSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Change some settings."""
        kwargs["partial"] = True
        return self.update(request, *args, **kwargs)
