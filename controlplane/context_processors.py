"""Template context for the UI shell: projects, current project and role, nav, inbox badge."""

from __future__ import annotations

from django.http import HttpRequest

from controlplane.shell import get_shell


def shell(request: HttpRequest) -> dict:
    """Shell values as callables, so templates that never use them cost no queries."""
    state = get_shell(request)
    return {
        "shell": state,
        "nav_projects": lambda: state.projects,
        "current_project": lambda: state.current_project,
        "current_role": lambda: state.current_role,
        "pending_approvals": lambda: state.pending_approvals,
        "nav_items": lambda: state.nav_items,
    }
