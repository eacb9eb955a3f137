"""django-filter filtersets for governance resources."""

from __future__ import annotations

import django_filters

from governance.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(lookup_expr="exact")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    occurred_after = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    sequence_after = django_filters.NumberFilter(field_name="sequence", lookup_expr="gt")

    class Meta:
        model = AuditEvent
        fields = ["actor_kind", "actor_name", "object_type", "object_id", "request_id", "trace_id"]
