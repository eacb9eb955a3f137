"""Flows: admin registrations. Versions, runs, step runs and spans are read-only here (the
engine and the services write them)."""

from __future__ import annotations

from django.contrib import admin

from agents.admin import ReadOnlyAdmin
from flows.models import Flow, FlowVersion, Run, Span, StepRun


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "project", "active_version", "updated_at")
    list_filter = ("project",)
    search_fields = ("slug", "name", "description")
    readonly_fields = ("active_version",)


@admin.register(FlowVersion)
class FlowVersionAdmin(ReadOnlyAdmin):
    list_display = ("flow", "number", "source_format", "created_by", "created_at")
    list_filter = ("flow__project",)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("pk", "flow", "status", "trigger", "started_by", "cost_usd", "created_at")
    list_filter = ("status", "trigger", "project")
    search_fields = ("trace_id",)


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    list_display = ("pk", "run", "step_id", "item_index", "kind", "status", "attempt")
    list_filter = ("status", "kind")
    search_fields = ("step_id",)


@admin.register(Span)
class SpanAdmin(ReadOnlyAdmin):
    list_display = ("name", "kind", "trace_id", "span_id", "start_time", "end_time", "status")
    list_filter = ("kind", "status")
    search_fields = ("trace_id", "span_id")
