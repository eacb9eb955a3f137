"""The one permission layer for UI and API: project membership, role rank and token scope.

Rules:
- Every object lives in one project. A user who is not a member of that project (or a
  token for another project) gets **404**, never 403, so other tenants' objects cannot
  be discovered.
- A member whose role is below the action's role, or a token lacking the scope, gets 403.
- A token acts for its creator: its role is the creator's current role.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from controlplane.models import ApiToken, Membership, Project, Role, TokenScope


def membership_role(user: Any, project: Project) -> Role | None:
    """The user's role in ``project``, or None when not a member (or anonymous)."""
    if user is None or not user.is_authenticated:
        return None
    role = (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
    )
    return Role(role) if role else None


def check_project_access(
    *,
    user: Any,
    project: Project,
    role: Role | str,
    token: ApiToken | None = None,
    scope: TokenScope | str | None = None,
) -> Role:
    """Check that ``user`` (optionally through ``token``) may act in ``project`` at ``role``.

    Returns the user's role. Raises ``Http404`` when the user is not a member or the token
    belongs to another project; ``PermissionDenied`` when the role is too low or the token
    lacks ``scope``.
    """
    if token is not None and token.project_id != project.pk:
        raise Http404("No such project.")
    actual = membership_role(user, project)
    if actual is None:
        raise Http404("No such project.")
    if not actual.includes(role):
        raise PermissionDenied(f"This needs the {Role(role).label.lower()} role in {project.slug}.")
    if token is not None and scope is not None and not token.has_scope(scope):
        raise PermissionDenied(f"This API token lacks the '{TokenScope(scope).value}' scope.")
    return actual


def get_project_or_404(
    *,
    user: Any,
    slug: str,
    role: Role | str = Role.VIEWER,
    token: ApiToken | None = None,
    scope: TokenScope | str | None = None,
) -> tuple[Project, Role]:
    """Load a project by slug and check access (see ``check_project_access``)."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    actual = check_project_access(user=user, project=project, role=role, token=token, scope=scope)
    return project, actual
