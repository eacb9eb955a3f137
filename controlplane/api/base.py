"""Base viewset for project-scoped resources, mounted under ``/api/v1/projects/<project>/``.

Every app's API uses it, so the permission layer is the same everywhere:
``controlplane.permissions.check_project_access`` with the role and token scope the
action needs. Safe methods need viewer + ``read``; other methods need operator +
``write`` unless ``action_roles`` / ``action_scopes`` say otherwise.

``ProjectHistoryViewSet`` is the read-only (list + retrieve) form for the records the
services write and people only look at: turns, activations, budget periods, runs, spans.
"""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import mixins, viewsets

from controlplane.api.pagination import ProjectCursorPagination
from controlplane.models import ApiToken, Role, TokenScope
from controlplane.permissions import get_project_or_404

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def request_token(request) -> ApiToken | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


def default_scope(request) -> TokenScope:
    return TokenScope.READ if request.method in SAFE_METHODS else TokenScope.WRITE


class ProjectScopedViewSet(viewsets.GenericViewSet):
    """Resolves ``self.project`` and ``self.role`` before any handler runs.

    Outside the project (or with a token of another project): 404. Role too low or
    token scope missing: 403. Subclasses filter ``get_queryset`` by ``self.project``.
    """

    action_roles: dict[str, Role] = {}
    action_scopes: dict[str, TokenScope] = {}
    project_url_kwarg = "project"

    def required_role(self) -> Role:
        if self.action in self.action_roles:
            return self.action_roles[self.action]
        return Role.VIEWER if self.request.method in SAFE_METHODS else Role.OPERATOR

    def required_scope(self) -> TokenScope:
        return self.action_scopes.get(self.action, default_scope(self.request))

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.project, self.role = get_project_or_404(
            user=request.user,
            slug=self.kwargs[self.project_url_kwarg],
            role=self.required_role(),
            token=request_token(request),
            scope=self.required_scope(),
        )


class ProjectHistoryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectScopedViewSet):
    """Read-only list and retrieve of records the services write (viewer + ``read``), newest
    first (``ordering = ["-id"]`` unless a subclass says otherwise), cursor-paginated.

    A subclass sets ``queryset = <Model>.objects.none()`` (the model for the router and the
    OpenAPI schema), ``serializer_class``, ``filterset_class``, ``ordering_fields`` and
    implements ``project_queryset()``: the project's records (``self.project`` is resolved).
    While the schema is generated (no request, no project) the empty ``queryset`` is used.
    Subclasses may add actions (e.g. a run's ``cancel``); those follow the usual roles.
    """

    ordering = ["-id"]
    pagination_class = ProjectCursorPagination

    def project_queryset(self) -> QuerySet:
        """The records of ``self.project`` this viewset lists; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement project_queryset()")

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):
            return super().get_queryset()
        return self.project_queryset()
