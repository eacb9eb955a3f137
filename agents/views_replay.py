"""UI pages of the policy replay: start one (a draft and a time range) and follow it.

Everyone in the project sees replays; starting one needs the operator role (as the REST
API). The draft is checked before anything is queued: every problem is shown in place
with its path, and nothing is saved.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from agents.models import ReplayDraftKind, ReplayJob, ReplayStatus
from agents.replay import replay_job_create
from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from governance.replay import CHANGE_KINDS

CHANGE_LABELS = {
    "newly_denied": "newly denied",
    "newly_requiring_approval": "newly requiring approval",
    "newly_allowed": "newly allowed",
    "pii_changed": "PII action changed",
    "budget_hit": "budget hit",
    "budget_cleared": "budget no longer hit",
}


class ReplayForm(forms.Form):
    kind = forms.ChoiceField(choices=ReplayDraftKind.choices, label="Draft of")
    target = forms.SlugField(
        max_length=50, help_text="The policy's slug (e.g. default), or the agent's slug."
    )
    draft = forms.CharField(
        strip=False,
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
        help_text="Policy: its YAML. Agent version: the config as YAML or JSON. Grant set: "
        "the list of grants as YAML or JSON.",
    )
    starts_at = forms.DateTimeField(label="From (UTC)", help_text="e.g. 2026-01-31 09:00")
    ends_at = forms.DateTimeField(label="To (UTC)")

    def clean(self):
        data = super().clean()
        if data.get("starts_at") and data.get("ends_at") and data["ends_at"] <= data["starts_at"]:
            self.add_error("ends_at", "Must be after the start.")
        return data

    def draft_payload(self) -> dict[str, Any] | None:
        """The draft as the service takes it; None (with a form error) when unreadable."""
        kind, text = self.cleaned_data["kind"], self.cleaned_data["draft"]
        if kind == ReplayDraftKind.POLICY:
            return {"document": text}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            self.add_error("draft", f"Not valid YAML or JSON{where}.")
            return None
        return {"config": data} if kind == ReplayDraftKind.AGENT_VERSION else {"grants": data}


def _draft_errors(error: ValidationError) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """Rows ``{"path", "message"}`` for the draft's problems, and the other errors."""
    rows, other = [], {}
    for key, texts in error.message_dict.items():
        if key == "draft" or key.startswith("draft."):
            path = key.removeprefix("draft").removeprefix(".")
            rows.extend({"path": path or "(draft)", "message": text} for text in texts)
        else:
            other[key] = texts
    return rows, other


@project_page
@require_http_methods(["GET", "POST"])
def replay_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The project's replays and the form that starts one."""
    now = timezone.now().replace(second=0, microsecond=0)
    form = ReplayForm(
        initial={
            "kind": ReplayDraftKind.POLICY,
            "target": "default",
            "starts_at": now - timedelta(days=1),
            "ends_at": now,
        }
    )
    draft_errors: list[dict[str, str]] = []
    status = 200
    if request.method == "POST":
        project, _ = acting_project(request, project, role=Role.OPERATOR)
        form = ReplayForm(request.POST)
        if form.is_valid() and (draft := form.draft_payload()) is not None:
            try:
                job = replay_job_create(
                    project=project,
                    kind=form.cleaned_data["kind"],
                    target=form.cleaned_data["target"],
                    draft=draft,
                    starts_at=form.cleaned_data["starts_at"],
                    ends_at=form.cleaned_data["ends_at"],
                    actor=request.user,
                )
            except ValidationError as exc:
                draft_errors, other = _draft_errors(exc)
                for key, texts in other.items():
                    form.add_error(key if key in form.fields else None, texts)
            else:
                return redirect("replay-detail", pk=job.pk)
        status = 400
    context = {
        "project": project,
        "role": role,
        "can_start": role.includes(Role.OPERATOR),
        "jobs": ReplayJob.objects.filter(project=project).select_related("created_by")[:50],
        "form": form,
        "draft_errors": draft_errors,
    }
    return render(request, "agents/replay_list.html", context, status=status)


@project_page
@require_GET
def replay_detail(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    """One replay: progress while it runs (the partial polls), then what would change."""
    job = get_object_or_404(ReplayJob.objects.filter(project=project), pk=pk)
    running = job.status in (ReplayStatus.QUEUED, ReplayStatus.RUNNING)
    summary = (job.result or {}).get("summary", {})
    context = {
        "project": project,
        "job": job,
        "running": running,
        "summary": summary,
        "counts": [(CHANGE_LABELS[kind], summary.get(kind, 0)) for kind in CHANGE_KINDS],
        "changes": [
            {**change, "labels": [CHANGE_LABELS.get(k, k) for k in change.get("changes", [])]}
            for change in (job.result or {}).get("changes", [])
        ],
    }
    return render_page(
        request, "agents/replay_detail.html", "agents/partials/replay_status.html", context
    )
