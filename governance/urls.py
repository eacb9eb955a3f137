"""UI routes for governance."""

from django.urls import path

from governance import views, views_budgets, views_metrics, views_policies, views_reports

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
    path("audit/verify/", views.audit_verify, name="audit-verify"),
    path("audit/runs/<path:run_id>/", views.decision_log, name="decision-log"),
    path("costs/report/", views_reports.cost_report_page, name="cost-report"),
    path("costs/report.csv", views_reports.cost_report_csv, name="cost-report-csv"),
    path("performance/", views_reports.performance_page, name="performance"),
    path("metrics", views_metrics.metrics, name="metrics"),
    path("costs/", views_budgets.cost_list, name="costs"),
    path("budgets/", views_budgets.budget_list, name="budgets"),
    path("budgets/new/", views_budgets.budget_create, name="budget-create"),
    path("budgets/<slug:name>/", views_budgets.budget_detail, name="budget-detail"),
    path("budgets/<slug:name>/edit/", views_budgets.budget_edit, name="budget-edit"),
    path(
        "budgets/<slug:name>/deactivate/",
        views_budgets.budget_deactivate,
        name="budget-deactivate",
    ),
    path("policies/", views_policies.policy_list, name="policies"),
    path("policies/<slug:slug>/", views_policies.policy_detail, name="policy-detail"),
    path("policies/<slug:slug>/validate", views_policies.policy_validate, name="policy-validate"),
    path("policies/<slug:slug>/diff", views_policies.policy_diff_page, name="policy-diff"),
    path(
        "policies/<slug:slug>/versions/<int:number>/activate",
        views_policies.policy_version_activate,
        name="policy-version-activate",
    ),
]
