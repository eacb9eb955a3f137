"""UI routes for governance."""

from django.urls import path

from governance import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit-list"),
    path("costs/", views.cost_list, name="costs"),
    path("budgets/", views.budget_list, name="budgets"),
    path("policies/", views.policy_list, name="policies"),
]
