"""UI pages for governance: the audit log (read-only, filtered like the API, with exports and
the chain verification) and the decision log of a run. Policies: ``views_policies``; budgets
and the cost ledger: ``views_budgets``; cost reports and performance: ``views_reports``."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.core.validators import RegexValidator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from governance.filters import AuditEventFilter
from governance.models import AuditEvent
from governance.selectors import audit_chain_verify, audit_events_for_projects, run_decision_log

AUDIT_PAGE_SIZE = 50


class AuditFilterForm(forms.Form):
    """GET filters of the audit page (the API's filters, dates in the project's time zone);
    ``before`` pages by sequence (keyset, newest first)."""

    action = forms.CharField(
        required=False,
        max_length=100,
        label="Action starts with",
        widget=forms.TextInput(attrs={"placeholder": "e.g. membership."}),
    )
    actor = forms.CharField(required=False, max_length=200, label="Actor name contains")
    agent = forms.SlugField(required=False, max_length=50, label="Agent")
    run = forms.CharField(required=False, max_length=64, label="Run id")
    trace_id = forms.CharField(required=False, max_length=32, label="Trace id")
    object = forms.CharField(
        required=False,
        max_length=170,
        label="Object (type:id)",
        validators=[RegexValidator(r"^[^:]+:.+$", "Give <object_type>:<object_id>.")],
        widget=forms.TextInput(attrs={"placeholder": "e.g. agents.agent:3"}),
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    FILTERS = ("action", "actor", "agent", "run", "trace_id", "object", "date_from", "date_to")

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    @property
    def filtered(self) -> bool:
        return any(self.data.get(name) for name in self.FILTERS)

    def api_params(self) -> dict[str, str]:
        """The valid filters as the REST API's query parameters (exports use them)."""
        if not self.is_valid():
            return {}
        data, zone = self.cleaned_data, self.project.zone
        params = {
            "action_prefix": data.get("action") or "",
            "actor_contains": data.get("actor") or "",
            "agent": data.get("agent") or "",
            "run": data.get("run") or "",
            "trace_id": data.get("trace_id") or "",
            "object": data.get("object") or "",
        }
        if data.get("date_from"):
            params["from"] = datetime.combine(data["date_from"], time.min, zone).isoformat()
        if data.get("date_to"):
            end = data["date_to"] + timedelta(days=1)
            params["to"] = datetime.combine(end, time.min, zone).isoformat()
        return {k: v for k, v in params.items() if v}

    def filter(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """Apply the valid filters through the API's ``AuditEventFilter`` (an invalid form
        matches nothing; its errors are shown in place)."""
        if not self.is_valid():
            return events.none()
        filterset = AuditEventFilter(self.api_params(), queryset=events)
        events = filterset.qs if filterset.is_valid() else events.none()
        if self.cleaned_data.get("before"):
            events = events.filter(sequence__lt=self.cleaned_data["before"])
        return events


@project_page
def audit_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Audit events of the current project, newest first, 50 at a time.

    Pages by sequence (``?before=<sequence>``) rather than by offset, so events appended
    while someone reads never shift a page and "load more" never repeats a row. The
    export links stream the same filtered events from the REST API (JSON Lines, CSV).
    """
    project, role = acting_project(request, project, role=Role.VIEWER)
    form = AuditFilterForm(request.GET, project=project)
    events = list(form.filter(audit_events_for_projects([project.pk]))[: AUDIT_PAGE_SIZE + 1])
    has_more = len(events) > AUDIT_PAGE_SIZE
    events = events[:AUDIT_PAGE_SIZE]
    query = urlencode(form.api_params())
    api = f"/api/v1/projects/{project.slug}/audit-events"
    context = {
        "project": project,
        "role": role,
        "form": form,
        "rows": [
            (event, json.dumps(event.data, indent=2, sort_keys=True, default=str))
            for event in events
        ],
        "next_before": events[-1].sequence if has_more else None,
        "is_older_page": bool(form.is_valid() and form.cleaned_data.get("before")),
        "export_jsonl": f"{api}/export/jsonl/?{query}",
        "export_csv": f"{api}/export/csv/?{query}",
        "can_verify": role.includes(Role.ADMIN),
        "run_filter": form.cleaned_data.get("run") if form.is_valid() else "",
    }
    return render_page(
        request, "governance/audit_list.html", "governance/partials/audit_rows.html", context
    )


@project_page
def audit_verify(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Walk the audit chain and show its status (admin; the chain is shared by every
    project, so this reads all events)."""
    project, role = acting_project(request, project, role=Role.ADMIN)
    result = audit_chain_verify()
    return render(
        request, "governance/partials/audit_verify.html", {"result": result, "project": project}
    )


@project_page
def decision_log(
    request: HttpRequest, run_id: str, *, project: Project, role: Role
) -> HttpResponse:
    """Every decision of one run, in order (from the audit log of the current project)."""
    project, role = acting_project(request, project, role=Role.VIEWER)
    log = run_decision_log(project=project, run_id=run_id)
    if log is None:
        raise Http404("No decisions of this run in this project.")
    context = {
        "project": project,
        "role": role,
        "log": log,
        "audit_url": reverse("audit-list") + "?" + urlencode({"run": run_id}),
    }
    return render(request, "governance/decision_log.html", context)
