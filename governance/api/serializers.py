"""Serializers for audit events."""

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
