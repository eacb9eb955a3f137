"""UI pages for budgets and the cost ledger.

Everyone in the project reads budgets (usage of the current period, reservations in
flight) and the ledger; creating, editing and deactivating budgets needs the admin role,
as in the API (a budget caps what every agent of the project may spend). Writes go
through ``governance.services``; a refused form is shown again with each error in place.

Pages act on the current project; ``?project=<slug>`` (GET) or the hidden ``project``
field (POST) names it explicitly, so a link or a form never lands in a project switched
to in another tab, and a project the user is not a member of is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from controlplane.forms import add_service_errors
from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from governance import selectors, services
from governance.budgets import BudgetUsage, period_bounds
from governance.forms_budgets import BudgetForm, CostFilterForm
from governance.models import Budget

COST_PAGE_SIZE = 50
RECENT_PERIODS = 12
RECENT_ALERTS = 20
BREAKDOWN_ROWS = 5


def _budget_or_404(project: Project, name: str) -> Budget:
    return get_object_or_404(
        Budget.objects.filter(project=project).select_related("user"), name=name
    )


def _usage_of(budget: Budget, project: Project) -> BudgetUsage:
    """The current-period usage from ``budgets_for_project``'s annotations."""
    begins, ends = period_bounds(budget.period, budget.current_period_start, project.zone)
    return BudgetUsage(
        period_start=budget.current_period_start,
        period_begins=begins,
        period_ends=ends,
        limit_usd=budget.limit_usd,
        spent_usd=budget.current_spent_usd,
        reserved_usd=budget.current_reserved_usd,
    )


def _can_edit(role: Role) -> bool:
    return role.includes(Role.ADMIN)


# --- budgets ----------------------------------------------------------------------------------


@project_page
def budget_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The project's budgets with usage bars for the current period (spent, reserved by
    calls in flight, limit). htmx requests (the table refreshes itself) get the table only."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    rows = [
        {"budget": budget, "usage": _usage_of(budget, project)}
        for budget in selectors.budgets_for_project(project)
    ]
    context = {"project": project, "role": role, "can_edit": _can_edit(role), "rows": rows}
    return render_page(
        request, "governance/budget_list.html", "governance/partials/budget_table.html", context
    )


@project_page
@require_http_methods(["GET", "POST"])
def budget_create(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """A new budget (admins). Errors are shown next to their fields; nothing is saved."""
    project, role = acting_project(
        request, project, role=Role.ADMIN if request.method == "POST" else Role.VIEWER
    )
    form = BudgetForm(request.POST or None, project=project)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                budget = services.budget_create(project=project, **form.service_fields())
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Budget {budget.name} created.")
                return redirect("budget-detail", name=budget.name)
        status = 400
    context = {"project": project, "role": role, "can_edit": _can_edit(role), "form": form}
    return render(request, "governance/budget_form.html", context, status=status)


@project_page
def budget_detail(request: HttpRequest, name: str, *, project: Project, role: Role) -> HttpResponse:
    """One budget: usage this period, reservations in flight, recent periods and alerts."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    budget = get_object_or_404(selectors.budgets_for_project(project), name=name)
    usage = _usage_of(budget, project)
    periods = [
        {
            "row": row,
            "bounds": period_bounds(budget.period, row.period_start, project.zone),
        }
        for row in selectors.budget_periods(budget)[:RECENT_PERIODS]
    ]
    context = {
        "project": project,
        "role": role,
        "can_edit": _can_edit(role),
        "budget": budget,
        "usage": usage,
        "in_flight": list(selectors.reservations_in_flight(budget).prefetch_related("lines")),
        "periods": periods,
        "alerts": list(selectors.budget_alerts(budget)[:RECENT_ALERTS]),
    }
    return render(request, "governance/budget_detail.html", context)


@project_page
@require_http_methods(["GET", "POST"])
def budget_edit(request: HttpRequest, name: str, *, project: Project, role: Role) -> HttpResponse:
    """Change a budget's name, limit, hardness, thresholds or active flag (admins)."""
    project, role = acting_project(
        request, project, role=Role.ADMIN if request.method == "POST" else Role.VIEWER
    )
    budget = _budget_or_404(project, name)
    status = 200
    if request.method == "POST":
        form = BudgetForm(
            request.POST,
            initial=BudgetForm.for_budget(budget).initial,
            project=project,
            editing=True,
        )
        if form.is_valid():
            try:
                budget = services.budget_update(budget=budget, **form.service_fields())
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Budget {budget.name} saved.")
                return redirect("budget-detail", name=budget.name)
        status = 400
    else:
        form = BudgetForm.for_budget(budget)
    context = {
        "project": project,
        "role": role,
        "can_edit": _can_edit(role),
        "form": form,
        "budget": budget,
    }
    return render(request, "governance/budget_form.html", context, status=status)


@project_page
@require_POST
def budget_deactivate(
    request: HttpRequest, name: str, *, project: Project, role: Role
) -> HttpResponse:
    """Stop applying a budget to new calls (admins); its history stays."""
    project, role = acting_project(request, project, role=Role.ADMIN)
    budget = services.budget_deactivate(budget=_budget_or_404(project, name))
    messages.success(
        request, f"Budget {budget.name} is inactive: new calls no longer count against it."
    )
    return redirect(f"{reverse('budget-detail', args=[budget.name])}?project={project.slug}")


# --- the cost ledger --------------------------------------------------------------------------


@project_page
def cost_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The cost ledger, newest first, 50 entries a page (keyset by entry id), with filters
    (agent, model, user, kind, dates in the project's time zone) and the totals of what
    the filters match. htmx requests get the results only."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    entries = selectors.cost_entries_for_project(project)
    form = CostFilterForm(request.GET or None, project=project, entries=entries)
    context = {
        "project": project,
        "role": role,
        "form": form,
        "has_entries": entries.exists(),
        "filtered": form.filtered,
    }
    if form.is_bound and not form.is_valid():
        context["invalid"] = True
        return render_page(
            request, "governance/cost_list.html", "governance/partials/cost_results.html", context
        )
    matching = form.filter(entries) if form.is_bound else entries
    page = matching
    before = form.cleaned_data.get("before") if form.is_bound else None
    if before:
        anchor = entries.filter(pk=before).values("occurred_at").first()
        if anchor is None:
            page = matching.none()  # not an entry of this project: no such page
        else:
            page = matching.filter(
                Q(occurred_at__lt=anchor["occurred_at"])
                | Q(occurred_at=anchor["occurred_at"], pk__lt=before)
            )
    rows = list(page[: COST_PAGE_SIZE + 1])
    has_more = len(rows) > COST_PAGE_SIZE
    rows = rows[:COST_PAGE_SIZE]
    context.update(
        {
            "rows": rows,
            "next_before": rows[-1].pk if has_more else None,
            "is_older_page": bool(before),
            "totals": selectors.cost_totals(matching),
            "by_agent": selectors.cost_breakdown(matching, by="agent", limit=BREAKDOWN_ROWS),
            "by_model": selectors.cost_breakdown(matching, by="model", limit=BREAKDOWN_ROWS),
        }
    )
    return render_page(
        request, "governance/cost_list.html", "governance/partials/cost_results.html", context
    )
