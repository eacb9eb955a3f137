"""The UI shell's view of the signed-in user: current project, roles and navigation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from controlplane.extensions import nav_badge
from controlplane.forms import ProjectCreateForm
from controlplane.models import Project, Role
from controlplane.permissions import check_project_access, get_project_or_404
from controlplane.selectors import projects_for_user, roles_by_project

SESSION_PROJECT_KEY = "project_slug"

# (label, URL name, URL names that mark the item active). Sections built by later issues
# keep their place here so the navigation does not move as they arrive. Besides the names
# listed, every page whose path lies under the item's URL marks it active (the agents
# section holds /agents/<slug>/ and /agents/model-endpoints/, tools /tools/mcp-servers/).
NAV_ITEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Dashboard", "home", ("home",)),
    ("Agents", "agents", ("agents",)),
    ("Tools", "tools", ("tools",)),
    ("Flows", "flows", ("flows",)),
    ("Runs", "runs", ("runs",)),
    ("Approvals", "approvals", ("approvals",)),
    ("Costs", "costs", ("costs", "cost-report")),
    ("Performance", "performance", ("performance",)),
    ("Budgets", "budgets", ("budgets",)),
    ("Policies", "policies", ("policies", "replays", "replay-detail")),
    ("Audit", "audit-list", ("audit-list",)),
)


@dataclass(frozen=True, slots=True)
class NavItem:
    """A section link. ``active``: the page belongs to the section; ``current``: it is the
    section's own page (``aria-current="page"``, else ``"true"`` while active)."""

    label: str
    url: str
    active: bool
    key: str
    current: bool = False


class Shell:
    """Lazily computed shell state for one request (cached on the request).

    Nothing is queried until a template or view asks, so pages that do not show the shell
    (admin, API docs) pay nothing.
    """

    def __init__(self, request: HttpRequest):
        self.request = request

    @property
    def user(self) -> Any:
        return self.request.user

    @cached_property
    def projects(self) -> list[Project]:
        """The user's projects (``projects_for_user``), ordered by slug."""
        return list(projects_for_user(self.user).order_by("slug"))

    @cached_property
    def roles(self) -> dict[int, Role]:
        """The user's role per project id."""
        return roles_by_project(self.user)

    @cached_property
    def current_project(self) -> Project | None:
        """The project named in the session if the user is still a member, else the first one."""
        if not self.projects:
            return None
        slug = self.request.session.get(SESSION_PROJECT_KEY)
        for project in self.projects:
            if project.slug == slug:
                return project
        return self.projects[0]

    @property
    def current_role(self) -> Role | None:
        project = self.current_project
        return self.roles.get(project.pk) if project is not None else None

    @cached_property
    def pending_approvals(self) -> int:
        # Registered by the approvals app (controlplane never imports the apps above it).
        return nav_badge("approvals", self.current_project) or 0

    @cached_property
    def nav_items(self) -> list[NavItem]:
        match = getattr(self.request, "resolver_match", None)
        current = match.view_name if match is not None else ""
        items = []
        for label, name, active_on in NAV_ITEMS:
            url = reverse(name)
            under = url != "/" and self.request.path.startswith(url)
            items.append(
                NavItem(
                    label=label,
                    url=url,
                    active=current in active_on or under,
                    key=name,
                    current=current == name,
                )
            )
        return items

    @cached_property
    def switch_next_url(self) -> str:
        """Where the project switcher leads after switching: this page if it shows no
        particular object (no URL arguments), else the list page of its section (an object
        of one project is not in another), else the dashboard."""
        match = getattr(self.request, "resolver_match", None)
        if match is None or not (match.args or match.kwargs):
            return self.request.path
        section = next((item.url for item in self.nav_items if item.active), None)
        return section or reverse("home")


def get_shell(request: HttpRequest) -> Shell:
    """The request's ``Shell`` (one per request, shared by views and the context processor)."""
    shell = getattr(request, "_controlplane_shell", None)
    if shell is None:
        shell = Shell(request)
        request._controlplane_shell = shell
    return shell


def set_current_project(request: HttpRequest, project: Project) -> None:
    """Remember ``project`` as the user's current project for this session."""
    request.session[SESSION_PROJECT_KEY] = project.slug
    request.__dict__.pop("_controlplane_shell", None)


def acting_project(request: HttpRequest, project: Project, *, role: Role) -> tuple[Project, Role]:
    """The project a request acts on, after checking ``role`` in it: 404 outside it, 403
    below the role. Returns the project and the user's role there.

    Forms carry the project they were rendered for (hidden ``project`` in POST; a page
    may name it as ``?project=`` in GET), so a write never lands in another project
    because the user switched projects in another tab meanwhile. Another project of the
    user's becomes the current one (the page or redirect after the write shows it).
    """
    source = request.POST if request.method == "POST" else request.GET
    slug = source.get("project") or project.slug
    if slug != project.slug:
        project, _ = get_project_or_404(user=request.user, slug=slug)
    actual = check_project_access(user=request.user, project=project, role=role)
    if slug != get_shell(request).current_project.slug:
        set_current_project(request, project)
    return project, actual


def project_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a page of the current project: sign-in required, access checked.

    The view is called as ``view(request, *args, project=..., role=...)``. A user without
    any project gets the "no project yet" page instead.
    """

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        current = get_shell(request).current_project
        if current is None:
            return render(
                request, "controlplane/no_project.html", {"create_form": ProjectCreateForm()}
            )
        project, role = get_project_or_404(user=request.user, slug=current.slug)
        return view(request, *args, project=project, role=role, **kwargs)

    return wrapped
