"""Admin registrations for the agent registry. Versions, grants and activations are read-only;
stored credentials are never shown."""

from __future__ import annotations

from django.contrib import admin

from agents.models import (
    Agent,
    AgentActivation,
    AgentTurn,
    AgentVersion,
    Customer,
    KnowledgeArticle,
    MCPServer,
    ModelEndpoint,
    OutboxEmail,
    RefundEntry,
    ReplayJob,
    Tool,
    ToolGrant,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written once by a service: viewable, never edited or deleted here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "kind", "default_model", "credential_env_var")
    list_filter = ("kind", "project")
    exclude = ("credential_encrypted",)


@admin.register(MCPServer)
class MCPServerAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "transport", "url", "last_synced_at")
    list_filter = ("transport", "project")


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "kind", "risk", "removed_at")
    list_filter = ("kind", "risk", "project")
    search_fields = ("name", "description")


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("slug", "project", "active_version", "owner")
    list_filter = ("project",)
    search_fields = ("slug", "description")
    readonly_fields = ("active_version",)


class ToolGrantInline(admin.TabularInline):
    model = ToolGrant
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AgentVersion)
class AgentVersionAdmin(ReadOnlyAdmin):
    list_display = ("agent", "number", "model_endpoint", "model_name", "created_by", "created_at")
    list_filter = ("agent__project",)
    inlines = [ToolGrantInline]


@admin.register(ToolGrant)
class ToolGrantAdmin(ReadOnlyAdmin):
    list_display = ("agent_version", "tool", "effect")


@admin.register(AgentActivation)
class AgentActivationAdmin(ReadOnlyAdmin):
    list_display = ("agent", "version", "activated_at", "activated_by")


@admin.register(AgentTurn)
class AgentTurnAdmin(ReadOnlyAdmin):
    """Turns are written by the runtime only; their messages are the resumable state."""

    list_display = ("pk", "agent_version", "status", "run_id", "cost_usd", "created_at")
    list_filter = ("status",)


@admin.register(ReplayJob)
class ReplayJobAdmin(ReadOnlyAdmin):
    """Policy replays are started from their page or the API and written by their task."""

    list_display = ("pk", "project", "kind", "target", "status", "done", "total", "created_at")
    list_filter = ("status", "kind")


# --- The demo's tables (agents.demo_models) ------------------------------------------------


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "category", "project")
    list_filter = ("category", "project")
    search_fields = ("slug", "title", "body")


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("ref", "name", "email", "plan", "project")
    list_filter = ("plan", "project")
    search_fields = ("ref", "name", "email")


@admin.register(RefundEntry)
class RefundEntryAdmin(ReadOnlyAdmin):
    """The refund ledger: written once by ``issue_refund``."""

    list_display = ("created_at", "customer", "amount_usd", "project")
    list_filter = ("project",)


@admin.register(OutboxEmail)
class OutboxEmailAdmin(ReadOnlyAdmin):
    """The demo's outbox: written once by ``send_email``."""

    list_display = ("created_at", "to", "subject", "project")
    list_filter = ("project",)
