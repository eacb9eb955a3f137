"""Flows: writes (keyword-only, typed, audited): flows, flow versions and activation; runs
(start, cancel, retry) are started here and moved forward by ``flows.engine``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.models import Agent, Tool
from controlplane.context import signed_in_user
from flows.definition import FlowDefinition, definition_references, load_source, parse_definition
from flows.models import Flow, FlowVersion, Run, SourceFormat, TriggerKind
from governance.services import audit_record


def definition_validate(
    *, project, source: str | dict, source_format: str = "yaml"
) -> FlowDefinition:
    """Parse and validate a definition (text in ``source_format``, or already-loaded data)
    for ``project``: the schema, the graph, the templates and CEL rules, and that every
    agent it names has an active version and every tool exists in the project. Raises one
    ``ValidationError`` with every error keyed by its path (``definition.steps.2.agent``)."""
    data = load_source(source, source_format)
    definition = parse_definition(data)
    agents, tools = definition_references(definition)
    errors: dict[str, list[str]] = {}
    if agents:
        known = set(
            Agent.objects.filter(
                project=project, slug__in=agents, active_version__isnull=False
            ).values_list("slug", flat=True)
        )
        for slug, path in agents.items():
            if slug not in known:
                errors.setdefault(f"definition.{path}", []).append(
                    f"no agent {slug!r} with an active version in this project"
                )
    if tools:
        known = set(
            Tool.objects.filter(
                project=project, name__in=tools, removed_at__isnull=True
            ).values_list("name", flat=True)
        )
        for name, path in tools.items():
            if name not in known:
                errors.setdefault(f"definition.{path}", []).append(
                    f"no tool {name!r} in this project"
                )
    if errors:
        raise ValidationError(errors)
    return definition


def _source_text(source: str | dict, source_format: str) -> str:
    if isinstance(source, str):
        return source
    import json

    return json.dumps(source, indent=2, sort_keys=False)


def _create_version(
    *, flow: Flow, source, source_format: str, actor, change_note: str
) -> FlowVersion:
    if source_format not in SourceFormat.values:
        raise ValidationError({"source_format": f"Use one of {', '.join(SourceFormat.values)}."})
    if isinstance(source, dict):
        source_format = SourceFormat.JSON
    definition = definition_validate(
        project=flow.project, source=source, source_format=source_format
    )
    number = (flow.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = FlowVersion(
        flow=flow,
        number=number,
        definition=definition.model_dump(mode="json", exclude_defaults=False),
        source=_source_text(source, source_format),
        source_format=source_format,
        change_note=change_note,
        created_by=signed_in_user(actor),
    )
    version.full_clean(exclude=["flow"])
    version.save()
    audit_record(
        action="flow.version.created",
        obj=version,
        project=flow.project,
        data={"flow": flow.slug, "version": number, "change_note": change_note},
    )
    return version


def _activate(*, flow: Flow, version: FlowVersion) -> None:
    previous = flow.active_version
    Flow.objects.filter(pk=flow.pk).update(active_version=version, updated_at=timezone.now())
    flow.active_version = version
    audit_record(
        action="flow.version.activated",
        obj=flow,
        data={
            "version": version.number,
            "previous_version": previous.number if previous else None,
        },
    )


@transaction.atomic
def flow_create(
    *,
    project,
    slug: str,
    source: str | dict,
    source_format: str = SourceFormat.YAML,
    name: str = "",
    description: str = "",
    actor=None,
) -> Flow:
    """Create a flow with version 1 from ``source`` (YAML/JSON text, or a dict) and
    activate it. Validates everything first: raises ``ValidationError`` with every error by
    path (``slug``, ``definition.steps.0.tool``...); nothing is stored then."""
    flow = Flow(
        project=project,
        slug=slug,
        name=name or slug,
        description=description,
        created_by=signed_in_user(actor),
    )
    errors: dict[str, list[str]] = {}
    try:
        flow.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        definition_validate(project=project, source=source, source_format=source_format)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    flow.save()
    audit_record(action="flow.created", obj=flow, data={"slug": slug, "name": flow.name})
    version = _create_version(
        flow=flow, source=source, source_format=source_format, actor=actor, change_note="created"
    )
    _activate(flow=flow, version=version)
    return flow


@transaction.atomic
def flow_update(*, flow: Flow, name: str | None = None, description: str | None = None) -> Flow:
    """Change a flow's name or description (the definition changes through versions)."""
    changes = {}
    if name is not None:
        changes["name"] = name
    if description is not None:
        changes["description"] = description
    for key, value in changes.items():
        setattr(flow, key, value)
    flow.full_clean()
    flow.save()
    audit_record(action="flow.updated", obj=flow, data=changes)
    return flow


@transaction.atomic
def flow_version_create(
    *,
    flow: Flow,
    source: str | dict,
    source_format: str = SourceFormat.YAML,
    actor=None,
    change_note: str = "",
    activate: bool = True,
) -> FlowVersion:
    """Create the next version of ``flow`` from ``source``; with ``activate`` it becomes
    the active version. Raises ``ValidationError`` with every error by path; nothing is
    stored and the active version stays."""
    flow = Flow.objects.select_for_update().select_related("project").get(pk=flow.pk)
    version = _create_version(
        flow=flow, source=source, source_format=source_format, actor=actor, change_note=change_note
    )
    if activate:
        _activate(flow=flow, version=version)
    return version


@transaction.atomic
def flow_version_activate(*, version: FlowVersion, actor=None) -> Flow:
    """Make ``version`` its flow's active version (a rollback when older)."""
    flow = Flow.objects.select_for_update().get(pk=version.flow_id)
    _activate(flow=flow, version=version)
    return flow


def run_start(
    *,
    flow: Flow,
    input: dict[str, Any] | None = None,  # noqa: A002 - the issue's name for it
    user=None,
    trigger: str = TriggerKind.MANUAL,
    version: FlowVersion | None = None,
) -> Run:
    """Start a run of ``flow`` (its active version, or ``version``) on ``input`` (a JSON
    object) for ``user``; ``trigger`` is a ``TriggerKind``. The Run and its first step
    runs are written, then their tasks are queued on commit. Raises ``ValidationError``
    when the flow has no active version or the input is not an object."""
    from flows import engine

    return engine.run_start(flow=flow, input=input, user=user, trigger=trigger, version=version)


def run_cancel(*, run: Run, actor=None) -> Run:
    """Cancel ``run``: pending steps never start, running ones stop at their next call
    boundary, compensations of completed steps run. No-op on a finished run."""
    from flows import engine

    return engine.run_cancel(run=run, actor=actor)


def run_retry(*, run: Run, actor=None) -> Run:
    """Retry a failed run from its failed step(s): they go back to pending with a fresh
    attempt budget; succeeded steps keep their outputs. Raises ``ValidationError`` unless
    the run failed."""
    from flows import engine

    return engine.run_retry(run=run, actor=actor)
