"""Admin: the audit log, read-only."""

from __future__ import annotations

from django.contrib import admin

from governance.models import AuditChainHead, AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "sequence",
        "occurred_at",
        "action",
        "actor_name",
        "actor_kind",
        "object_repr",
        "project",
    )
    list_filter = ("actor_kind", "action", "project")
    search_fields = ("action", "actor_name", "object_repr", "object_id", "request_id", "trace_id")
    date_hierarchy = "occurred_at"
    ordering = ("-sequence",)


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "hash")
