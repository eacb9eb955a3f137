"""UI pages of flows and runs: the flows list, a flow's page (DAG, definition editor with
inline validation, versions, start-run form, webhook, schedules), the runs list and a
run's page with live status (htmx polling), trace waterfall, step data, decisions,
approvals and costs; the inbound webhook endpoint.

Every page lives under the current project; every write checks its role with
``acting_project`` and goes through one service of ``flows.services``.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from controlplane.forms import add_service_errors
from controlplane.htmx import is_partial_request, render_page
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from flows import selectors, services
from flows.forms import (
    FlowCreateForm,
    FlowVersionForm,
    RunFilterForm,
    RunStartForm,
    ScheduleForm,
)
from flows.models import Flow, FlowSchedule, Run, RunStatus, TriggerKind

EXAMPLE_DEFINITION = """\
description: Fetch something, then summarize it.
steps:
  - id: fetch
    kind: tool
    tool: echo          # a tool of this project
    agent: operator     # whose grant governs the call
    arguments: {text: "{{ input.topic }}"}
  - id: summarize
    kind: agent
    agent: writer
    depends_on: [fetch]
    input: "Summarize: {{ steps.fetch }}"
"""
RUNS_PAGE_SIZE = 50
LIVE_POLL = "every 1s"


def _done(request: HttpRequest, url: str, notice: str) -> HttpResponse:
    """After a successful write: flash ``notice`` and go to ``url`` (POST-redirect-GET)."""
    messages.success(request, notice)
    if is_partial_request(request):
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _flow_or_404(project: Project, slug: str) -> Flow:
    return get_object_or_404(
        selectors.flows_for_project(project=project).select_related("webhook"), slug=slug
    )


def _error_rows(error: ValidationError) -> list[dict[str, Any]]:
    """A service's errors as ``[{"path", "messages"}]``, in path order."""
    if not hasattr(error, "error_dict"):
        return [{"path": "definition", "messages": error.messages}]
    return [{"path": path, "messages": msgs} for path, msgs in sorted(error.message_dict.items())]


def _form_status(request: HttpRequest, ok: bool) -> int:
    # htmx does not swap error statuses: partials with errors in place answer 200.
    return 200 if ok or is_partial_request(request) else 400


# --- Flows ------------------------------------------------------------------------------------


@project_page
def flow_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Flows of the project with their active version and last run; ``q`` searches."""
    search = request.GET.get("q", "").strip()[:100]
    flows = selectors.flows_for_list(project=project)
    if search:
        from django.db.models import Q

        flows = flows.filter(Q(slug__icontains=search) | Q(name__icontains=search))
    context = {
        "project": project,
        "role": role,
        "can_operate": role.includes(Role.OPERATOR),
        "flows": flows,
        "search": search,
    }
    return render_page(request, "flows/flow_list.html", "flows/partials/flow_table.html", context)


@project_page
@require_http_methods(["GET", "POST"])
def flow_create(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """A new flow from a definition: version 1 is made and activated. Errors are shown in
    place (by path) and the text is kept."""
    errors: list[dict[str, Any]] = []
    if request.method == "POST":
        project, role = acting_project(request, project, role=Role.OPERATOR)
        form = FlowCreateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                flow = services.flow_create(
                    project=project,
                    slug=data["slug"],
                    name=data["name"],
                    description=data["description"],
                    source=data["source"],
                    source_format=data["source_format"],
                    actor=request.user,
                )
            except ValidationError as error:
                add_service_errors(form, _only_fields(error, form))
                errors = _definition_rows(error, form)
            else:
                return _done(
                    request, reverse("flow-detail", args=[flow.slug]), f"Created flow {flow.slug}."
                )
    else:
        form = FlowCreateForm(initial={"source": EXAMPLE_DEFINITION})
    context = {"project": project, "role": role, "form": form, "definition_errors": errors}
    ok = request.method == "GET"
    return render(request, "flows/flow_create.html", context, status=_form_status(request, ok))


def _only_fields(error: ValidationError, form) -> ValidationError:
    """The part of a service error that belongs on a form field (slug, name...)."""
    if not hasattr(error, "error_dict"):
        return ValidationError({})
    return ValidationError(
        {k: v for k, v in error.message_dict.items() if k in form.fields and k != "source"}
    )


def _definition_rows(error: ValidationError, form=None) -> list[dict[str, Any]]:
    rows = _error_rows(error)
    if form is None:
        return rows
    return [row for row in rows if row["path"] not in form.fields or row["path"] == "source"]


def _flow_context(
    request: HttpRequest, project: Project, role: Role, flow: Flow, **extra: Any
) -> dict[str, Any]:
    active = flow.active_version
    webhook = getattr(flow, "webhook", None)
    context = {
        "project": project,
        "role": role,
        "can_operate": role.includes(Role.OPERATOR),
        "is_admin": role.includes(Role.ADMIN),
        "flow": flow,
        "active": active,
        "diagram": selectors.diagram(active.definition) if active else None,
        "versions": selectors.flow_versions(flow=flow),
        "editor": FlowVersionForm(
            initial={
                "source": active.source if active else EXAMPLE_DEFINITION,
                "source_format": active.source_format if active else "yaml",
                "activate": True,
            }
        ),
        "definition_errors": [],
        "start_form": RunStartForm(),
        "webhook": webhook if webhook is not None and webhook.enabled else None,
        "webhook_header_url": request.build_absolute_uri(reverse("flow-webhook", args=[flow.pk])),
        "schedules": selectors.schedules_for_flow(flow=flow),
        "schedule_form": ScheduleForm(),
        "recent_runs": selectors.runs_for_project(project=project).filter(flow=flow)[:10],
    }
    context.update(extra)
    return context


@project_page
def flow_detail(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """A flow: its DAG, the definition editor, versions, start-run form, triggers."""
    flow = _flow_or_404(project, slug)
    return render(request, "flows/flow_detail.html", _flow_context(request, project, role, flow))


@project_page
@require_POST
def flow_validate(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """Inline validation of the editor's text (any member: nothing is stored). Answers the
    errors partial; the text box is left as typed."""
    flow = _flow_or_404(project, slug)
    return _validation_result(request, project, flow=flow)


@project_page
@require_POST
def flow_validate_new(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Inline validation on the new-flow page."""
    return _validation_result(request, project, flow=None)


def _validation_result(request: HttpRequest, project: Project, *, flow: Flow | None):
    source = request.POST.get("source", "")
    source_format = request.POST.get("source_format", "yaml")
    rows: list[dict[str, Any]] = []
    diagram = None
    if source_format not in ("yaml", "json"):
        rows = [{"path": "source_format", "messages": ["Use yaml or json."]}]
    else:
        try:
            definition = services.definition_validate(
                project=project, source=source, source_format=source_format
            )
        except ValidationError as error:
            rows = _error_rows(error)
        else:
            diagram = selectors.diagram(definition)
    context = {"definition_errors": rows, "checked": True, "preview": diagram, "flow": flow}
    return render(request, "flows/partials/definition_errors.html", context)


@project_page
@require_POST
def flow_version_create(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    """Save the editor's text as the next version (operator). Invalid: nothing is stored,
    the active version stays, the errors are shown by path above the kept text."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    flow = _flow_or_404(project, slug)
    form = FlowVersionForm(request.POST)
    rows: list[dict[str, Any]] = []
    if form.is_valid():
        data = form.cleaned_data
        try:
            version = services.flow_version_create(
                flow=flow,
                source=data["source"],
                source_format=data["source_format"],
                change_note=data["change_note"],
                activate=data["activate"],
                actor=request.user,
            )
        except ValidationError as error:
            rows = _error_rows(error)
        else:
            state = "it is now active" if data["activate"] else "the active version is unchanged"
            return _done(
                request,
                reverse("flow-detail", args=[flow.slug]),
                f"Saved version {version.number} of {flow.slug}; {state}.",
            )
    context = _flow_context(request, project, role, flow, editor=form, definition_errors=rows)
    if is_partial_request(request):
        return render(request, "flows/partials/editor.html", context)
    return render(request, "flows/flow_detail.html", context, status=400)


@project_page
@require_POST
def flow_version_activate(
    request: HttpRequest, slug: str, number: int, *, project: Project, role: Role
) -> HttpResponse:
    """Make a version active (a rollback when older); confirmed in the page first."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    flow = _flow_or_404(project, slug)
    version = get_object_or_404(selectors.flow_versions(flow=flow), number=number)
    previous = flow.active_version
    services.flow_version_activate(version=version, actor=request.user)
    if previous is not None and version.number < previous.number:
        notice = f"Rolled back: version {version.number} is active again."
    else:
        notice = f"Version {version.number} is now active."
    return _done(request, reverse("flow-detail", args=[flow.slug]), notice)


@project_page
@require_POST
def flow_run_start(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    """Start a run from the dashboard (operator) and go to its page; a bad input is shown
    in place, keeping the text."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    flow = _flow_or_404(project, slug)
    form = RunStartForm(request.POST)
    if form.is_valid():
        try:
            run = services.run_start(
                flow=flow,
                input=form.cleaned_data["input"],
                user=request.user,
                trigger=TriggerKind.MANUAL,
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            return _done(request, reverse("run-detail", args=[run.pk]), f"Started run {run.pk}.")
    context = {"project": project, "flow": flow, "start_form": form}
    if is_partial_request(request):
        return render(request, "flows/partials/start_form.html", context)
    context = _flow_context(request, project, role, flow, start_form=form)
    return render(request, "flows/flow_detail.html", context, status=400)


@project_page
@require_POST
def flow_webhook_rotate(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    """Make or rotate the webhook token (admin); the token is on this answer only."""
    project, role = acting_project(request, project, role=Role.ADMIN)
    flow = _flow_or_404(project, slug)
    webhook, raw = services.flow_webhook_rotate(flow=flow, actor=request.user)
    context = {
        "flow": flow,
        "webhook": webhook,
        "token": raw,
        "token_url": request.build_absolute_uri(reverse("flow-webhook-token", args=[flow.pk, raw])),
        "webhook_header_url": request.build_absolute_uri(reverse("flow-webhook", args=[flow.pk])),
        "project": project,
        "is_admin": True,
    }
    return render(request, "flows/partials/webhook.html", context)


@project_page
@require_POST
def flow_webhook_disable(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    project, role = acting_project(request, project, role=Role.ADMIN)
    flow = _flow_or_404(project, slug)
    services.flow_webhook_disable(flow=flow, actor=request.user)
    return _done(request, reverse("flow-detail", args=[flow.slug]), "The webhook is off.")


@project_page
@require_POST
def flow_schedule_create(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    project, role = acting_project(request, project, role=Role.OPERATOR)
    flow = _flow_or_404(project, slug)
    form = ScheduleForm(request.POST)
    if form.is_valid():
        try:
            schedule = services.flow_schedule_create(
                flow=flow, actor=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            return _done(
                request,
                reverse("flow-detail", args=[flow.slug]) + "#schedules",
                f"Added schedule {schedule.name} ({schedule.every}).",
            )
    context = _flow_context(request, project, role, flow, schedule_form=form)
    return render(request, "flows/flow_detail.html", context, status=_form_status(request, False))


@project_page
@require_POST
def flow_schedule_toggle(
    request: HttpRequest, slug: str, pk: int, *, project: Project, role: Role
) -> HttpResponse:
    """Pause or resume a schedule (operator)."""
    project, role = acting_project(request, project, role=Role.OPERATOR)
    flow = _flow_or_404(project, slug)
    schedule = get_object_or_404(FlowSchedule, flow=flow, pk=pk)
    schedule = services.flow_schedule_update(
        schedule=schedule, enabled=not schedule.enabled, actor=request.user
    )
    state = "resumed" if schedule.enabled else "paused"
    return _done(
        request,
        reverse("flow-detail", args=[flow.slug]) + "#schedules",
        f"Schedule {schedule.name} {state}.",
    )


# --- Runs -------------------------------------------------------------------------------------


@project_page
def run_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """Runs of the project, newest first, filtered by status, flow, trigger, who started
    them and a time range; htmx requests get only the results table."""
    slugs = list(selectors.flows_for_project(project=project).values_list("slug", flat=True))
    form = RunFilterForm(request.GET, flows=slugs)
    form.is_valid()  # invalid values are left out and shown on the form
    data = getattr(form, "cleaned_data", {})
    runs = selectors.runs_for_project(project=project)
    if data.get("status"):
        runs = runs.filter(status=data["status"])
    if data.get("flow"):
        runs = runs.filter(flow__slug=data["flow"])
    if data.get("trigger"):
        runs = runs.filter(trigger=data["trigger"])
    if data.get("started_by"):
        runs = runs.filter(started_by__username=data["started_by"])
    if data.get("since"):
        runs = runs.filter(created_at__gte=data["since"])
    if data.get("until"):
        runs = runs.filter(created_at__lt=data["until"])
    filtered = any(
        data.get(k) for k in ("status", "flow", "trigger", "started_by", "since", "until")
    )
    rows = list(runs.order_by("-pk")[: RUNS_PAGE_SIZE + 1])
    context = {
        "project": project,
        "role": role,
        "form": form,
        "runs": rows[:RUNS_PAGE_SIZE],
        "more": len(rows) > RUNS_PAGE_SIZE,
        "filtered": filtered,
    }
    return render_page(request, "flows/run_list.html", "flows/partials/run_table.html", context)


def _run_or_404(project: Project, pk: int) -> Run:
    return get_object_or_404(selectors.runs_for_project(project=project), pk=pk)


REDACTED_CACHE_SECONDS = 30


def _redacted_step(step, project) -> tuple:
    """(input, output, error) of a step run after the PII scan. The page polls every
    second: a finished step's scan is kept for ``REDACTED_CACHE_SECONDS`` (per process,
    keyed by its last change) instead of scanning it again on every poll."""
    from django.core.cache import cache

    def scan():
        return (
            selectors.redacted(step.input, project=project),
            selectors.redacted(step.output, project=project),
            selectors.redacted(step.error, project=project) if step.error else None,
        )

    if not step.is_final:
        return scan()
    key = f"flows:redacted:{step.pk}:{step.updated_at.isoformat()}"
    cached = cache.get(key)
    if cached is None:
        cached = scan()
        cache.set(key, cached, REDACTED_CACHE_SECONDS)
    return cached


def _step_rows(run: Run, steps: list) -> list[dict[str, Any]]:
    project = run.project
    rows = []
    for step in steps:
        approvals = [
            {"id": request_id, "outcome": (step.approval_outcomes or {}).get(str(request_id))}
            for request_id in step.approval_request_ids or []
        ]
        step_input, step_output, step_error = _redacted_step(step, project)
        rows.append(
            {
                "step": step,
                "input": step_input,
                "output": step_output,
                "error": step_error,
                "approvals": approvals,
            }
        )
    return rows


def _run_context(project: Project, role: Role, run: Run) -> dict[str, Any]:
    steps = list(selectors.run_steps(run=run))
    statuses = {s.step_id: s.status for s in steps if s.item_index < 0 and not s.compensates}
    try:
        diagram = selectors.diagram(run.flow_version.definition, statuses)
    except ValidationError:
        diagram = None
    spans = list(selectors.run_spans(run=run))
    costs = list(selectors.run_costs(run=run))
    # A cost entry's step_id is the step run's id (as text); show the step's name.
    labels = {
        str(s.pk): s.step_id + (f"[{s.item_index}]" if s.item_index >= 0 else "") for s in steps
    }
    for entry in costs:
        entry.step_label = labels.get(entry.step_id, entry.step_id)
    return {
        "project": project,
        "role": role,
        "can_operate": role.includes(Role.OPERATOR),
        "run": run,
        "final": run.is_final,
        "poll": None if run.is_final else LIVE_POLL,
        "diagram": diagram,
        "steps": (rows := _step_rows(run, steps)),
        "has_approvals": any(row["approvals"] for row in rows),
        "waterfall": selectors.waterfall(spans),
        "decisions": [
            {"event": event, "data": event.data} for event in selectors.run_decisions(run=run)
        ],
        "costs": costs,
        "input": selectors.redacted(run.input, project=project),
        "output": selectors.redacted(run.output, project=project),
        "can_cancel": not run.is_final and not run.cancel_requested,
        "can_retry": run.status == RunStatus.FAILED,
        "approvals_url": reverse("approvals"),
    }


@project_page
def run_detail(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    """A run: live status (the ``run-live`` partial polls every second until the run is
    final), DAG with step statuses, trace waterfall, steps' redacted data, decisions,
    approvals and costs; cancel and retry (operator)."""
    run = _run_or_404(project, pk)
    return render_page(
        request,
        "flows/run_detail.html",
        "flows/partials/run_live.html",
        _run_context(project, role, run),
    )


@project_page
@require_GET
def run_live(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    """The live part of a run's page (polled by htmx); without ``hx-trigger`` once final."""
    run = _run_or_404(project, pk)
    return render(request, "flows/partials/run_live.html", _run_context(project, role, run))


@project_page
@require_POST
def run_cancel(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    project, role = acting_project(request, project, role=Role.OPERATOR)
    run = services.run_cancel(run=_run_or_404(project, pk), actor=request.user)
    return _after_run_action(request, project, role, run, f"Cancel requested for run {run.pk}.")


@project_page
@require_POST
def run_retry(request: HttpRequest, pk: int, *, project: Project, role: Role) -> HttpResponse:
    project, role = acting_project(request, project, role=Role.OPERATOR)
    run = _run_or_404(project, pk)
    try:
        run = services.run_retry(run=run, actor=request.user)
    except ValidationError as error:
        notice = " ".join(
            m
            for msgs in getattr(error, "message_dict", {"": error.messages}).values()
            for m in msgs
        )
        if is_partial_request(request):
            context = _run_context(project, role, _run_or_404(project, pk))
            return render(request, "flows/partials/run_live.html", {**context, "notice": notice})
        messages.error(request, notice)
        return redirect("run-detail", pk=run.pk)
    return _after_run_action(
        request, project, role, run, f"Retrying run {run.pk} from its failed steps."
    )


def _after_run_action(request, project, role, run: Run, notice: str) -> HttpResponse:
    if is_partial_request(request):
        context = _run_context(project, role, _run_or_404(project, run.pk))
        return render(request, "flows/partials/run_live.html", {**context, "notice": notice})
    messages.success(request, notice)
    return redirect("run-detail", pk=run.pk)


# --- Inbound webhook --------------------------------------------------------------------------

TOKEN_HEADER = "X-Flow-Token"  # noqa: S105 - a header name


def _quiet(response: HttpResponse) -> HttpResponse:
    # Django logs 4xx answers with the request path, which holds the presented token.
    response._has_been_logged = True
    return response


@csrf_exempt
@require_POST
def flow_webhook(request: HttpRequest, flow_ref: str, token: str = "") -> HttpResponse:
    """``POST /hooks/flows/<flow id>/<token>`` or ``POST /hooks/flows/<flow id>`` with the
    token in ``X-Flow-Token`` (or ``Authorization: Bearer``): the JSON body (an object)
    becomes the run input. 202 with the run id; no token: 401; an unknown flow, a flow
    without a webhook and a wrong token all answer the same 404; a body that is not a
    JSON object: 400 (only after the token matched)."""
    token = token or request.headers.get(TOKEN_HEADER, "")
    if not token:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not token:
        return _quiet(JsonResponse({"detail": "A webhook token is required."}, status=401))
    try:
        body = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = _NOT_JSON
    try:
        run = services.webhook_run_start(
            flow_ref=flow_ref, token=token, body=body if body is not _NOT_JSON else None
        )
    except ValidationError as error:
        detail = error.message_dict if hasattr(error, "error_dict") else error.messages
        return _quiet(JsonResponse(detail, status=400, safe=False))
    if run is None:
        return _quiet(JsonResponse({"detail": "Not found."}, status=404))
    return JsonResponse({"run": run.pk, "status": run.status, "trace_id": run.trace_id}, status=202)


_NOT_JSON = object()
