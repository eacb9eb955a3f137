"""django-filter filtersets for governance resources."""

from __future__ import annotations

import django_filters
from django.core.validators import RegexValidator
from django.db.models import Q

from controlplane.filters import IsoDateTimeFilter
from governance.models import (
    AuditEvent,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    BudgetReservation,
    CircuitBreaker,
    CostEntry,
    Policy,
    PolicyActivation,
    PolicyVersion,
)


def _run_events(events, run_id: str):
    """Events of one run: the runtime writes ``run_id`` in each decision's data (an
    expression index on PostgreSQL and SQLite serves it)."""
    return events.filter(data__run_id=run_id)


class AuditEventFilter(django_filters.FilterSet):
    """Filters of the audit log, shared by the REST API, its exports and the audit page.

    ``from`` / ``to`` bound ``occurred_at`` (ISO 8601); ``actor`` is the frozen actor name
    (``alice``, ``token:ab12cd34``, ``agent:triage@v3``, ``system:...``); ``agent`` an agent
    slug (events about the agent or its versions, or acted by one of its versions);
    ``run`` a run id; ``object`` is ``<object_type>:<object_id>``.
    """

    action = django_filters.CharFilter(lookup_expr="exact")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    occurred_after = IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    sequence_after = django_filters.NumberFilter(field_name="sequence", lookup_expr="gt")
    actor = django_filters.CharFilter(field_name="actor_name", label="Actor name (exact).")
    actor_contains = django_filters.CharFilter(
        field_name="actor_name", lookup_expr="icontains", label="Actor name contains."
    )
    agent = django_filters.CharFilter(method="filter_agent", label="Agent slug.")
    run = django_filters.CharFilter(method="filter_run", label="Run id.")
    object = django_filters.CharFilter(
        method="filter_object",
        label="Object as <object_type>:<object_id>.",
        validators=[
            RegexValidator(r"^[^:]+:.+$", "Give <object_type>:<object_id>, e.g. agents.agent:3.")
        ],
    )

    class Meta:
        model = AuditEvent
        fields = ["actor_kind", "actor_name", "object_type", "object_id", "request_id", "trace_id"]

    def filter_agent(self, queryset, name, value):
        return queryset.filter(
            Q(object_type="agents.agent", object_repr=value)
            | Q(object_type="agents.agentversion", object_repr__startswith=f"{value}@v")
            | Q(actor_name__startswith=f"agent:{value}@")
        )

    def filter_run(self, queryset, name, value):
        return _run_events(queryset, value)

    def filter_object(self, queryset, name, value):
        object_type, _, object_id = value.partition(":")
        return queryset.filter(object_type=object_type, object_id=object_id)


# ``from`` is a Python keyword: the filters are added by name, so the query parameters
# are literally ``from`` and ``to`` (as for the cost ledger).
AuditEventFilter.base_filters["from"] = django_filters.IsoDateTimeFilter(
    field_name="occurred_at", lookup_expr="gte", label="Occurred at or after (ISO 8601)."
)
AuditEventFilter.base_filters["to"] = django_filters.IsoDateTimeFilter(
    field_name="occurred_at", lookup_expr="lt", label="Occurred before (ISO 8601)."
)


class PolicyFilter(django_filters.FilterSet):
    slug = django_filters.CharFilter(lookup_expr="exact")

    class Meta:
        model = Policy
        fields = ["slug"]


class PolicyVersionFilter(django_filters.FilterSet):
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PolicyVersion
        fields = ["number"]


class BudgetFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username", label="Username (user budgets).")

    class Meta:
        model = Budget
        fields = ["scope", "period", "hard", "active", "user"]


class BudgetReservationFilter(django_filters.FilterSet):
    budget = django_filters.CharFilter(
        field_name="lines__budget__name", distinct=True, label="Name of a budget it holds."
    )
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = BudgetReservation
        fields = ["status", "budget"]


# ``from`` is a Python keyword, so the filterset is built with type().
CostEntryFilter = type(
    "CostEntryFilter",
    (django_filters.FilterSet,),
    {
        "__doc__": "Filters of the cost ledger; ``from`` / ``to`` bound ``occurred_at``.",
        "agent": django_filters.CharFilter(field_name="agent__slug", label="Agent slug."),
        "agent_version": django_filters.NumberFilter(
            field_name="agent_version__number", label="Agent version number (use with agent)."
        ),
        "user": django_filters.CharFilter(field_name="user__username", label="Username."),
        "tool": django_filters.CharFilter(field_name="tool__name", label="Tool name."),
        "from": IsoDateTimeFilter(
            field_name="occurred_at", lookup_expr="gte", label="Occurred at or after (ISO 8601)."
        ),
        "to": IsoDateTimeFilter(
            field_name="occurred_at", lookup_expr="lt", label="Occurred before (ISO 8601)."
        ),
        "Meta": type(
            "Meta",
            (),
            {
                "model": CostEntry,
                "fields": ["kind", "provider", "model", "run_id", "step_id", "price_source"],
            },
        ),
    },
)


class PolicyActivationFilter(django_filters.FilterSet):
    policy = django_filters.CharFilter(field_name="policy__slug", label="Policy slug.")
    activated_after = IsoDateTimeFilter(field_name="activated_at", lookup_expr="gte")
    activated_before = IsoDateTimeFilter(field_name="activated_at", lookup_expr="lt")

    class Meta:
        model = PolicyActivation
        fields = ["policy"]


class BudgetPeriodFilter(django_filters.FilterSet):
    budget = django_filters.CharFilter(field_name="budget__name", label="Budget name.")
    period_start = django_filters.DateFilter()
    period_after = django_filters.DateFilter(field_name="period_start", lookup_expr="gte")
    period_before = django_filters.DateFilter(field_name="period_start", lookup_expr="lt")

    class Meta:
        model = BudgetPeriod
        fields = ["budget", "period_start"]


class BudgetAlertFilter(django_filters.FilterSet):
    budget = django_filters.CharFilter(field_name="budget__name", label="Budget name.")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = BudgetAlert
        fields = ["budget", "period_start", "threshold"]


class CircuitBreakerFilter(django_filters.FilterSet):
    tool = django_filters.CharFilter(field_name="label", label="Tool name.")

    class Meta:
        model = CircuitBreaker
        fields = ["state", "tool"]
