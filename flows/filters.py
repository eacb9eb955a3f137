"""Flows: django-filter filtersets for the REST API and the runs page."""

from __future__ import annotations

import django_filters
from django.db.models import Q

from flows.models import Flow, FlowSchedule, FlowVersion, Run, RunStatus, Span, StepRun, StepStatus


class FlowFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", label="Slug, name or description.")

    class Meta:
        model = Flow
        fields = ["slug"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(
            Q(slug__icontains=value) | Q(name__icontains=value) | Q(description__icontains=value)
        )


class FlowVersionFilter(django_filters.FilterSet):
    created_by = django_filters.CharFilter(field_name="created_by__username")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = FlowVersion
        fields = ["created_by", "source_format"]


class RunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=RunStatus.choices)
    flow = django_filters.CharFilter(field_name="flow__slug", label="Flow slug.")
    version = django_filters.NumberFilter(field_name="flow_version__number")
    started_by = django_filters.CharFilter(
        field_name="started_by__username", label="Username of who started the run."
    )
    started_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    trace_id = django_filters.CharFilter()

    class Meta:
        model = Run
        fields = ["status", "flow", "trigger", "started_by", "trace_id"]


class StepRunFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=StepStatus.choices)

    class Meta:
        model = StepRun
        fields = ["status", "step_id", "kind"]


class SpanFilter(django_filters.FilterSet):
    class Meta:
        model = Span
        fields = ["kind", "status", "span_id", "parent_span_id"]


class FlowScheduleFilter(django_filters.FilterSet):
    class Meta:
        model = FlowSchedule
        fields = ["kind", "enabled"]
