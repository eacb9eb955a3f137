"""UI routes for approvals."""

from django.urls import path

from approvals import views

urlpatterns = [
    path("approvals/", views.approval_list, name="approvals"),
]
