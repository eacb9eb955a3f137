"""UI routes for agents."""

from django.urls import path

from agents import views

urlpatterns = [
    path("agents/", views.agent_list, name="agents"),
    path("tools/", views.tool_list, name="tools"),
]
