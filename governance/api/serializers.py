"""Serializers for audit events, the chain verification and the decision log."""

from rest_framework import serializers

from governance.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "sequence",
            "occurred_at",
            "actor_kind",
            "actor_name",
            "actor_ref",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "request_id",
            "trace_id",
            "data",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


class ChainVerificationSerializer(serializers.Serializer):
    """The audit chain's status: ``ok``, events ``checked``, and where it first breaks."""

    ok = serializers.BooleanField()
    checked = serializers.IntegerField()
    first_broken_sequence = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    head_hash = serializers.CharField(allow_blank=True)


class RunDecisionSerializer(serializers.Serializer):
    """One decision of a run (from its audit event ``sequence``)."""

    sequence = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField()
    kind = serializers.CharField(help_text="tool, model, approval, delegation or turn.")
    outcome = serializers.CharField(
        help_text="allow / deny / require_approval for decisions; executed, failed, "
        "refused, blocked, completed, parked, ... otherwise."
    )
    subject = serializers.CharField(help_text="The tool, model endpoint or agent version.")
    rule = serializers.CharField(allow_blank=True)
    policy = serializers.CharField(allow_blank=True)
    policy_version_id = serializers.IntegerField(allow_null=True)
    approval_request_ids = serializers.ListField(child=serializers.IntegerField())
    pii = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="PII findings as {entity_type: count} (never the values).",
    )
    reason = serializers.CharField(allow_blank=True, help_text="The model's stated reason.")
    messages = serializers.ListField(child=serializers.CharField())
    turn_id = serializers.IntegerField(allow_null=True)
    actor_name = serializers.CharField()


class DecisionLogSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    decisions = RunDecisionSerializer(many=True)
    summary = serializers.DictField(
        child=serializers.IntegerField(), help_text="Decisions per outcome."
    )
