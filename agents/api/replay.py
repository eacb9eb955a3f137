"""REST for policy replays: start one (a draft and a time range), follow its progress and
read what would have changed. The replay runs as a Celery task (``agents.tasks``).

Reading needs viewer; starting one needs operator and the ``write`` scope (it queues work
and reads every recorded call of the range; it changes nothing else). A bad draft answers
400 with every problem at its path (``draft.document.caps.max_tool_calls_per_run``,
``draft.config.grants.0.rules.1.when``).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from agents.filters import ReplayJobFilter
from agents.models import ReplayDraftKind, ReplayJob
from agents.replay import replay_job_create
from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet


class ReplayJobSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(
        source="created_by.username", default=None, read_only=True, allow_null=True
    )
    progress_percent = serializers.IntegerField(read_only=True)
    draft = serializers.JSONField(read_only=True)
    result = serializers.JSONField(
        read_only=True,
        help_text="When completed: summary (counts per change kind), changes (each call that "
        "would change: recorded, before, after), limitations.",
    )

    class Meta:
        model = ReplayJob
        fields = [
            "id",
            "kind",
            "target",
            "draft",
            "starts_at",
            "ends_at",
            "status",
            "total",
            "done",
            "progress_percent",
            "result",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class ReplayJobCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ReplayDraftKind.choices)
    target = serializers.SlugField(
        max_length=50, help_text="The policy's slug (kind policy) or the agent's slug."
    )
    draft = serializers.JSONField(
        help_text='{"document": "<policy YAML>"} (policy), {"config": {AgentVersionConfig}} '
        '(agent_version) or {"grants": [GrantConfig, ...]} (grants).'
    )
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()


class ReplayJobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, ProjectScopedViewSet
):
    """Policy replays of a project, newest first. POST validates the draft and queues the
    replay (202); GET shows its progress and, once completed, its result."""

    queryset = ReplayJob.objects.none()
    serializer_class = ReplayJobSerializer
    filterset_class = ReplayJobFilter
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ReplayJob.objects.none()
        return ReplayJob.objects.filter(project=self.project).select_related("created_by")

    @extend_schema(request=ReplayJobCreateSerializer, responses={202: ReplayJobSerializer})
    def create(self, request, *args, **kwargs):
        serializer = ReplayJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = replay_job_create(
            project=self.project, actor=request.user, **serializer.validated_data
        )
        return Response(ReplayJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
