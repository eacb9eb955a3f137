"""Viewsets for approvals: list / filter / order / retrieve requests, and decide one.

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

from approvals.api.serializers import ApprovalDecideSerializer, ApprovalRequestSerializer
from approvals.filters import ApprovalRequestFilter
from approvals.models import ApprovalRequest
from approvals.services import ApprovalNotPending, approval_decide
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
