"""Approvals admin registrations."""

from django.contrib import admin

from approvals.models import ApprovalRequest


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ("summary", "project", "status", "requested_at", "decided_by")
    list_filter = ("status", "project")
    search_fields = ("summary",)
