"""Admin: the audit log, policies, counters and breakers, read-only (services write them)."""

from __future__ import annotations

from django.contrib import admin

from governance.models import (
    AuditChainHead,
    AuditEvent,
    CircuitBreaker,
    Policy,
    PolicyActivation,
    PolicyVersion,
    UsageCounter,
)


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


# --- Policies: read-only here; versions are written by services (validated, audited). ---


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    list_display = ("slug", "project", "active_version", "updated_at")
    list_filter = ("project",)
    search_fields = ("slug", "description")


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin):
    list_display = ("policy", "number", "change_note", "created_by", "created_at")
    list_filter = ("policy__project",)


@admin.register(PolicyActivation)
class PolicyActivationAdmin(ReadOnlyAdmin):
    list_display = ("policy", "version", "activated_by", "activated_at")


@admin.register(UsageCounter)
class UsageCounterAdmin(ReadOnlyAdmin):
    list_display = ("key", "window_start", "count", "expires_at")
    search_fields = ("key",)


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ReadOnlyAdmin):
    list_display = ("key", "label", "state", "calls", "failures", "opened_at", "updated_at")
    list_filter = ("state",)


# --- Budgets and the cost ledger: read-only here; services write them (checked, audited). ---

from governance.models import (  # noqa: E402
    Budget,
    BudgetAlert,
    BudgetPeriod,
    BudgetReservation,
    BudgetReservationLine,
    CostEntry,
    CostRollup,
)


@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    list_display = ("name", "project", "scope", "user", "period", "limit_usd", "hard", "active")
    list_filter = ("scope", "period", "hard", "active", "project")
    search_fields = ("name", "description")


@admin.register(BudgetPeriod)
class BudgetPeriodAdmin(ReadOnlyAdmin):
    list_display = ("budget", "period_start", "spent_usd", "reserved_usd", "updated_at")
    list_filter = ("budget__project",)


class BudgetReservationLineInline(admin.TabularInline):
    model = BudgetReservationLine
    extra = 0
    can_delete = False
    readonly_fields = ("budget", "period", "amount_usd")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BudgetReservation)
class BudgetReservationAdmin(ReadOnlyAdmin):
    list_display = ("call_id", "project", "status", "amount_usd", "settled_usd", "expires_at")
    list_filter = ("status", "project")
    search_fields = ("call_id",)
    inlines = [BudgetReservationLineInline]


@admin.register(BudgetReservationLine)
class BudgetReservationLineAdmin(ReadOnlyAdmin):
    list_display = ("reservation", "budget", "amount_usd")


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    list_display = ("budget", "period_start", "threshold", "spent_usd", "limit_usd", "created_at")


@admin.register(CostEntry)
class CostEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "occurred_at",
        "call_id",
        "project",
        "kind",
        "model",
        "agent",
        "user",
        "cost_usd",
        "price_source",
    )
    list_filter = ("kind", "price_source", "project")
    search_fields = ("call_id", "run_id", "model")
    date_hierarchy = "occurred_at"


@admin.register(CostRollup)
class CostRollupAdmin(ReadOnlyAdmin):
    """The daily cost rollup (derived from the ledger; rebuilt by ``cost_rollup_rebuild``)."""

    list_display = ("day", "project", "time_zone", "model", "kind", "cost_usd", "entries")
    list_filter = ("kind", "project")
    date_hierarchy = "day"
