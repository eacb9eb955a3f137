"""UI pages for flows and runs (empty states until the flows issue adds them)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from controlplane.models import Project, Role
from controlplane.shell import project_page


@project_page
def flow_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    return render(request, "flows/flow_list.html", {"project": project})


@project_page
def run_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    return render(request, "flows/run_list.html", {"project": project})
