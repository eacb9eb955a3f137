"""UI routes for flows."""

from django.urls import path

from flows import views

urlpatterns = [
    path("flows/", views.flow_list, name="flows"),
    path("runs/", views.run_list, name="runs"),
]
