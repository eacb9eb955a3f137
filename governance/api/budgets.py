"""REST for budgets (with current-period usage), reservations (read-only) and the cost ledger
(read-only, filterable, with totals).

Reading needs viewer; creating, changing and deleting budgets needs admin, since a budget
caps what every agent of the project may spend (the same rule as policies). Amounts are
USD decimal strings with 8 places (``"1.25000000"``).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api.base import ProjectCursorPagination, ProjectScopedViewSet
from controlplane.models import Role
from governance import reports, selectors, services
from governance.budgets import COST_GROUPS, BudgetUsage, period_bounds
from governance.filters import BudgetFilter, BudgetReservationFilter, CostEntryFilter
from governance.models import (
    MAX_ALERT_THRESHOLD_PERCENT,
    MAX_ALERT_THRESHOLDS,
    USD_DIGITS,
    Budget,
    BudgetReservation,
    CostEntry,
)


def _usd_field(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(**USD_DIGITS, coerce_to_string=True, **kwargs)


# --- budgets ----------------------------------------------------------------------------------


class BudgetUsageSerializer(serializers.Serializer):
    """Usage in the current period (the project's time zone); ``period_begins`` /
    ``period_ends`` are null for ``total`` budgets. ``available_usd`` = limit - spent -
    reserved (negative when a soft budget is over its limit)."""

    period_start = serializers.DateField()
    period_begins = serializers.DateTimeField(allow_null=True)
    period_ends = serializers.DateTimeField(allow_null=True)
    spent_usd = _usd_field()
    reserved_usd = _usd_field(help_text="Worst-case amounts of calls in flight.")
    available_usd = _usd_field()


class BudgetSerializer(serializers.ModelSerializer):
    """A budget. ``scope``, ``period`` and ``user`` are fixed once created."""

    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
        help_text="Username of a project member (scope user only).",
    )
    limit_usd = _usd_field(help_text='USD, > 0, e.g. "25.00".')
    alert_thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ALERT_THRESHOLD_PERCENT),
        max_length=MAX_ALERT_THRESHOLDS,
        required=False,
        help_text="Percentages of the limit that alert once per period; default [50, 80, 100].",
    )
    current_usage = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = [
            "name",
            "description",
            "scope",
            "user",
            "period",
            "limit_usd",
            "hard",
            "alert_thresholds",
            "active",
            "current_usage",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # The services check uniqueness with the field's own message.
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    @extend_schema_field(BudgetUsageSerializer)
    def get_current_usage(self, budget: Budget) -> dict:
        if hasattr(budget, "current_spent_usd"):
            zone = budget.project.zone
            begins, ends = period_bounds(budget.period, budget.current_period_start, zone)
            usage = BudgetUsage(
                period_start=budget.current_period_start,
                period_begins=begins,
                period_ends=ends,
                limit_usd=budget.limit_usd,
                spent_usd=budget.current_spent_usd,
                reserved_usd=budget.current_reserved_usd,
            )
        else:
            usage = selectors.budget_usage(budget)
        return BudgetUsageSerializer(usage).data

    def validate(self, attrs):
        if self.instance is not None:
            errors = {
                key: ["This cannot be changed; create another budget."]
                for key in ("scope", "period", "user")
                if key in self.initial_data and attrs.get(key) != getattr(self.instance, key)
            }
            if errors:
                raise ValidationError(errors)
        return attrs


class BudgetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ProjectScopedViewSet,
):
    """Budgets of a project with their usage in the current period. Writes need admin.
    DELETE only removes a budget that was never used (else 400: deactivate it with
    ``active: false``)."""

    queryset = Budget.objects.none()
    serializer_class = BudgetSerializer
    lookup_field = "name"
    filterset_class = BudgetFilter
    ordering_fields = ["name", "created_at", "limit_usd"]
    ordering = ["name"]
    pagination_class = ProjectCursorPagination
    action_roles = {
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Budget.objects.none()
        return selectors.budgets_for_project(self.project).select_related("project")

    def perform_create(self, serializer):
        serializer.instance = services.budget_create(
            project=self.project, **serializer.validated_data
        )

    def perform_update(self, serializer):
        changes = {
            key: value
            for key, value in serializer.validated_data.items()
            if key not in ("scope", "period", "user")
        }
        serializer.instance = services.budget_update(budget=serializer.instance, **changes)

    def perform_destroy(self, instance):
        services.budget_delete(budget=instance)


# --- reservations -----------------------------------------------------------------------------


class ReservationLineSerializer(serializers.Serializer):
    budget = serializers.CharField(source="budget.name")
    period_start = serializers.DateField(source="period.period_start")
    amount_usd = _usd_field()


class BudgetReservationSerializer(serializers.ModelSerializer):
    amount_usd = _usd_field(help_text="The worst case held against each budget.")
    settled_usd = _usd_field(allow_null=True, help_text="The real cost, once settled.")
    lines = ReservationLineSerializer(many=True, read_only=True)

    class Meta:
        model = BudgetReservation
        fields = [
            "call_id",
            "status",
            "amount_usd",
            "settled_usd",
            "created_at",
            "expires_at",
            "finished_at",
            "lines",
        ]
        read_only_fields = fields


class BudgetReservationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet
):
    """Budget reservations of a project, newest first (read-only: the model-call path makes
    them). ``status=reserved`` lists the calls in flight."""

    queryset = BudgetReservation.objects.none()
    serializer_class = BudgetReservationSerializer
    lookup_field = "call_id"
    lookup_value_regex = r"[^/]+"
    filterset_class = BudgetReservationFilter
    ordering_fields = ["id", "created_at", "expires_at"]
    ordering = ["-id"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return BudgetReservation.objects.none()
        return selectors.reservations_for_project(self.project)


# --- the cost ledger --------------------------------------------------------------------------


class CostEntrySerializer(serializers.ModelSerializer):
    user = serializers.CharField(
        source="user.username", default=None, read_only=True, allow_null=True
    )
    agent = serializers.CharField(
        source="agent.slug", default=None, read_only=True, allow_null=True
    )
    agent_version = serializers.IntegerField(
        source="agent_version.number", default=None, read_only=True, allow_null=True
    )
    tool = serializers.CharField(source="tool.name", default=None, read_only=True, allow_null=True)
    cost_usd = _usd_field()
    input_usd_per_mtok = _usd_field(allow_null=True)
    output_usd_per_mtok = _usd_field(allow_null=True)
    cache_read_usd_per_mtok = _usd_field(allow_null=True)
    cache_write_usd_per_mtok = _usd_field(allow_null=True)

    class Meta:
        model = CostEntry
        fields = [
            "call_id",
            "kind",
            "occurred_at",
            "user",
            "agent",
            "agent_version",
            "tool",
            "run_id",
            "step_id",
            "provider",
            "model",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
            "price_source",
            "input_usd_per_mtok",
            "output_usd_per_mtok",
            "cache_read_usd_per_mtok",
            "cache_write_usd_per_mtok",
            "price_library_version",
        ]
        read_only_fields = fields


class CostGroupSerializer(serializers.Serializer):
    key = serializers.CharField(allow_null=True, help_text="Agent slug, model, username, day...")
    cost_usd = _usd_field()
    entries = serializers.IntegerField()


class CostTotalsSerializer(serializers.Serializer):
    cost_usd = _usd_field()
    entries = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    group_by = serializers.CharField(allow_null=True)
    groups = CostGroupSerializer(many=True)


class CostReportRowSerializer(serializers.Serializer):
    period = serializers.DateField(
        allow_null=True,
        help_text="First local date of the day / week / month; null without interval.",
    )
    group = serializers.DictField(
        child=serializers.CharField(),
        help_text='Label per group_by dimension, e.g. {"agent": "triage"}; "(none)" when unset.',
    )
    cost_usd = _usd_field()
    entries = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class CostReportTopSerializer(serializers.Serializer):
    group = serializers.DictField(child=serializers.CharField())
    cost_usd = _usd_field()
    entries = serializers.IntegerField()
    share = serializers.FloatField(help_text="Share of the report's total, 0..1.")


class CostReportSerializer(serializers.Serializer):
    group_by = serializers.ListField(child=serializers.CharField())
    interval = serializers.CharField(allow_null=True)
    start = serializers.DateTimeField(source="from_", help_text="The range's start (included).")
    end = serializers.DateTimeField(source="to", help_text="The range's end (excluded).")
    time_zone = serializers.CharField(help_text="Periods are local dates in this zone.")
    total_usd = _usd_field()
    total_entries = serializers.IntegerField()
    rows = CostReportRowSerializer(many=True)
    top = CostReportTopSerializer(many=True)


REPORT_PARAMETERS = [
    OpenApiParameter(
        "group_by",
        OpenApiTypes.STR,
        description=(
            "Up to 2 comma-separated dimensions: "
            + ", ".join(sorted(reports.cost_dimensions()))
            + " (e.g. `agent` or `agent,model`)."
        ),
    ),
    OpenApiParameter(
        "interval", OpenApiTypes.STR, enum=list(reports.INTERVALS), description="Per period."
    ),
    OpenApiParameter(
        "from",
        OpenApiTypes.DATETIME,
        description="Start (included, ISO 8601 with offset); default: 30 days before `to`.",
    ),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="End (excluded); default: now."),
    OpenApiParameter("agent", OpenApiTypes.STR, description="Agent slug."),
    OpenApiParameter("agent_version", OpenApiTypes.INT, description="Version number."),
    OpenApiParameter("user", OpenApiTypes.STR, description="Username."),
    OpenApiParameter("tool", OpenApiTypes.STR, description="Tool name."),
    OpenApiParameter("model", OpenApiTypes.STR),
    OpenApiParameter("provider", OpenApiTypes.STR),
    OpenApiParameter("kind", OpenApiTypes.STR, enum=["model", "tool"]),
    OpenApiParameter("run_id", OpenApiTypes.STR),
    OpenApiParameter("step_id", OpenApiTypes.STR),
    OpenApiParameter("price_source", OpenApiTypes.STR, enum=["genai-prices", "override"]),
    OpenApiParameter(
        "top", OpenApiTypes.INT, description="How many top groups to list (1-100, default 10)."
    ),
]
REPORT_DEFAULT_DAYS = 30
REPORT_MAX_TOP = 100


def cost_report_from_params(params, project) -> tuple[reports.CostReport, int]:
    """Parse a report request (query parameters, as documented in ``REPORT_PARAMETERS``)
    and run it for ``project``. Returns the report and the top-N size. Raises DRF
    ``ValidationError`` keyed by parameter."""
    from datetime import timedelta

    from django.utils import timezone

    filterset = CostEntryFilter(params, queryset=CostEntry.objects.none())
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    data = filterset.form.cleaned_data
    errors: dict[str, list[str]] = {}
    top = 10
    if params.get("top"):
        try:
            top = int(params["top"])
        except ValueError:
            top = 0
        if not 1 <= top <= REPORT_MAX_TOP:
            errors["top"] = [f"Give a whole number from 1 to {REPORT_MAX_TOP}."]
    end = data.get("to") or timezone.now()
    start = data.get("from") or end - timedelta(days=REPORT_DEFAULT_DAYS)
    group_by = [g.strip() for g in (params.get("group_by") or "").split(",") if g.strip()]
    filters = reports.CostFilters(
        agent=data.get("agent") or "",
        agent_version=int(data["agent_version"]) if data.get("agent_version") is not None else None,
        user=data.get("user") or "",
        model=data.get("model") or "",
        provider=data.get("provider") or "",
        kind=data.get("kind") or "",
        tool=data.get("tool") or "",
        run_id=data.get("run_id") or "",
        step_id=data.get("step_id") or "",
        price_source=data.get("price_source") or "",
    )
    try:
        report = reports.cost_report(
            projects=[project],
            zone=project.zone,
            start=start,
            end=end,
            group_by=group_by,
            interval=params.get("interval") or None,
            filters=filters,
        )
    except reports.ReportError as exc:
        errors.update(exc.errors)
    if errors:
        raise ValidationError(errors)
    return report, top


def cost_report_body(report: reports.CostReport, top: int) -> dict:
    """The JSON shape of ``CostReportSerializer``."""

    def named(group: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(report.group_by, group, strict=True))

    return {
        "group_by": list(report.group_by),
        "interval": report.interval,
        "from_": report.start,
        "to": report.end,
        "time_zone": report.zone.key,
        "total_usd": report.total_usd,
        "total_entries": report.total_entries,
        "rows": [
            {
                "period": row.period,
                "group": named(row.group),
                "cost_usd": row.cost_usd,
                "entries": row.entries,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
            }
            for row in report.rows
        ],
        "top": [{**item, "group": named(item["group"])} for item in report.top(top)],
    }


class CostEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """The cost ledger of a project: one entry per model call and priced tool call, newest
    first. Read-only; ``totals`` sums the filtered entries, optionally per group."""

    queryset = CostEntry.objects.none()
    serializer_class = CostEntrySerializer
    lookup_field = "call_id"
    lookup_value_regex = r"[^/]+"
    filterset_class = CostEntryFilter
    ordering_fields = ["occurred_at", "cost_usd", "id"]
    ordering = ["-occurred_at", "-id"]
    pagination_class = ProjectCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return CostEntry.objects.none()
        return selectors.cost_entries_for_project(self.project)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "group_by",
                OpenApiTypes.STR,
                enum=list(COST_GROUPS),
                description="Also sum per group (days in the project's time zone).",
            )
        ],
        responses=CostTotalsSerializer,
    )
    @action(detail=False, methods=["get"])
    def totals(self, request, *args, **kwargs):
        """Total cost, entries and tokens of the entries matching the filters; with
        ``group_by``, the 50 most expensive groups too."""
        entries = self.filter_queryset(self.get_queryset())
        group_by = request.query_params.get("group_by") or None
        if group_by is not None and group_by not in COST_GROUPS:
            raise ValidationError({"group_by": [f"Choose one of: {', '.join(COST_GROUPS)}."]})
        totals = selectors.cost_totals(entries)
        groups = (
            selectors.cost_breakdown(entries, by=group_by, zone=self.project.zone)
            if group_by
            else []
        )
        body = {
            "cost_usd": totals.cost_usd,
            "entries": totals.entries,
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "group_by": group_by,
            "groups": groups,
        }
        return Response(CostTotalsSerializer(body).data, status=status.HTTP_200_OK)

    @extend_schema(parameters=REPORT_PARAMETERS, responses=CostReportSerializer)
    @action(detail=False, methods=["get"])
    def report(self, request, *args, **kwargs):
        """The cost report: spend per ``group_by`` dimensions and per ``interval`` (days,
        weeks from Monday or months in the project's time zone) in ``[from, to)``, with the
        filters; rows by period then cost, and the top groups over the whole range."""
        report, top = cost_report_from_params(request.query_params, self.project)
        body = cost_report_body(report, top)
        return Response(CostReportSerializer(body).data)

    @extend_schema(
        parameters=REPORT_PARAMETERS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    @action(detail=False, methods=["get"], url_path="report/csv")
    def report_csv(self, request, *args, **kwargs):
        """The same report as CSV (streamed): period, one column per dimension, cost_usd,
        entries, input_tokens, output_tokens."""
        from django.http import StreamingHttpResponse

        report, _ = cost_report_from_params(request.query_params, self.project)
        response = StreamingHttpResponse(
            reports.cost_report_csv_rows(report), content_type="text/csv; charset=utf-8"
        )
        name = f"costs-{self.project.slug}-{'-'.join(report.group_by) or 'total'}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
