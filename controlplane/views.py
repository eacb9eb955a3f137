"""UI pages of the project core: dashboard, project list and switcher, project settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from controlplane import services
from controlplane.extensions import dashboard_panels, dashboard_stats
from controlplane.forms import (
    ApiTokenCreateForm,
    MemberAddForm,
    MemberRoleForm,
    ProjectCreateForm,
    ProjectUpdateForm,
    add_service_errors,
)
from controlplane.htmx import is_partial_request, render_page
from controlplane.models import Membership, Project, Role
from controlplane.permissions import get_project_or_404, membership_role
from controlplane.selectors import api_tokens_for, memberships_for_project
from controlplane.shell import get_shell, project_page, set_current_project

# --- Dashboard and projects ----------------------------------------------------------------


@project_page
def home(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The project dashboard: core numbers plus what the other apps registered."""
    tokens = api_tokens_for(project, user=request.user, role=role)
    stats = [
        {"label": "Members", "value": memberships_for_project(project).count(), "url": ""},
        {
            "label": "Active API tokens" + ("" if role.includes(Role.ADMIN) else " (yours)"),
            "value": sum(1 for token in tokens if token.is_active),
            "url": "",
        },
    ]
    for stat in dashboard_stats():
        stats.append(
            {
                "label": stat.label,
                "value": stat.value(project, request.user, role),
                "url": reverse(stat.url_name) if stat.url_name else "",
            }
        )
    panels = [
        {"template": panel.template, "data": panel.context(project, request.user, role)}
        for panel in dashboard_panels()
    ]
    context = {"project": project, "role": role, "stats": stats, "panels": panels}
    return render(request, "controlplane/home.html", context)


@login_required
@require_POST
def project_switch(request: HttpRequest) -> HttpResponse:
    """Make another of the user's projects current; 404 for projects they are not in."""
    project, _ = get_project_or_404(user=request.user, slug=request.POST.get("project", ""))
    set_current_project(request, project)
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = reverse("home")
    return redirect(next_url)


@login_required
@require_http_methods(["GET", "POST"])
def project_list(request: HttpRequest) -> HttpResponse:
    """The user's projects with their roles, and a form to create one."""
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(creator=request.user, **form.cleaned_data)
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            set_current_project(request, project)
            messages.success(request, f"Created project {project.name}; you are its admin.")
            return redirect("home")
    shell = get_shell(request)
    rows = [(project, shell.roles.get(project.pk)) for project in shell.projects]
    return render(request, "controlplane/project_list.html", {"form": form, "rows": rows})


# --- Project settings ------------------------------------------------------------------------


def _role_auto_id(membership: Membership) -> str:
    """Distinct element ids for each member row's role form (the field name stays ``role``)."""
    return f"id_member{membership.pk}_%s"


@dataclass
class MemberRow:
    """One row of the members table: its role form and the errors of a failed change."""

    membership: Membership
    form: MemberRoleForm
    errors: list[str] = field(default_factory=list)


def _member_rows(project: Project, failed: MemberRow | None) -> list[MemberRow]:
    """A row per member; ``failed`` replaces the row of a change that was refused."""
    rows = []
    for membership in memberships_for_project(project).order_by("user__username"):
        if failed is not None and failed.membership.pk == membership.pk:
            rows.append(failed)
            continue
        form = MemberRoleForm(initial={"role": membership.role}, auto_id=_role_auto_id(membership))
        rows.append(MemberRow(membership, form))
    return rows


def _settings_context(
    request: HttpRequest,
    project: Project,
    role: Role,
    *,
    failed_row: MemberRow | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    context = {
        "project": project,
        "role": role,
        "is_admin": role.includes(Role.ADMIN),
        "details_form": ProjectUpdateForm.for_project(project),
        "member_rows": _member_rows(project, failed_row),
        "member_add_form": MemberAddForm(),
        "tokens": api_tokens_for(project, user=request.user, role=role),
        "token_form": ApiTokenCreateForm(),
    }
    context.update(overrides)
    return context


def _settings_page(
    request: HttpRequest, project: Project, role: Role, *, section: str, **context: Any
) -> HttpResponse:
    """The settings page, or only ``section`` (``members`` or ``tokens``) for an htmx swap."""
    return render_page(
        request,
        "controlplane/project_settings.html",
        f"controlplane/partials/{section}.html",
        _settings_context(request, project, role, **context),
    )


def _section_saved(
    request: HttpRequest, project: Project, *, section: str, notice: str
) -> HttpResponse:
    """After a successful change: the fresh section for htmx, else POST-redirect-GET.

    The role is read again because admins may have changed their own; a user who removed
    themselves is sent home.
    """
    role = membership_role(request.user, project)
    if role is None:
        messages.success(request, notice)
        if is_partial_request(request):
            return HttpResponseClientRedirect(reverse("home"))
        return redirect("home")
    if is_partial_request(request):
        return _settings_page(request, project, role, section=section, notice=notice)
    messages.success(request, notice)
    return redirect(f"{reverse('project-settings', args=[project.slug])}#{section}")


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, project: str) -> HttpResponse:
    """Project details, members and API tokens; POST changes the details (admins only)."""
    needed = Role.ADMIN if request.method == "POST" else Role.VIEWER
    project_obj, role = get_project_or_404(user=request.user, slug=project, role=needed)
    details_form = ProjectUpdateForm(request.POST or None)
    if request.method == "POST" and details_form.is_valid():
        try:
            services.project_update(project=project_obj, **details_form.cleaned_data)
        except ValidationError as error:
            add_service_errors(details_form, error)
        else:
            messages.success(request, "Project details saved.")
            return redirect("project-settings", project=project_obj.slug)
    if request.method == "GET":
        details_form = ProjectUpdateForm.for_project(project_obj)
    context = _settings_context(request, project_obj, role, details_form=details_form)
    return render(request, "controlplane/project_settings.html", context)


@login_required
@require_POST
def member_add(request: HttpRequest, project: str) -> HttpResponse:
    project_obj, role = get_project_or_404(user=request.user, slug=project, role=Role.ADMIN)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            membership = services.membership_create(
                project=project_obj, user=form.cleaned_data["user"], role=form.cleaned_data["role"]
            )
        except ValidationError as error:
            add_service_errors(form, error, rename={"user": "username"})
        else:
            notice = f"Added {membership.user.get_username()} as {membership.get_role_display()}."
            return _section_saved(request, project_obj, section="members", notice=notice)
    return _settings_page(request, project_obj, role, section="members", member_add_form=form)


def _project_membership(request: HttpRequest, project: str, membership_id: int) -> tuple:
    project_obj, role = get_project_or_404(user=request.user, slug=project, role=Role.ADMIN)
    membership = get_object_or_404(memberships_for_project(project_obj), pk=membership_id)
    return project_obj, role, membership


@login_required
@require_POST
def member_role(request: HttpRequest, project: str, membership_id: int) -> HttpResponse:
    project_obj, role, membership = _project_membership(request, project, membership_id)
    form = MemberRoleForm(request.POST, auto_id=_role_auto_id(membership))
    if form.is_valid():
        try:
            membership = services.membership_update(
                membership=membership, role=form.cleaned_data["role"]
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            notice = f"{membership.user.get_username()} is now {membership.get_role_display()}."
            return _section_saved(request, project_obj, section="members", notice=notice)
    failed = MemberRow(membership, form, [*form.non_field_errors(), *form["role"].errors])
    return _settings_page(request, project_obj, role, section="members", failed_row=failed)


@login_required
@require_POST
def member_remove(request: HttpRequest, project: str, membership_id: int) -> HttpResponse:
    project_obj, role, membership = _project_membership(request, project, membership_id)
    username = membership.user.get_username()
    try:
        services.membership_delete(membership=membership)
    except ValidationError as error:
        form = MemberRoleForm(initial={"role": membership.role}, auto_id=_role_auto_id(membership))
        failed = MemberRow(membership, form, error.messages)
        return _settings_page(request, project_obj, role, section="members", failed_row=failed)
    return _section_saved(
        request, project_obj, section="members", notice=f"Removed {username} from the project."
    )


@never_cache
@login_required
@require_POST
def token_create(request: HttpRequest, project: str) -> HttpResponse:
    """Create an API token and show its plaintext in this response only (never stored)."""
    project_obj, role = get_project_or_404(user=request.user, slug=project)
    form = ApiTokenCreateForm(request.POST)
    if form.is_valid():
        try:
            token, plaintext = services.api_token_create(
                project=project_obj,
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(),
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            # Rendered directly, not redirected: the plaintext exists only in this response.
            context = _settings_context(
                request, project_obj, role, created_token=token, plaintext=plaintext
            )
            return render_page(
                request,
                "controlplane/token_created.html",
                "controlplane/partials/tokens.html",
                context,
            )
    return _settings_page(request, project_obj, role, section="tokens", token_form=form)


@login_required
@require_POST
def token_revoke(request: HttpRequest, project: str, prefix: str) -> HttpResponse:
    """Revoke a token the user can see (their own; admins: any of the project's)."""
    project_obj, role = get_project_or_404(user=request.user, slug=project)
    token = get_object_or_404(
        api_tokens_for(project_obj, user=request.user, role=role), prefix=prefix
    )
    services.api_token_revoke(token=token)
    return _section_saved(
        request, project_obj, section="tokens", notice=f"Revoked token {token.name}."
    )
