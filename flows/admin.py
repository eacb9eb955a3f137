"""Flows: admin registrations."""

from django.contrib import admin

from flows.models import FlowSchedule, FlowWebhook


@admin.register(FlowWebhook)
class FlowWebhookAdmin(admin.ModelAdmin):
    """Read-only: tokens are made and rotated through the flow's page or the API (only the
    digest is stored)."""

    list_display = ["flow", "prefix", "enabled", "rotated_at", "last_used_at"]
    readonly_fields = [
        "flow",
        "prefix",
        "digest",
        "enabled",
        "created_by",
        "created_at",
        "rotated_at",
        "last_used_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(FlowSchedule)
class FlowScheduleAdmin(admin.ModelAdmin):
    """Read-only: schedules change through the services, which keep beat's row in step."""

    list_display = ["flow", "name", "kind", "cron", "interval_seconds", "enabled", "last_run_at"]
    list_filter = ["kind", "enabled"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
