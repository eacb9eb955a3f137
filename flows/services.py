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
from flows.models import (
    Flow,
    FlowSchedule,
    FlowVersion,
    FlowWebhook,
    Run,
    ScheduleKind,
    SourceFormat,
    TriggerKind,
)
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


RESERVED_FLOW_SLUGS = frozenset({"new", "validate"})


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
    if slug in RESERVED_FLOW_SLUGS:  # fixed paths of the pages and the API
        errors.setdefault("slug", []).append(f"{slug!r} is reserved; choose another slug.")
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


# --- Triggers: webhook tokens and schedules -----------------------------------------------

WEBHOOK_TOKEN_PREFIX = "fwh"  # noqa: S105 - a label, not a secret


def webhook_token_digest(raw: str) -> str:
    """SHA-256 hex digest of a webhook token (what is stored and compared)."""
    import hashlib

    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def flow_webhook_rotate(*, flow: Flow, actor=None) -> tuple[FlowWebhook, str]:
    """Make (or replace) the flow's webhook token and enable the webhook. Returns the
    webhook and the token, ``fwh_<prefix>_<secret>``, in plain text: shown once, only
    its SHA-256 digest is stored. The previous token stops working at once."""
    import secrets

    prefix = secrets.token_hex(4)
    raw = f"{WEBHOOK_TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    webhook, created = FlowWebhook.objects.select_for_update().get_or_create(
        flow=flow,
        defaults={
            "prefix": prefix,
            "digest": webhook_token_digest(raw),
            "created_by": signed_in_user(actor),
            "rotated_at": now,
        },
    )
    if not created:
        webhook.prefix = prefix
        webhook.digest = webhook_token_digest(raw)
        webhook.enabled = True
        webhook.rotated_at = now
        webhook.save(update_fields=["prefix", "digest", "enabled", "rotated_at"])
    audit_record(
        action="flow.webhook.created" if created else "flow.webhook.rotated",
        obj=flow,
        data={"prefix": prefix},
    )
    return webhook, raw


@transaction.atomic
def flow_webhook_disable(*, flow: Flow, actor=None) -> None:
    """Turn the flow's webhook off (its token is forgotten: rotating makes a new one).
    No-op without a webhook."""
    deleted, _ = FlowWebhook.objects.filter(flow=flow).delete()
    if deleted:
        audit_record(action="flow.webhook.disabled", obj=flow, data={})


def webhook_run_start(*, flow_ref: str, token: str, body: Any) -> Run | None:
    """Start a run from an inbound webhook call: ``flow_ref`` is the flow's id, ``token``
    the presented token, ``body`` the parsed JSON body (the run input; must be an
    object). Returns ``None`` when the flow does not exist, has no enabled webhook or the
    token does not match (the caller answers the same 404 for all three); the refusal
    is audited as ``flow.webhook.refused`` with its reason, never the token. Raises
    ``ValidationError`` for a body that is not a JSON object (after the token check)."""
    import hmac

    flow = (
        Flow.objects.select_related("project", "webhook").filter(pk=int(flow_ref)).first()
        if flow_ref.isdigit() and len(flow_ref) < 19  # beyond a bigint: no such flow
        else None
    )
    webhook = getattr(flow, "webhook", None) if flow is not None else None
    presented = webhook_token_digest(token or "")
    if webhook is None or not webhook.enabled or not hmac.compare_digest(presented, webhook.digest):
        reason = (
            "no such flow"
            if flow is None
            else "the flow has no enabled webhook"
            if webhook is None or not webhook.enabled
            else "the token does not match"
        )
        audit_record(
            action="flow.webhook.refused",
            project=flow.project if flow is not None else None,
            object_type="flows.flow",
            object_id=str(flow.pk) if flow is not None else flow_ref[:64],
            data={"reason": reason},
        )
        return None
    if not isinstance(body, dict):
        raise ValidationError({"input": "The webhook body must be a JSON object."})
    FlowWebhook.objects.filter(pk=webhook.pk).update(last_used_at=timezone.now())
    return run_start(flow=flow, input=body, user=None, trigger=TriggerKind.WEBHOOK)


SCHEDULE_TASK = "flows.tasks.schedule_fire"


def _check_cron(cron: str) -> str:
    from celery.schedules import crontab

    fields = cron.split()
    if len(fields) != 5:
        raise ValidationError(
            {"cron": "Use 5 fields: minute hour day-of-month month day-of-week (UTC)."}
        )
    try:
        crontab(*fields)
    except (ValueError, TypeError) as exc:
        raise ValidationError({"cron": f"Not a cron expression: {exc}"}) from exc
    return " ".join(fields)


def _schedule_clean(
    *,
    kind: str,
    cron: str,
    interval_seconds: int | None,
    input: Any,  # noqa: A002
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    if kind not in ScheduleKind.values:
        errors["kind"] = [f"Use one of {', '.join(ScheduleKind.values)}."]
    if kind == ScheduleKind.CRON:
        try:
            cron = _check_cron(cron or "")
        except ValidationError as exc:
            errors.update(exc.message_dict)
        interval_seconds = None
    elif kind == ScheduleKind.INTERVAL:
        if interval_seconds is None or interval_seconds < 10:
            errors["interval_seconds"] = ["Give a whole number of seconds, at least 10."]
        cron = ""
    if not isinstance(input, dict):
        errors["input"] = ["The run input must be a JSON object."]
    if errors:
        raise ValidationError(errors)
    return {"kind": kind, "cron": cron, "interval_seconds": interval_seconds, "input": input}


def _sync_periodic_task(schedule: FlowSchedule) -> None:
    """Create or update the django-celery-beat row that fires ``schedule``."""
    import json

    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    fields: dict[str, Any] = {"crontab": None, "interval": None}
    if schedule.kind == ScheduleKind.CRON:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split()
        fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone="UTC",
        )
    else:
        fields["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=schedule.interval_seconds, period=IntervalSchedule.SECONDS
        )
    values = {
        "name": f"flows.schedule.{schedule.pk}",
        "task": SCHEDULE_TASK,
        "args": json.dumps([schedule.pk]),
        "enabled": schedule.enabled,
        **fields,
    }
    if schedule.periodic_task_id:
        PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(**values)
        # .update() skips the change signal the database scheduler watches.
        from django_celery_beat.models import PeriodicTasks

        PeriodicTasks.update_changed()
    else:
        schedule.periodic_task = PeriodicTask.objects.create(**values)
        schedule.save(update_fields=["periodic_task"])


@transaction.atomic
def flow_schedule_create(
    *,
    flow: Flow,
    name: str,
    kind: str,
    cron: str = "",
    interval_seconds: int | None = None,
    input: dict[str, Any] | None = None,  # noqa: A002
    enabled: bool = True,
    actor=None,
) -> FlowSchedule:
    """A schedule that starts runs of ``flow`` with ``input``: ``kind`` ``cron`` (5 fields,
    UTC) or ``interval`` (``interval_seconds`` >= 10). Raises ``ValidationError`` keyed by
    field (``cron``, ``interval_seconds``, ``input``, ``name``)."""
    data = _schedule_clean(
        kind=kind, cron=cron, interval_seconds=interval_seconds, input=input or {}
    )
    schedule = FlowSchedule(
        flow=flow, name=name, enabled=enabled, created_by=signed_in_user(actor), **data
    )
    schedule.full_clean(exclude=["flow", "periodic_task"])
    if FlowSchedule.objects.filter(flow=flow, name=name).exists():
        raise ValidationError({"name": f"{flow.slug} already has a schedule named {name!r}."})
    schedule.save()
    _sync_periodic_task(schedule)
    audit_record(
        action="flow.schedule.created",
        obj=schedule,
        project=flow.project,
        data={"flow": flow.slug, "name": name, "every": schedule.every, "enabled": enabled},
    )
    return schedule


@transaction.atomic
def flow_schedule_update(
    *,
    schedule: FlowSchedule,
    kind: str | None = None,
    cron: str | None = None,
    interval_seconds: int | None = None,
    input: dict[str, Any] | None = None,  # noqa: A002
    enabled: bool | None = None,
    actor=None,
) -> FlowSchedule:
    """Change a schedule's timer, input or ``enabled`` (a disabled one starts nothing).
    Raises ``ValidationError`` keyed by field."""
    schedule = (
        FlowSchedule.objects.select_for_update().select_related("flow__project").get(pk=schedule.pk)
    )
    data = _schedule_clean(
        kind=kind if kind is not None else schedule.kind,
        cron=cron if cron is not None else schedule.cron,
        interval_seconds=(
            interval_seconds if interval_seconds is not None else schedule.interval_seconds
        ),
        input=input if input is not None else schedule.input,
    )
    for key, value in data.items():
        setattr(schedule, key, value)
    if enabled is not None:
        schedule.enabled = enabled
    schedule.save()
    _sync_periodic_task(schedule)
    audit_record(
        action="flow.schedule.updated",
        obj=schedule,
        project=schedule.flow.project,
        data={"every": schedule.every, "enabled": schedule.enabled},
    )
    return schedule


@transaction.atomic
def flow_schedule_delete(*, schedule: FlowSchedule, actor=None) -> None:
    """Delete a schedule and its beat entry."""
    from django_celery_beat.models import PeriodicTask

    project = schedule.flow.project
    data = {"flow": schedule.flow.slug, "name": schedule.name}
    audit_record(action="flow.schedule.deleted", obj=schedule, project=project, data=data)
    task_id = schedule.periodic_task_id
    schedule.delete()
    if task_id:
        PeriodicTask.objects.filter(pk=task_id).delete()


def flow_schedule_fire(*, schedule_id: int) -> Run | None:
    """Start a run for schedule ``schedule_id`` (called by beat through
    ``flows.tasks.schedule_fire``). Returns ``None`` when the schedule is gone or
    disabled; a flow without an active version is refused and audited."""
    schedule = FlowSchedule.objects.select_related("flow__project").filter(pk=schedule_id).first()
    if schedule is None or not schedule.enabled:
        return None
    try:
        run = run_start(
            flow=schedule.flow, input=schedule.input, user=None, trigger=TriggerKind.SCHEDULE
        )
    except ValidationError as exc:
        audit_record(
            action="flow.schedule.failed",
            obj=schedule,
            project=schedule.flow.project,
            data={"errors": exc.message_dict if hasattr(exc, "error_dict") else exc.messages},
        )
        return None
    FlowSchedule.objects.filter(pk=schedule.pk).update(last_run_at=run.created_at, last_run=run)
    return run
