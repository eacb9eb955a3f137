"""Viewsets for projects, members and API tokens. Each write calls one service."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from controlplane import selectors, services
from controlplane.api.base import ProjectScopedViewSet, request_token
from controlplane.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    ProjectSerializer,
    ProjectUpdateSerializer,
)
from controlplane.filters import ApiTokenFilter, MembershipFilter, ProjectFilter
from controlplane.models import ApiToken, Membership, Project, Role, TokenScope
from controlplane.permissions import get_project_or_404


class ProjectViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Projects you are a member of. Creating one makes you its admin."""

    queryset = Project.objects.none()
    serializer_class = ProjectSerializer
    lookup_field = "slug"
    lookup_url_kwarg = "project"
    filterset_class = ProjectFilter
    ordering_fields = ["slug", "name", "created_at"]
    ordering = ["slug"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        return selectors.projects_for_user(self.request.user, token=request_token(self.request))

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return ProjectUpdateSerializer
        return ProjectSerializer

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["roles"] = {
            pk: role.value for pk, role in selectors.roles_by_project(self.request.user).items()
        }
        return context

    def get_object(self):
        needed = {
            "retrieve": (Role.VIEWER, TokenScope.READ),
            "update": (Role.ADMIN, TokenScope.WRITE),
            "partial_update": (Role.ADMIN, TokenScope.WRITE),
            "destroy": (Role.ADMIN, TokenScope.WRITE),
        }[self.action]
        project, _ = get_project_or_404(
            user=self.request.user,
            slug=self.kwargs["project"],
            role=needed[0],
            token=request_token(self.request),
            scope=needed[1],
        )
        return project

    def list(self, request, *args, **kwargs):
        token = request_token(request)
        if token is not None and not token.has_scope(TokenScope.READ):
            raise PermissionDenied("This API token lacks the 'read' scope.")
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        if request_token(self.request) is not None:
            raise PermissionDenied("API tokens belong to one project and cannot create projects.")
        serializer.instance = services.project_create(
            creator=self.request.user, **serializer.validated_data
        )

    def update(self, request, *args, **kwargs):
        project = self.get_object()
        serializer = ProjectUpdateSerializer(
            project, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        project = services.project_update(project=project, **serializer.validated_data)
        return Response(self.get_serializer(project).data)

    def perform_destroy(self, instance):
        services.project_delete(project=instance)


class MembershipViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ProjectScopedViewSet,
):
    """Members of a project and their roles. Admins change them; a project keeps one admin."""

    queryset = Membership.objects.none()
    serializer_class = MembershipSerializer
    lookup_field = "user__username"
    lookup_url_kwarg = "username"
    filterset_class = MembershipFilter
    ordering_fields = ["created_at", "role", "user__username"]
    ordering = ["user__username"]
    action_roles = {
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return selectors.memberships_for_project(self.project)

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return MembershipUpdateSerializer
        return MembershipSerializer

    def perform_create(self, serializer):
        serializer.instance = services.membership_create(
            project=self.project,
            user=serializer.validated_data["user"],
            role=serializer.validated_data["role"],
        )

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def update(self, request, *args, **kwargs):
        membership = self.get_object()
        serializer = MembershipUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_update(
            membership=membership, role=serializer.validated_data["role"]
        )
        return Response(MembershipSerializer(membership).data)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, **kwargs)

    def perform_destroy(self, instance):
        services.membership_delete(membership=instance)


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    ProjectScopedViewSet,
):
    """API tokens of a project. Any member creates tokens for themselves; admins see and
    revoke all. Tokens cannot create or revoke tokens (use a signed-in session)."""

    queryset = ApiToken.objects.none()
    serializer_class = ApiTokenSerializer
    lookup_field = "prefix"
    filterset_class = ApiTokenFilter
    ordering_fields = ["created_at", "expires_at", "last_used_at", "name"]
    ordering = ["-created_at"]
    action_roles = {"create": Role.VIEWER, "destroy": Role.VIEWER}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.action in ("create", "destroy") and request_token(request) is not None:
            raise PermissionDenied("API tokens cannot create or revoke tokens; sign in instead.")

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return selectors.api_tokens_for(self.project, user=self.request.user, role=self.role)

    @extend_schema(responses={201: ApiTokenCreatedSerializer})
    def create(self, request, *args, **kwargs):
        serializer = ApiTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        kwargs = {}
        if "expires_at" in request.data:
            kwargs["expires_at"] = data.get("expires_at")
        token, raw = services.api_token_create(
            project=self.project,
            user=request.user,
            name=data["name"],
            scopes=data["scopes"],
            **kwargs,
        )
        token.token = raw
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        token = self.get_object()
        if token.user_id != request.user.pk and not self.role.includes(Role.ADMIN):
            raise Http404
        services.api_token_revoke(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
