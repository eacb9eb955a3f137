"""REST (read-only) for the governance records people look at but never write directly:
policy activations, budget periods, budget alerts and circuit breakers.

They are written by the services (activation, the budget path, the breaker path); here they
are listed with the same filters, ordering and cursor pagination as every other list.
Reading needs viewer and the ``read`` scope. Amounts are USD decimal strings, 8 places.
"""

from __future__ import annotations

from rest_framework import serializers

from controlplane.api.base import ProjectHistoryViewSet
from governance.filters import (
    BudgetAlertFilter,
    BudgetPeriodFilter,
    CircuitBreakerFilter,
    PolicyActivationFilter,
)
from governance.models import (
    USD_DIGITS,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    CircuitBreaker,
    Policy,
    PolicyActivation,
)


def _usd_field(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(**USD_DIGITS, coerce_to_string=True, read_only=True, **kwargs)


class PolicyActivationSerializer(serializers.ModelSerializer):
    policy = serializers.CharField(source="policy.slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    activated_by = serializers.CharField(
        source="activated_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = PolicyActivation
        fields = ["id", "policy", "version", "activated_at", "activated_by"]
        read_only_fields = fields


class PolicyActivationViewSet(ProjectHistoryViewSet):
    """When each policy version became active (append-only history, newest first)."""

    queryset = PolicyActivation.objects.none()
    serializer_class = PolicyActivationSerializer
    filterset_class = PolicyActivationFilter
    ordering_fields = ["id", "activated_at"]

    def project_queryset(self):
        return PolicyActivation.objects.filter(
            policy__in=Policy.objects.filter(project=self.project)
        ).select_related("policy", "version", "activated_by")


class BudgetPeriodSerializer(serializers.ModelSerializer):
    budget = serializers.CharField(source="budget.name", read_only=True)
    spent_usd = _usd_field(help_text="Settled costs in the period.")
    reserved_usd = _usd_field(help_text="Worst-case amounts of calls in flight.")

    class Meta:
        model = BudgetPeriod
        fields = ["id", "budget", "period_start", "spent_usd", "reserved_usd", "updated_at"]
        read_only_fields = fields


class BudgetPeriodViewSet(ProjectHistoryViewSet):
    """Usage of every budget per period (``period_start``: the first local date of the
    period in the project's time zone; 1970-01-01 for ``total`` budgets)."""

    queryset = BudgetPeriod.objects.none()
    serializer_class = BudgetPeriodSerializer
    filterset_class = BudgetPeriodFilter
    ordering_fields = ["id", "period_start", "spent_usd"]

    def project_queryset(self):
        return BudgetPeriod.objects.filter(
            budget__in=Budget.objects.filter(project=self.project)
        ).select_related("budget")


class BudgetAlertSerializer(serializers.ModelSerializer):
    budget = serializers.CharField(source="budget.name", read_only=True)
    threshold = serializers.IntegerField(read_only=True, help_text="Percent of the limit.")
    spent_usd = _usd_field()
    limit_usd = _usd_field()

    class Meta:
        model = BudgetAlert
        fields = [
            "id",
            "budget",
            "period_start",
            "threshold",
            "spent_usd",
            "limit_usd",
            "created_at",
        ]
        read_only_fields = fields


class BudgetAlertViewSet(ProjectHistoryViewSet):
    """Thresholds the budgets' settled spend reached (one per budget, period and
    threshold), newest first."""

    queryset = BudgetAlert.objects.none()
    serializer_class = BudgetAlertSerializer
    filterset_class = BudgetAlertFilter
    ordering_fields = ["id", "created_at", "threshold"]

    def project_queryset(self):
        return BudgetAlert.objects.filter(
            budget__in=Budget.objects.filter(project=self.project)
        ).select_related("budget")


class CircuitBreakerSerializer(serializers.ModelSerializer):
    class Meta:
        model = CircuitBreaker
        fields = [
            "id",
            "key",
            "label",
            "state",
            "window_started_at",
            "calls",
            "failures",
            "opened_at",
            "probe_started_at",
            "updated_at",
        ]
        read_only_fields = fields


class CircuitBreakerViewSet(ProjectHistoryViewSet):
    """The circuit breakers of the project's tools (``key`` ``tool:<id>``, ``label`` the
    tool's name); ``state=open`` lists the tools currently refused."""

    queryset = CircuitBreaker.objects.none()
    serializer_class = CircuitBreakerSerializer
    filterset_class = CircuitBreakerFilter
    ordering_fields = ["id", "updated_at", "opened_at", "label"]

    def project_queryset(self):
        return CircuitBreaker.objects.filter(project=self.project)
