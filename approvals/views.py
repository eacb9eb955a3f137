"""UI pages for approvals: the inbox (pending and decided tabs, filters, the live nav
badge), a request's detail with everything needed to decide, the decision (Approve, Edit &
approve with a JSON editor checked against the tool's schema, Reject with a comment) and
the project's approval settings (admins).

Every rule is ``approvals.services.approval_decide``'s; these views parse input and show
its errors in place.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from approvals import selectors
from approvals.forms import ApprovalSettingsForm, DecisionForm
from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.services import (
    ApprovalNotPending,
    approval_decide,
    approval_settings_update,
    validate_edited_arguments,
)
from controlplane.forms import add_service_errors
from controlplane.htmx import is_partial_request, render_page
from controlplane.models import Project, Role
from controlplane.permissions import membership_role
from controlplane.shell import acting_project, project_page

APPROVALS_PAGE_SIZE = 50
FILTERS = ("agent", "run", "risk", "age")


def _pretty(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) if value is not None else ""


@project_page
@require_GET
def approval_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The inbox of the current project: ``?tab=pending`` (oldest first) or ``decided``,
    filtered by agent, run, risk and age; an htmx refresh also updates the nav badge."""
    tab = "decided" if request.GET.get("tab") == "decided" else "pending"
    filters = {name: request.GET.get(name, "").strip() for name in FILTERS}
    qs = selectors.inbox_requests(project=project, tab=tab, **filters)
    page = Paginator(qs, APPROVALS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "project": project,
        "page": page,
        "tab": tab,
        "filters": filters,
        "choices": selectors.inbox_filter_choices(project),
        "any_request": ApprovalRequest.objects.filter(project=project).exists(),
        "can_configure": role.includes(Role.ADMIN),
    }
    return render_page(
        request, "approvals/approval_list.html", "approvals/partials/approval_list.html", context
    )


@project_page
@require_GET
def approval_badge(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The nav badge alone (the badge polls it)."""
    count = selectors.pending_approval_count(project=project)
    return render(request, "partials/approvals_badge.html", {"count": count})


def _detail_context(request: HttpRequest, approval: ApprovalRequest, role: Role, form=None):
    decisions = selectors.approval_decisions(approval)
    for decision in decisions:
        decision.arguments_json = json.dumps(decision.arguments) if decision.arguments else ""
    user = request.user
    mine = next((d for d in decisions if d.approver_id == user.pk), None)
    own_run = approval.requested_by_id is not None and approval.requested_by_id == user.pk
    blocked = ""
    if approval.status != ApprovalStatus.PENDING:
        blocked = f"This request is {approval.get_status_display().lower()}."
    elif not role.includes(approval.approver_role):
        blocked = f"Deciding this request needs the {approval.approver_role} role."
    elif own_run and not (
        role == Role.ADMIN
        and selectors.approval_settings_for(approval.project).allow_admin_self_approval
    ):
        blocked = "You started this run, so you cannot decide its approval requests."
    elif mine is not None:
        blocked = f"You already decided: {mine.verdict}."
    turn_state = selectors.turn_state(approval)
    return {
        "project": approval.project,
        "approval": approval,
        "decisions": decisions,
        "approvals_so_far": sum(1 for d in decisions if d.verdict == "approve"),
        "trace": selectors.run_trace(approval),
        "turn_state": turn_state,
        "watch_turn": approval.is_final and turn_state in ("parked", "running"),
        "cost_usd": selectors.run_cost_usd(approval),
        "arguments_json": _pretty(approval.display_arguments),
        "final_arguments_json": _pretty(approval.final_arguments),
        "schema_json": _pretty(approval.input_schema),
        "can_edit": approval.subject_kind == "tool_call" and approval.input_schema is not None,
        "blocked": blocked,
        "form": form or DecisionForm(initial={"arguments": _pretty(approval.display_arguments)}),
    }


def _approval_or_404(project: Project, pk: int) -> ApprovalRequest:
    return get_object_or_404(
        ApprovalRequest.objects.select_related(
            "project", "decided_by", "requested_by", "policy_version__policy"
        ),
        project=project,
        pk=pk,
    )


@project_page
@require_GET
def approval_detail(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    """One request: the proposed call, the rule and policy version that required it, the
    run's cost and trace so far, earlier decisions, and the decision forms."""
    approval = _approval_or_404(project, pk)
    return render_page(
        request,
        "approvals/approval_detail.html",
        "approvals/partials/approval_detail.html",
        _detail_context(request, approval, role),
    )


@project_page
@require_POST
def approval_decide_view(
    request: HttpRequest, pk: int, *, project: Project, role: Role
) -> HttpResponse:
    """Approve, edit & approve, or reject. Errors (invalid JSON, schema errors, already
    decided, self-approval) are shown in place; success shows the decided request."""
    approval = _approval_or_404(project, pk)
    project, role = acting_project(request, project, role=Role(approval.approver_role))
    approval = _approval_or_404(project, pk)
    form = DecisionForm(request.POST)
    status = 200
    if form.is_valid():
        action = form.cleaned_data["action"]
        try:
            approval = approval_decide(
                request_id=approval.pk,
                user=request.user,
                verdict="reject" if action == "reject" else "approve",
                comment=form.cleaned_data["comment"],
                arguments=form.cleaned_data.get("parsed_arguments") if action == "edit" else None,
            )
        except ApprovalNotPending as exc:
            messages.error(request, exc.message_dict["status"][0])
            status = 409
        except PermissionDenied as exc:
            messages.error(request, str(exc))
            status = 403
        except ValidationError as exc:
            add_service_errors(form, exc)
            status = 400
        else:
            verb = "Approved with edits" if action == "edit" else approval.get_status_display()
            if approval.status == ApprovalStatus.PENDING:
                verb = "Your approval is recorded; more approvers are needed"
            messages.success(request, f"{verb}: {approval.summary}.")
            if not is_partial_request(request):
                return redirect("approval-detail", pk=approval.pk)
            form = None
    else:
        status = 400
    approval = _approval_or_404(project, pk)
    if is_partial_request(request):
        status = 200  # htmx swaps only 2xx answers; the errors are in the partial
    return render_page(
        request,
        "approvals/approval_detail.html",
        "approvals/partials/approval_detail.html",
        _detail_context(request, approval, role, form),
        status=status,
    )


@project_page
@require_POST
def approval_check_arguments(
    request: HttpRequest, pk: int, *, project: Project, role: Role
) -> HttpResponse:
    """The JSON editor's live check: the edited arguments against the tool's schema."""
    approval = _approval_or_404(project, pk)
    errors: list[str] = []
    try:
        parsed = json.loads(request.POST.get("arguments") or "")
        validate_edited_arguments(approval, parsed)
    except json.JSONDecodeError as exc:
        errors = [f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
    except ValidationError as exc:
        errors = exc.message_dict.get("arguments", exc.messages)
    return render(request, "approvals/partials/argument_check.html", {"errors": errors})


@project_page
@require_http_methods(["GET", "POST"])
def approval_settings(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The project's approval settings: expiry, escalation SLA, admin self-approval,
    notification emails and webhook. Everyone reads them; admins change them."""
    settings = selectors.approval_settings_for(project)
    form = ApprovalSettingsForm(instance=settings)
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.ADMIN)
        settings = selectors.approval_settings_for(project)
        form = ApprovalSettingsForm(request.POST, instance=settings)
        if form.is_valid():
            data = form.cleaned_data
            webhook = "" if data["remove_webhook"] else (data["webhook_url"] or None)
            try:
                approval_settings_update(
                    project=project,
                    changes={f: data[f] for f in ApprovalSettingsForm.Meta.fields},
                    webhook_url=webhook,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, "Approval settings saved.")
                return redirect("approvals-settings")
    context = {
        "project": project,
        "form": form,
        "settings": settings,
        "can_edit": (membership_role(request.user, project) or Role.VIEWER).includes(Role.ADMIN),
    }
    return render(
        request,
        "approvals/approval_settings.html",
        context,
        status=400 if form.errors else 200,
    )
