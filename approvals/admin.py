"""Approvals admin registrations (read-mostly: decisions go through the inbox or the API,
so every rule and audit event applies)."""

from django.contrib import admin

from approvals.models import ApprovalDecision, ApprovalRequest, ApprovalSettings


class ApprovalDecisionInline(admin.TabularInline):
    model = ApprovalDecision
    extra = 0
    can_delete = False
    readonly_fields = [
        "approver_name",
        "approver_role",
        "verdict",
        "comment",
        "arguments",
        "self_approval",
        "via_token",
        "decided_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = ("summary", "project", "status", "risk", "agent", "requested_at", "decided_by")
    list_filter = ("status", "subject_kind", "risk", "project")
    search_fields = ("summary", "tool", "agent", "run_id")
    inlines = [ApprovalDecisionInline]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ApprovalRequest._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(ApprovalSettings)
class ApprovalSettingsAdmin(admin.ModelAdmin):
    list_display = ("project", "default_expiry_minutes", "escalation_sla_minutes")
    readonly_fields = ("webhook_url_encrypted",)


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(admin.ModelAdmin):
    list_display = ("request", "approver_name", "verdict", "decided_at")
    list_filter = ("verdict",)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ApprovalDecision._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
