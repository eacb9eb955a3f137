"""UI pages for project policies: list, editor with inline errors, versions, diff, activate.

Everyone in the project reads policies; saving a version or activating one needs the
admin role (a policy decides what every agent of the project may do). Writes go
through ``governance.services``; an invalid document is shown again with every error in
place and nothing is saved, so the active version stays the last good one.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from controlplane.forms import add_service_errors
from controlplane.models import Project, Role
from controlplane.shell import acting_project, project_page
from governance import selectors, services
from governance.models import Policy
from governance.policies import DEFAULT_POLICY_SLUG, validate_policy_text
from governance.policy import STARTER_POLICY_TEXT


class PolicyCreateForm(forms.Form):
    slug = forms.SlugField(
        max_length=50, help_text="`default` applies to every agent that names no other policy."
    )
    description = forms.CharField(max_length=500, required=False)


class PolicyVersionForm(forms.Form):
    document = forms.CharField(
        strip=False,
        required=False,
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"}),
        help_text="YAML. Saving validates the whole document; an invalid one is not saved.",
    )
    change_note = forms.CharField(max_length=500, required=False)


def _document_errors(error: ValidationError) -> list[dict[str, str]]:
    """``[{"path", "message"}]`` from a policy ``ValidationError`` (keys ``document.<path>``)."""
    rows = []
    for key, texts in error.message_dict.items():
        path = key.removeprefix("document").removeprefix(".")
        rows.extend({"path": path or "(document)", "message": text} for text in texts)
    return rows


@project_page
@require_http_methods(["GET", "POST"])
def policy_list(request: HttpRequest, *, project: Project, role: Role) -> HttpResponse:
    """The project's policies; admins create one here."""
    form = PolicyCreateForm(initial={"slug": DEFAULT_POLICY_SLUG})
    if request.method == "POST":
        project, _ = acting_project(request, project, role=Role.ADMIN)
        form = PolicyCreateForm(request.POST)
        if form.is_valid():
            try:
                policy = services.policy_create(
                    project=project,
                    slug=form.cleaned_data["slug"],
                    description=form.cleaned_data["description"],
                    actor=request.user,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Policy {policy.slug} created: write its first version.")
                return redirect("policy-detail", slug=policy.slug)
    context = {
        "project": project,
        "role": role,
        "can_edit": role.includes(Role.ADMIN),
        "policies": selectors.policies_for_project(project),
        "form": form,
    }
    return render(request, "governance/policy_list.html", context)


def _policy_or_404(project: Project, slug: str) -> Policy:
    return get_object_or_404(selectors.policies_for_project(project), slug=slug)


@project_page
@require_http_methods(["GET", "POST"])
def policy_detail(request: HttpRequest, slug: str, *, project: Project, role: Role) -> HttpResponse:
    """The active version, the editor (saves a new version) and the version history."""
    if request.method == "POST":
        project, _ = acting_project(request, project, role=Role.ADMIN)
    policy = _policy_or_404(project, slug)
    active = policy.active_version
    form = PolicyVersionForm(
        initial={"document": active.document if active else STARTER_POLICY_TEXT}
    )
    document_errors: list[dict[str, str]] = []
    status = 200
    if request.method == "POST":
        form = PolicyVersionForm(request.POST)
        if form.is_valid():
            try:
                version = services.policy_version_create(
                    policy=policy,
                    document=form.cleaned_data["document"],
                    change_note=form.cleaned_data["change_note"],
                    actor=request.user,
                )
            except ValidationError as exc:
                document_errors = _document_errors(exc)
                if "change_note" in exc.message_dict:
                    form.add_error("change_note", exc.message_dict["change_note"])
                status = 400
            else:
                messages.success(request, f"Version {version.number} saved and active.")
                return redirect("policy-detail", slug=policy.slug)
    versions = list(policy.versions.select_related("created_by"))
    context = {
        "project": project,
        "role": role,
        "can_edit": role.includes(Role.ADMIN),
        "policy": policy,
        "active": active,
        "versions": versions,
        "form": form,
        "document_errors": document_errors,
    }
    return render(request, "governance/policy_detail.html", context, status=status)


@project_page
@require_POST
def policy_validate(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    """htmx: validate the editor's text as it is typed; renders the error list (no save)."""
    _policy_or_404(project, slug)
    errors: list[dict[str, str]] = []
    try:
        validate_policy_text(request.POST.get("document", ""))
    except ValidationError as exc:
        errors = _document_errors(exc)
    return render(
        request,
        "governance/partials/policy_errors.html",
        {"document_errors": errors, "checked": True},
    )


@project_page
def policy_diff_page(
    request: HttpRequest, slug: str, *, project: Project, role: Role
) -> HttpResponse:
    """Side by side: the unified diff of two versions' YAML and each changed setting."""
    policy = _policy_or_404(project, slug)
    numbers = {}
    errors = []
    for name in ("old", "new"):
        raw = request.GET.get(name, "")
        version = policy.versions.filter(number=int(raw)).first() if raw.isdigit() else None
        if version is None:
            errors.append(f"Choose an existing version for “{name}”.")
        numbers[name] = version
    diff = None if errors else selectors.policy_diff(numbers["old"], numbers["new"])
    context = {
        "project": project,
        "role": role,
        "policy": policy,
        "versions": list(policy.versions.all()),
        "old": numbers["old"],
        "new": numbers["new"],
        "errors": errors,
        "diff": diff,
    }
    return render(request, "governance/policy_diff.html", context, status=400 if errors else 200)


@project_page
@require_POST
def policy_version_activate(
    request: HttpRequest, slug: str, number: int, *, project: Project, role: Role
) -> HttpResponse:
    """Make a version active (a rollback when older); the button confirms first."""
    project, _ = acting_project(request, project, role=Role.ADMIN)
    policy = _policy_or_404(project, slug)
    version = get_object_or_404(policy.versions, number=number)
    previous = policy.active_version
    services.policy_activate(version=version, actor=request.user)
    if previous is not None and previous.pk == version.pk:
        notice = f"Version {number} was already active."
    elif previous is not None and number < previous.number:
        notice = f"Rolled back: version {number} is active again."
    else:
        notice = f"Version {number} is now active."
    messages.success(request, notice)
    return redirect("policy-detail", slug=policy.slug)
