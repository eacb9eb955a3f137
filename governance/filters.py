"""django-filter filtersets for governance resources."""

from __future__ import annotations

import django_filters

from governance.models import AuditEvent, Policy, PolicyVersion


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(lookup_expr="exact")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    occurred_after = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    sequence_after = django_filters.NumberFilter(field_name="sequence", lookup_expr="gt")

    class Meta:
        model = AuditEvent
        fields = ["actor_kind", "actor_name", "object_type", "object_id", "request_id", "trace_id"]


class PolicyFilter(django_filters.FilterSet):
    slug = django_filters.CharFilter(lookup_expr="exact")

    class Meta:
        model = Policy
        fields = ["slug"]


class PolicyVersionFilter(django_filters.FilterSet):
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PolicyVersion
        fields = ["number"]
