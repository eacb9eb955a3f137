"""Approvals: django-filter filtersets."""

from __future__ import annotations

import django_filters

from approvals.models import ApprovalRequest, ApprovalSettings, ApprovalStatus, SubjectKind


class ApprovalRequestFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=ApprovalStatus.choices)
    subject_kind = django_filters.ChoiceFilter(choices=SubjectKind.choices)
    agent = django_filters.CharFilter(lookup_expr="exact", help_text="Agent slug.")
    run_id = django_filters.CharFilter(lookup_expr="exact")
    step_id = django_filters.CharFilter(lookup_expr="exact")
    turn_id = django_filters.NumberFilter()
    tool = django_filters.CharFilter(lookup_expr="exact")
    risk = django_filters.CharFilter(lookup_expr="exact")
    escalated = django_filters.BooleanFilter(
        field_name="escalated_at", lookup_expr="isnull", exclude=True
    )
    requested_after = django_filters.IsoDateTimeFilter(field_name="requested_at", lookup_expr="gte")
    requested_before = django_filters.IsoDateTimeFilter(field_name="requested_at", lookup_expr="lt")
    decided_after = django_filters.IsoDateTimeFilter(field_name="decided_at", lookup_expr="gte")

    class Meta:
        model = ApprovalRequest
        fields = ["status", "subject_kind", "agent", "run_id", "step_id", "turn_id", "tool", "risk"]


class ApprovalSettingsFilter(django_filters.FilterSet):
    """The settings endpoint is one object per project: nothing to filter (declared so
    every viewset has a filterset)."""

    class Meta:
        model = ApprovalSettings
        fields: list[str] = []
