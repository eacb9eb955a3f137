"""Serializers for the flows API. They parse and shape data; the rules live in the
definition schema (``flows.definition``) and the services."""

from __future__ import annotations

from rest_framework import serializers

from flows.models import (
    Flow,
    FlowSchedule,
    FlowVersion,
    Run,
    ScheduleKind,
    SourceFormat,
    Span,
    StepRun,
)

SOURCE_HELP = (
    "The definition as YAML or JSON text (source_format), or a JSON object. Errors come back "
    "keyed by path: definition.steps.2.agent."
)


class FlowSerializer(serializers.ModelSerializer):
    active_version = serializers.IntegerField(
        source="active_version.number", read_only=True, allow_null=True, default=None
    )
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    has_webhook = serializers.SerializerMethodField(help_text="Whether an inbound webhook is on.")

    class Meta:
        model = Flow
        fields = [
            "id",
            "slug",
            "name",
            "description",
            "active_version",
            "has_webhook",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_has_webhook(self, flow: Flow) -> bool:
        webhook = getattr(flow, "webhook", None)
        return bool(webhook and webhook.enabled)


class FlowCreateSerializer(serializers.Serializer):
    slug = serializers.CharField(max_length=50)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    source = serializers.JSONField(help_text=SOURCE_HELP)
    source_format = serializers.ChoiceField(choices=SourceFormat.choices, default=SourceFormat.YAML)


class FlowUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class FlowVersionSerializer(serializers.ModelSerializer):
    is_active = serializers.SerializerMethodField()
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = FlowVersion
        fields = [
            "number",
            "is_active",
            "definition",
            "source",
            "source_format",
            "change_note",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_is_active(self, version: FlowVersion) -> bool:
        return version.flow.active_version_id == version.pk


class FlowVersionCreateSerializer(serializers.Serializer):
    source = serializers.JSONField(help_text=SOURCE_HELP)
    source_format = serializers.ChoiceField(choices=SourceFormat.choices, default=SourceFormat.YAML)
    change_note = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    activate = serializers.BooleanField(default=True)


class ValidateSerializer(serializers.Serializer):
    source = serializers.JSONField(help_text=SOURCE_HELP)
    source_format = serializers.ChoiceField(choices=SourceFormat.choices, default=SourceFormat.YAML)


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Path -> messages; empty when valid.",
    )


class RunStartSerializer(serializers.Serializer):
    input = serializers.JSONField(
        required=False, default=dict, help_text="The run input: a JSON object."
    )
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="Version number; default: the active version."
    )


class RunSerializer(serializers.ModelSerializer):
    flow = serializers.CharField(source="flow.slug", read_only=True)
    version = serializers.IntegerField(source="flow_version.number", read_only=True)
    started_by = serializers.CharField(
        source="started_by.username", read_only=True, allow_null=True, default=None
    )
    retry_of = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "flow",
            "version",
            "status",
            "input",
            "output",
            "error",
            "trace_id",
            "trigger",
            "started_by",
            "retry_of",
            "cost_usd",
            "cancel_requested",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class StepRunSerializer(serializers.ModelSerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True)
    agent = serializers.CharField(
        source="agent_version.agent.slug", read_only=True, allow_null=True, default=None
    )
    agent_version = serializers.IntegerField(
        source="agent_version.number", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = StepRun
        fields = [
            "id",
            "step_id",
            "kind",
            "parent",
            "item_index",
            "compensates",
            "status",
            "input",
            "output",
            "error",
            "error_kind",
            "attempt",
            "attempts",
            "next_attempt_at",
            "agent",
            "agent_version",
            "turn_id",
            "approval_request_ids",
            "cost_usd",
            "span_id",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class SpanSerializer(serializers.ModelSerializer):
    step_run = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Span
        fields = [
            "id",
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "step_run",
            "start_time",
            "end_time",
            "status",
            "attributes",
        ]
        read_only_fields = fields


class WebhookSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="POST the run input (a JSON object) here.")
    token = serializers.CharField(help_text="Shown once; only its SHA-256 digest is stored.")
    prefix = serializers.CharField()


class FlowScheduleSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=ScheduleKind.choices)
    # Declared (not from the model) so the schema's bounds do not depend on the database.
    interval_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=10,
        max_value=31_536_000,
        help_text="For kind interval: seconds between runs, 10 to 31536000 (a year).",
    )
    input = serializers.JSONField(required=False, help_text="The run input: a JSON object.")
    last_run = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = FlowSchedule
        fields = [
            "id",
            "name",
            "kind",
            "cron",
            "interval_seconds",
            "input",
            "enabled",
            "last_run_at",
            "last_run",
            "created_at",
        ]
        read_only_fields = ["id", "last_run_at", "last_run", "created_at"]
        extra_kwargs = {
            "cron": {"help_text": "5 fields, UTC: minute hour day-of-month month day-of-week."},
        }
