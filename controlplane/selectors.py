"""Tenancy reads: which projects a user sees, their members and tokens."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.models import ApiToken, Membership, Project, Role, WorkerHeartbeat


def projects_for_user(user: Any, *, token: ApiToken | None = None) -> QuerySet[Project]:
    """Projects ``user`` is a member of; only the token's project when a token is used."""
    if user is None or not user.is_authenticated:
        return Project.objects.none()
    qs = Project.objects.filter(memberships__user=user)
    if token is not None:
        qs = qs.filter(pk=token.project_id)
    return qs.distinct()


def memberships_for_project(project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user")


def api_tokens_for(project: Project, *, user: Any, role: Role) -> QuerySet[ApiToken]:
    """Admins see every token of the project; other members see their own."""
    qs = ApiToken.objects.filter(project=project).select_related("user")
    if not role.includes(Role.ADMIN):
        qs = qs.filter(user=user)
    return qs


def worker_heartbeats() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.all()


def roles_by_project(user: Any) -> dict[int, Role]:
    """The user's role per project id (empty for anonymous users)."""
    if user is None or not user.is_authenticated:
        return {}
    rows = Membership.objects.filter(user=user).values_list("project_id", "role")
    return {project_id: Role(role) for project_id, role in rows}
