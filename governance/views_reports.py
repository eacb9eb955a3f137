"""UI pages for cost reports (stacked chart over time, top-N tables, every cell, CSV export,
budget burn-down with the period's projection) and the performance view.

The report page's filters are the REST report's (``governance.reports.cost_report`` is the
one aggregation path); dates are days in the project's time zone, ``to`` included.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from governance import charts, reports, selectors
from governance.models import BudgetPeriodKind, CostKind
from governance.performance import project_performance

TOP_ROWS = 10
CHART_SERIES = 8
PERFORMANCE_WINDOWS = ((1, "Last hour"), (24, "Last 24 hours"), (168, "Last 7 days"))


def _dimension_choices() -> list[tuple[str, str]]:
    names = {"agent_version": "Agent version", "run": "Run"}
    return [
        (n, names.get(n, n.replace("_", " ").capitalize()))
        for n in sorted(reports.cost_dimensions())
    ]


class CostReportForm(forms.Form):
    """The report's parameters: up to two dimensions, an interval, a date range (local
    days, ``to`` included; default the last 30 days) and filters."""

    group_by = forms.ChoiceField(required=False, label="Group by")
    then_by = forms.ChoiceField(required=False, label="Then by")
    interval = forms.ChoiceField(
        required=False,
        choices=[("", "Whole range"), ("day", "Day"), ("week", "Week"), ("month", "Month")],
        initial="day",
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"})
    )
    agent = forms.SlugField(required=False, max_length=50)
    user = forms.CharField(required=False, max_length=150)
    model = forms.CharField(required=False, max_length=200)
    tool = forms.CharField(required=False, max_length=200)
    kind = forms.ChoiceField(required=False, choices=[("", "—"), *CostKind.choices])

    def __init__(self, *args: Any, project: Project, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["group_by"].choices = [("", "—"), *_dimension_choices()]
        self.fields["then_by"].choices = [("", "—"), *_dimension_choices()]

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "The end date is before the start date.")
        if data.get("then_by") and data.get("then_by") == data.get("group_by"):
            self.add_error("then_by", "Choose another dimension than the first.")
        return data

    def range(self) -> tuple[datetime, datetime]:
        zone = self.project.zone
        today = timezone.now().astimezone(zone).date()
        last = self.cleaned_data.get("date_to") or today
        first = self.cleaned_data.get("date_from") or last - timedelta(days=29)
        return (
            datetime.combine(first, time.min, zone),
            datetime.combine(last + timedelta(days=1), time.min, zone),
        )

    def run(self) -> reports.CostReport:
        """The report (call when valid). Raises ``reports.ReportError``."""
        data = self.cleaned_data
        start, end = self.range()
        return reports.cost_report(
            projects=[self.project],
            zone=self.project.zone,
            start=start,
            end=end,
            group_by=[g for g in (data.get("group_by"), data.get("then_by")) if g],
            interval=data.get("interval") or None,
            filters=reports.CostFilters(
                agent=data.get("agent") or "",
                user=data.get("user") or "",
                model=data.get("model") or "",
                tool=data.get("tool") or "",
                kind=data.get("kind") or "",
            ),
        )


def _report_form(request: HttpRequest, project: Project) -> CostReportForm:
    params = request.GET.copy()
    if not params:
        params.update({"group_by": "agent", "interval": "day"})
    return CostReportForm(params, project=project)


def _burndowns(project: Project) -> list[dict[str, Any]]:
    now = timezone.now()
    out = []
    for budget in selectors.budgets_for_project(project).filter(active=True):
        if budget.period == BudgetPeriodKind.TOTAL:
            continue
        burn = reports.budget_burndown(budget, at=now)
        out.append(
            {
                "burn": burn,
                "chart": charts.burndown(
                    burn.points,
                    begins=burn.period_begins,
                    ends=burn.period_ends,
                    limit_usd=burn.limit_usd,
                    projected_usd=burn.projected_usd,
                    now=now,
                    title=f"Burn-down of budget {budget.name}",
                ),
            }
        )
    return out


@project_page
def cost_report_page(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Spend over time per dimension: a stacked chart, the top groups, every cell, the CSV
    export of the same report, and each active day / month budget's burn-down."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    form = _report_form(request, project)
    context: dict[str, Any] = {"project": project, "role": role, "form": form}
    if form.is_valid():
        try:
            report = form.run()
        except reports.ReportError as exc:
            for name, messages in exc.errors.items():
                field = {"from": "date_from", "to": "date_to", "group_by": "group_by"}.get(name)
                form.add_error(field if field in form.fields else None, " ".join(messages))
        else:
            periods, series = report.series(CHART_SERIES)
            title = "Cost per " + (report.interval or "range")
            context.update(
                {
                    "report": report,
                    "top": report.top(TOP_ROWS),
                    "chart": charts.stacked_bars(periods, series, title=title)
                    if report.interval
                    else "",
                    "csv_query": request.GET.urlencode(),
                }
            )
    context["burndowns"] = _burndowns(project)
    return render_page(
        request, "governance/cost_report.html", "governance/partials/cost_report_body.html", context
    )


@project_page
def cost_report_csv(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The page's report as CSV (streamed); invalid parameters: 400 with the errors."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    form = _report_form(request, project)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    try:
        report = form.run()
    except reports.ReportError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    response = StreamingHttpResponse(reports.cost_report_csv_rows(report), content_type="text/csv")
    name = f"costs-{project.slug}-{date.today().isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@project_page
def performance_page(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Latency p50 / p95 and error rates per agent, tool and model endpoint, the slowest
    calls and the open circuit breakers, each linking to example runs."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    try:
        hours = int(request.GET.get("hours", "24"))
    except ValueError:
        hours = 0
    windows = dict(PERFORMANCE_WINDOWS)
    error = "" if hours in windows else "Choose one of the windows offered."
    if error:
        hours = 24
    context = {
        "project": project,
        "role": role,
        "hours": hours,
        "windows": PERFORMANCE_WINDOWS,
        "window_error": error,
        "perf": project_performance(project, hours=hours),
    }
    return render_page(
        request,
        "governance/performance.html",
        "governance/partials/performance_body.html",
        context,
        status=400 if error else 200,
    )
