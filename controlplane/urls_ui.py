"""UI routes of the project core: home, sign-in, project switcher and project settings."""

from django.contrib.auth import views as auth_views
from django.urls import path

from controlplane import views

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", views.project_list, name="project-list"),
    path("projects/switch/", views.project_switch, name="project-switch"),
    path("projects/<slug:project>/settings/", views.project_settings, name="project-settings"),
    path("projects/<slug:project>/members/", views.member_add, name="project-member-add"),
    path(
        "projects/<slug:project>/members/<int:membership_id>/role/",
        views.member_role,
        name="project-member-role",
    ),
    path(
        "projects/<slug:project>/members/<int:membership_id>/remove/",
        views.member_remove,
        name="project-member-remove",
    ),
    path("projects/<slug:project>/tokens/", views.token_create, name="project-token-create"),
    path(
        "projects/<slug:project>/tokens/<str:prefix>/revoke/",
        views.token_revoke,
        name="project-token-revoke",
    ),
]
