"""UI pages for governance: the audit log (read-only). Policies: ``views_policies``; budgets and
the cost ledger: ``views_budgets``."""

from __future__ import annotations

import json

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from controlplane.htmx import render_page
from controlplane.models import Project, Role
from controlplane.shell import project_page
from governance.models import AuditEvent
from governance.selectors import audit_events_for_projects

AUDIT_PAGE_SIZE = 50


class AuditFilterForm(forms.Form):
    """GET filters of the audit page; ``before`` pages by sequence (keyset, newest first)."""

    action = forms.CharField(
        required=False,
        max_length=100,
        label="Action starts with",
        widget=forms.TextInput(attrs={"placeholder": "e.g. membership."}),
    )
    actor = forms.CharField(required=False, max_length=200, label="Actor name contains")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def filter(self, events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """Apply the valid filters; an invalid one is ignored (and shown on the form)."""
        self.is_valid()
        data = self.cleaned_data
        if data.get("action"):
            events = events.filter(action__startswith=data["action"])
        if data.get("actor"):
            events = events.filter(actor_name__icontains=data["actor"])
        if data.get("before"):
            events = events.filter(sequence__lt=data["before"])
        return events


@project_page
def audit_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Audit events of the current project, newest first, 50 at a time.

    Pages by sequence (``?before=<sequence>``) rather than by offset, so events appended
    while someone reads never shift a page and "load more" never repeats a row.
    """
    form = AuditFilterForm(request.GET)
    events = list(form.filter(audit_events_for_projects([project.pk]))[: AUDIT_PAGE_SIZE + 1])
    has_more = len(events) > AUDIT_PAGE_SIZE
    events = events[:AUDIT_PAGE_SIZE]
    context = {
        "project": project,
        "form": form,
        "rows": [
            (event, json.dumps(event.data, indent=2, sort_keys=True, default=str))
            for event in events
        ],
        "next_before": events[-1].sequence if has_more else None,
        "is_older_page": bool(form.cleaned_data.get("before")),
    }
    return render_page(
        request, "governance/audit_list.html", "governance/partials/audit_rows.html", context
    )
