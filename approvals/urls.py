"""UI routes for approvals."""

from django.urls import path

from approvals import views

urlpatterns = [
    path("approvals/", views.approval_list, name="approvals"),
    path("approvals/badge/", views.approval_badge, name="approvals-badge"),
    path("approvals/settings/", views.approval_settings, name="approvals-settings"),
    path("approvals/<int:pk>/", views.approval_detail, name="approval-detail"),
    path("approvals/<int:pk>/decide/", views.approval_decide_view, name="approval-decide"),
    path(
        "approvals/<int:pk>/check-arguments/",
        views.approval_check_arguments,
        name="approval-check-arguments",
    ),
]
