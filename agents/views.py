"""UI pages for agents and tools (empty states until the registry issue adds them)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from controlplane.models import Project, Role
from controlplane.shell import project_page


@project_page
def agent_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    return render(request, "agents/agent_list.html", {"project": project})


@project_page
def tool_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    return render(request, "agents/tool_list.html", {"project": project})
