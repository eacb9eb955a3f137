"""UI pages for approvals: the project's approval requests, pending first."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse

from approvals.selectors import approval_requests_for_project
from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import project_page

APPROVALS_PAGE_SIZE = 50


@project_page
def approval_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Approval requests of the current project; an htmx refresh also updates the nav badge."""
    page = Paginator(approval_requests_for_project(project), APPROVALS_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {"project": project, "page": page}
    return render_page(
        request, "approvals/approval_list.html", "approvals/partials/approval_list.html", context
    )
