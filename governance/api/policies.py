"""REST for project policies: policies, their immutable versions, validate, diff, activate.

Reading needs viewer; writing (new policy, new version, activate) needs admin, since a
policy decides what every agent of the project may do. ``validate`` checks a document
without saving (viewer, read scope).
"""

from __future__ import annotations

from datetime import UTC

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet
from controlplane.models import Role, TokenScope
from governance import selectors, services
from governance.filters import PolicyFilter, PolicyVersionFilter
from governance.models import Policy, PolicyVersion
from governance.policies import validate_policy_text


class PolicySerializer(serializers.ModelSerializer):
    active_version = serializers.IntegerField(
        source="active_version.number", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Policy
        fields = ["slug", "description", "active_version", "created_at", "updated_at"]
        read_only_fields = ["active_version", "created_at", "updated_at"]


class PolicyCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=50)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    document = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="YAML; version 1"
    )
    change_note = serializers.CharField(max_length=500, required=False, allow_blank=True)


class PolicyVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by.username", default=None, read_only=True, allow_null=True
    )
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = PolicyVersion
        fields = [
            "number",
            "document",
            "spec",
            "change_note",
            "created_by",
            "created_at",
            "is_active",
        ]
        read_only_fields = fields

    def get_is_active(self, version: PolicyVersion) -> bool:
        return self.context.get("active_version_id") == version.pk


class PolicyVersionCreateSerializer(serializers.Serializer):
    document = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="YAML")
    change_note = serializers.CharField(max_length=500, required=False, allow_blank=True)
    activate = serializers.BooleanField(default=True)


class PolicyValidateSerializer(serializers.Serializer):
    document = serializers.CharField(allow_blank=True, trim_whitespace=False)


class PolicyValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    spec = serializers.JSONField()


class PolicyDiffSerializer(serializers.Serializer):
    old = serializers.IntegerField()
    new = serializers.IntegerField()
    document = serializers.ListField(child=serializers.CharField())
    changes = serializers.ListField(child=serializers.DictField())


class PolicyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """A project's policies. The one with slug ``default`` applies to every agent that
    names no other policy; POST creates a policy (optionally with its first version)."""

    queryset = Policy.objects.none()
    serializer_class = PolicySerializer
    lookup_field = "slug"
    filterset_class = PolicyFilter
    ordering_fields = ["slug", "created_at", "updated_at"]
    ordering = ["slug"]
    pagination_class = ProjectCursorPagination
    action_roles = {"create": Role.ADMIN, "validate": Role.VIEWER}
    action_scopes = {"validate": TokenScope.READ}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Policy.objects.none()
        return selectors.policies_for_project(self.project)

    @extend_schema(request=PolicyCreateSerializer, responses={201: PolicySerializer})
    def create(self, request, *args, **kwargs):
        serializer = PolicyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            policy = services.policy_create(
                project=self.project,
                slug=data["slug"],
                description=data.get("description", ""),
                actor=request.user,
            )
            if "document" in data:
                services.policy_version_create(
                    policy=policy,
                    document=data["document"],
                    change_note=data.get("change_note", ""),
                    actor=request.user,
                )
        return Response(PolicySerializer(policy).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PolicyValidateSerializer, responses=PolicyValidationResultSerializer)
    @action(detail=False, methods=["post"])
    def validate(self, request, *args, **kwargs):
        """Check a document without saving: 200 with the parsed spec, or 400 with every
        problem keyed by path (``document.caps.max_steps_per_run``)."""
        serializer = PolicyValidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        parsed = validate_policy_text(serializer.validated_data["document"])
        return Response({"valid": True, "spec": parsed.spec})

    @extend_schema(
        parameters=[
            OpenApiParameter("old", OpenApiTypes.INT, required=True),
            OpenApiParameter("new", OpenApiTypes.INT, required=True),
        ],
        responses=PolicyDiffSerializer,
    )
    @action(detail=True, methods=["get"])
    def diff(self, request, *args, **kwargs):
        """Differences between versions ``old`` and ``new``: a unified diff of the YAML
        and every changed setting with its path."""
        policy = self.get_object()
        versions, errors = {}, {}
        for name in ("old", "new"):
            raw = request.query_params.get(name, "")
            if not raw.isdigit():
                errors[name] = ["A version number is required."]
                continue
            version = policy.versions.filter(number=int(raw)).first()
            if version is None:
                errors[name] = [f"Policy {policy.slug} has no version {raw}."]
            versions[name] = version
        if errors:
            raise ValidationError(errors)
        return Response(selectors.policy_diff(versions["old"], versions["new"]))

    @extend_schema(
        parameters=[OpenApiParameter("at", OpenApiTypes.DATETIME, required=True)],
        responses=PolicyVersionSerializer,
    )
    @action(detail=True, methods=["get"], url_path="active-at", url_name="active-at")
    def active_at(self, request, *args, **kwargs):
        """The version that was active at ``at`` (ISO 8601); 404 before the first one."""
        policy = self.get_object()
        try:
            at = parse_datetime(request.query_params.get("at", ""))
            # In UTC: PostgreSQL refuses offsets beyond +-15:59 that Python accepts.
            at = at.astimezone(UTC) if at is not None and at.tzinfo is not None else None
        except (OverflowError, ValueError):
            at = None
        if at is None:
            raise ValidationError({"at": ["An ISO 8601 date-time with a time zone is required."]})
        version = selectors.policy_version_active_at(policy=policy, at=at)
        if version is None:
            return Response({"detail": "No version was active then."}, status=404)
        return Response(PolicyVersionSerializer(version).data)


class PolicyVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Versions of one policy, newest first. Immutable: no PUT, PATCH or DELETE. POST
    validates and saves the next version (active unless ``activate`` is false); an
    invalid document answers 400 and the active version stays as it was."""

    queryset = PolicyVersion.objects.none()
    serializer_class = PolicyVersionSerializer
    lookup_field = "number"
    lookup_value_converter = "int"
    filterset_class = PolicyVersionFilter
    ordering_fields = ["number", "created_at"]
    ordering = ["-number"]
    pagination_class = ProjectCursorPagination
    action_roles = {"create": Role.ADMIN, "activate": Role.ADMIN}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.policy = get_object_or_404(
            selectors.policies_for_project(self.project), slug=self.kwargs["policy"]
        )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return PolicyVersion.objects.none()
        return self.policy.versions.select_related("created_by")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if hasattr(self, "policy"):
            context["active_version_id"] = self.policy.active_version_id
        return context

    @extend_schema(request=PolicyVersionCreateSerializer, responses={201: PolicyVersionSerializer})
    def create(self, request, *args, **kwargs):
        serializer = PolicyVersionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = services.policy_version_create(
            policy=self.policy,
            document=data["document"],
            change_note=data.get("change_note", ""),
            activate=data["activate"],
            actor=request.user,
        )
        context = {
            **super().get_serializer_context(),
            "active_version_id": self.policy.active_version_id,
        }
        return Response(
            PolicyVersionSerializer(version, context=context).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses=PolicySerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, *args, **kwargs):
        """Make this version the active one (activating an older version is a rollback)."""
        policy = services.policy_activate(version=self.get_object(), actor=request.user)
        return Response(PolicySerializer(policy).data)
