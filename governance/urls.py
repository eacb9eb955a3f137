"""UI routes for governance."""

from django.urls import path

from governance import views, views_policies

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
    path("costs/", views.cost_list, name="costs"),
    path("budgets/", views.budget_list, name="budgets"),
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
