"""The flow engine: moves runs forward as a state machine in the database.

The rules (see docs/architecture.md, "Flows"):

- The Run row and its step runs are written first; tasks are queued with
  ``transaction.on_commit`` and carry ids only (``flows.tasks``).
- A worker claims a pending step run with a conditional UPDATE and goes on only when
  exactly one row changed; a duplicate delivery changes nothing and returns. While it
  runs, a heartbeat thread extends its lease; ``sweep`` (beat) requeues step runs whose
  lease expired (the worker died) and pending ones whose task was lost.
- When a step finishes, one transaction (the run row locked) records it, decides what it
  unblocks (ready, skipped by a router, map slots) and queues those on commit. A result
  from a worker that lost its lease is dropped.
- Failures retry with exponential backoff and jitter (``countdown``; ``next_attempt_at``
  and every attempt's times recorded), then the fallback agent, then the run fails: the
  pending steps are cancelled, and once nothing runs, the compensations (``on_failure``)
  of the completed steps run one by one in reverse completion order.
- Cancel does the same; a running agent step stops at its next call boundary (its turn's
  ``should_stop`` reads ``Run.cancel_requested`` before each model request and tool call).
- Approvals: a parked agent turn, a tool call waiting for approval or an approval step
  leaves the step ``waiting_approval``; ``approval_decided`` queues ``step_resume`` once
  every request is final, which claims the step (conditional UPDATE) and continues it.
  The run is ``waiting_approval`` while a step of it waits and nothing of it runs or is
  queued, ``running`` otherwise (``_sync_run_status``, with the run row locked).

Side effects and idempotency: a tool step executes through the governed call path of
``agents.runtime.toolset`` inside one ``AgentTurn`` created at its first attempt and
reused by every later attempt, so the idempotency key (run, step run, turn, call) and the
cost entry's call id are the same when a step runs again after a crash. An agent step's
turn gets ``key_scope`` (run, step run): its tool calls' keys come from the scope, the
tool, the arguments and their occurrence, so a turn run again after a crash repeats them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent, AgentTurn, AgentVersion, Tool, TurnStatus
from controlplane.db import fetch_instances, get_for_update, select_clause, update_where
from flows import observability
from flows.definition import (
    ApprovalStep,
    FlowDefinition,
    MapStep,
    RouterStep,
    TemplateError,
    compile_router_rule,
    evaluate_expression,
    parse_definition,
    render_value,
)
from flows.models import (
    STEP_FINAL,
    Flow,
    FlowVersion,
    Run,
    RunStatus,
    Span,
    SpanKind,
    StepRun,
    StepStatus,
    TriggerKind,
)
from governance.services import audit_batch, audit_record

logger = logging.getLogger(__name__)

QUEUED = "queued"  # lease_owner of a pending step run whose task is in the broker
# A retry task may be delivered a little before its countdown ends (clock granularity).
EARLY_TOLERANCE = timedelta(seconds=1)


def lease_seconds() -> float:
    return float(getattr(settings, "FLOWS_LEASE_SECONDS", 60))


def _now() -> datetime:
    return timezone.now()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def new_span_id() -> str:
    return secrets.token_hex(8)


def root_span_id(run: Run) -> str:
    """The run's root span id: the second half of its trace id (never all zeros)."""
    return run.trace_id[16:]


_definitions: dict[int, tuple[datetime, FlowDefinition]] = {}


def _definition(version_id: int, created_at: datetime | None = None) -> FlowDefinition:
    # Parsed once per process per version (immutable); keyed with created_at too, since a
    # test database may reuse a primary key.
    if created_at is None:
        created_at = (
            FlowVersion.objects.filter(pk=version_id).values_list("created_at", flat=True).get()
        )
    cached = _definitions.get(version_id)
    if cached is None or cached[0] != created_at:
        version = FlowVersion.objects.only("definition").get(pk=version_id)
        cached = (created_at, parse_definition(version.definition))
        _definitions[version_id] = cached
    return cached[1]


def definition_of(run: Run) -> FlowDefinition:
    """The parsed definition of the run's flow version (cached per process: immutable)."""
    if Run.flow_version.is_cached(run):
        return _definition(run.flow_version_id, run.flow_version.created_at)
    return _definition(run.flow_version_id)


# --- queueing ------------------------------------------------------------------------------


def _queue(task_name: str, step_run_id: int, countdown: float | None = None) -> None:
    from flows import tasks

    task = getattr(tasks, task_name)
    options: dict[str, Any] = {}
    queue = getattr(settings, "FLOWS_TASK_QUEUE", "")
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    transaction.on_commit(lambda: task.apply_async(args=[step_run_id], **options))


def _dispatch(step_runs: list[StepRun], countdown: float | None = None) -> None:
    """Mark ``step_runs`` queued and queue their tasks on commit."""
    if not step_runs:
        return
    now = _now()
    StepRun.objects.filter(pk__in=[s.pk for s in step_runs]).update(
        lease_owner=QUEUED, queued_at=now, updated_at=now
    )
    for step_run in step_runs:
        step_run.lease_owner = QUEUED
        step_run.queued_at = now
        _queue("step_execute", step_run.pk, countdown)


# --- starting, cancelling, retrying --------------------------------------------------------


def _agent_version_of(project_id: int, slug: str) -> AgentVersion | None:
    agent = Agent.objects.filter(project_id=project_id, slug=slug).only("active_version").first()
    return agent.active_version if agent else None


@transaction.atomic
def run_start(
    *,
    flow: Flow,
    input: dict[str, Any] | None = None,  # noqa: A002
    user=None,
    trigger: str = TriggerKind.MANUAL,
    version: FlowVersion | None = None,
) -> Run:
    """See ``flows.services.run_start``."""
    version = version or flow.active_version
    if version is None:
        raise ValidationError({"flow": "The flow has no active version."})
    if version.flow_id != flow.pk:
        raise ValidationError({"version": "The version belongs to another flow."})
    if input is None:
        input = {}  # noqa: A001
    if not isinstance(input, dict):
        raise ValidationError({"input": "The run input must be a JSON object."})
    try:
        json.dumps(input)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"input": f"The run input must be JSON: {exc}"}) from exc
    if trigger not in TriggerKind.values:
        raise ValidationError({"trigger": f"Use one of {', '.join(TriggerKind.values)}."})
    definition = _definition(version.pk, version.created_at)
    now = _now()
    run = Run.objects.create(
        project_id=flow.project_id,
        flow=flow,
        flow_version=version,
        status=RunStatus.RUNNING,
        input=input,
        trace_id=secrets.token_hex(16),
        started_by=user if getattr(user, "pk", None) else None,
        trigger=trigger,
        started_at=now,
    )
    # Every step's agent version is fixed now: the agent's active version at run start.
    versions: dict[str, AgentVersion | None] = {}
    rows = []
    for step in definition.steps:
        slug = getattr(step, "agent", None)
        if slug and slug not in versions:
            versions[slug] = _agent_version_of(flow.project_id, slug)
        rows.append(
            StepRun(
                run=run,
                step_id=step.id,
                kind=step.kind,
                agent_version=versions.get(slug) if slug else None,
                created_at=now,
            )
        )
    StepRun.objects.bulk_create(rows)
    audit_record(
        action="flow.run.started",
        obj=run,
        project=flow.project,
        data={
            "flow": flow.slug,
            "version": version.number,
            "trigger": trigger,
            "trace_id": run.trace_id,
        },
    )
    deps = definition.dependencies()
    ready = [s.id for s in definition.steps if not deps[s.id]]
    _dispatch(list(StepRun.objects.filter(run=run, step_id__in=ready, item_index=-1)))
    return run


@transaction.atomic
def run_cancel(*, run: Run, actor=None) -> Run:
    """See ``flows.services.run_cancel``."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.is_final or run.cancel_requested:
        return run
    run.cancel_requested = True
    run.save(update_fields=["cancel_requested", "updated_at"])
    _stop_open_steps(run, reason="the run was cancelled")
    audit_record(action="flow.run.cancel_requested", obj=run, data={"trace_id": run.trace_id})
    _maybe_finish(run, definition_of(run))
    _sync_run_status(run)
    return run


@transaction.atomic
def run_retry(*, run: Run, actor=None) -> Run:
    """See ``flows.services.run_retry``."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.status != RunStatus.FAILED:
        raise ValidationError(
            {"status": f"Only a failed run can be retried; this one is {run.status}."}
        )
    if run.steps.exclude(compensates="").exists():
        raise ValidationError(
            {"status": "Compensations already undid this run's completed steps; start a new run."}
        )
    now = _now()
    reopened = []
    for step_run in run.steps.filter(status__in=[StepStatus.FAILED, StepStatus.CANCELLED]):
        step_run.attempts = [*step_run.attempts, {"status": "reset", "at": now.isoformat()}]
        step_run.status = StepStatus.PENDING
        step_run.error = ""
        step_run.error_kind = ""
        step_run.next_attempt_at = None
        step_run.lease_owner = ""
        step_run.finished_at = None
        step_run.save()
        reopened.append(step_run)
    run.status = RunStatus.RUNNING
    run.error = ""
    run.finished_at = None
    run.save(update_fields=["status", "error", "finished_at", "updated_at"])
    audit_record(
        action="flow.run.retried",
        obj=run,
        data={"steps": sorted({s.step_id for s in reopened})},
    )
    definition = definition_of(run)
    by_id = {s.step_id: s for s in run.steps.filter(item_index=-1)}
    ready = []
    for step_run in reopened:
        if step_run.parent_id is not None:
            continue  # map items are re-dispatched by their map step
        deps = definition.dependencies().get(step_run.step_id, set())
        if all(by_id[d].status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for d in deps):
            ready.append(step_run)
    _dispatch(ready)
    return run


def _sync_run_status(run: Run, *, busy: bool = False) -> None:
    """Set an active run (``run`` locked by the caller) ``waiting_approval`` while a step
    run of it waits for approval and none runs or is queued, ``running`` otherwise; a
    final run is left as it is. A map step holds no worker while its items run (no lease
    owner), so it does not count as running. ``busy``: the caller knows a step run of the
    run is queued or running (it queued one in this transaction, or counted a map's
    items), so the run is ``running`` without counting."""
    if run.is_final:
        return
    if busy:
        if run.status != RunStatus.RUNNING:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, updated_at=_now())
            run.status = RunStatus.RUNNING
        return
    busy = (Q(status=StepStatus.RUNNING) & ~Q(lease_owner="")) | Q(
        status=StepStatus.PENDING, lease_owner=QUEUED
    )
    counts = StepRun.objects.filter(run=run).aggregate(
        busy=Count("pk", filter=busy),
        waiting=Count("pk", filter=Q(status=StepStatus.WAITING_APPROVAL)),
    )
    status = (
        RunStatus.WAITING_APPROVAL
        if counts["waiting"] and not counts["busy"]
        else RunStatus.RUNNING
    )
    if run.status != status:
        Run.objects.filter(pk=run.pk).update(status=status, updated_at=_now())
        run.status = status


def _stop_open_steps(run: Run, *, reason: str) -> None:
    """Cancel what has not started: pending step runs (never start) and those waiting for
    an approval. Running ones finish their current call and are then dropped."""
    now = _now()
    stopping = run.steps.filter(
        status__in=[StepStatus.PENDING, StepStatus.WAITING_APPROVAL], compensates=""
    )
    stopped = list(stopping.values_list("pk", "kind", "approval_request_ids", "status"))
    stopping.update(status=StepStatus.CANCELLED, error=reason, finished_at=now, updated_at=now)
    observability.count_steps_final(
        run.project_id, [(kind, StepStatus.CANCELLED) for _, kind, _, _ in stopped]
    )
    _cancel_pending_approvals(
        [
            request_id
            for _, _, request_ids, status in stopped
            if status == StepStatus.WAITING_APPROVAL
            for request_id in request_ids or []
        ],
        reason=reason,
    )
    # A map step whose items are all stopped now would wait for nothing.
    for map_run in run.steps.filter(kind="map", status=StepStatus.RUNNING, parent__isnull=True):
        if not map_run.children.filter(status=StepStatus.RUNNING).exists():
            map_run.status = StepStatus.CANCELLED
            map_run.error = reason
            map_run.finished_at = now
            map_run.save(update_fields=["status", "error", "finished_at", "updated_at"])
            observability.count_steps_final(run.project_id, [(map_run.kind, map_run.status)])


def _cancel_pending_approvals(request_ids: list[int], *, reason: str) -> None:
    """Cancel the still-pending approval requests of stopped steps (through the approval
    port, after this transaction commits, so a rolled-back cancel cancels nothing)."""
    if not request_ids:
        return
    from governance.approval_port import approval_cancel

    def cancel() -> None:
        try:
            approval_cancel(request_ids, reason=reason)
        except Exception:  # noqa: BLE001 - expiry still ends them; the run is cancelled anyway
            logger.exception("flows: cancelling approval requests %s failed", request_ids)

    transaction.on_commit(cancel)


# --- executing one step --------------------------------------------------------------------


@dataclass
class Outcome:
    """What one attempt of a step ended with."""

    status: str  # succeeded / failed / waiting_approval / fanout
    output: Any = None
    error: str = ""
    error_kind: str = ""
    cost_usd: Decimal = Decimal(0)
    turn_id: int | None = None
    approval_request_ids: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    items: list[Any] | None = None
    input: Any = None  # the step's rendered input, stored with the outcome when given
    turn_update: dict[str, Any] | None = None  # fields of the AgentTurn to store with it
    # Writes of the governed call path to run in the recording transaction (a tool step's
    # execution outcome: breaker count and tool.executed audit event).
    writes: list[Callable[[], None]] = field(default_factory=list)


class _Heartbeat:
    """One thread per worker process extending the leases of the step runs it holds."""

    def __init__(self) -> None:
        self._held: dict[int, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, step_run_id: int, owner: str) -> None:
        with self._lock:
            self._held[step_run_id] = owner
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="flows-lease", daemon=True)
                self._thread.start()

    def release(self, step_run_id: int) -> None:
        with self._lock:
            self._held.pop(step_run_id, None)

    def _loop(self) -> None:
        import time

        while True:
            time.sleep(max(lease_seconds() / 3, 0.2))
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                until = _now() + timedelta(seconds=lease_seconds())
                for step_run_id, owner in held.items():
                    StepRun.objects.filter(
                        pk=step_run_id, lease_owner=owner, status=StepStatus.RUNNING
                    ).update(lease_expires_at=until)
            except Exception:  # noqa: BLE001 - a missed heartbeat only shortens the lease
                logger.exception("flows: lease heartbeat failed")
            finally:
                # This thread's own connection: closed between beats (every lease / 3).
                connection.close()


heartbeat = _Heartbeat()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# What an attempt reads with its step run, in the same query (``_load_step_run``): its run,
# the run's flow version and starting user, its agent version, agent and project. Few joins
# (a ten-table join cost PostgreSQL ~5 ms to plan at every step): the flow (named only
# when the run ends) and the model endpoint (agent steps only) load when used, the run's
# project is the agent's. Not the flow version's definition and source: parsed once per
# process from their own query (``_definition``), and long for a long flow.
_STEP_DEFERRED = ("run__flow_version__definition", "run__flow_version__source")


@cache
def _step_run_sql(vendor: str) -> tuple[str, tuple]:
    from django.contrib.auth import get_user_model

    from controlplane.models import Project

    qn = connection.ops.quote_name
    user_model = get_user_model()
    select, parts = select_clause(
        (StepRun, "s"),
        (Run, "r"),
        (FlowVersion, "fv", tuple(name.rsplit("__", 1)[1] for name in _STEP_DEFERRED)),
        (user_model, "u"),
        (AgentVersion, "v"),
        (Agent, "a"),
        (Project, "p"),
    )

    def table(model) -> str:
        return qn(model._meta.db_table)

    sql = (
        f"{select} FROM {table(StepRun)} s "  # noqa: S608 - names are ours
        f"JOIN {table(Run)} r ON r.{qn('id')} = s.{qn('run_id')} "
        f"JOIN {table(FlowVersion)} fv ON fv.{qn('id')} = r.{qn('flow_version_id')} "
        f"LEFT JOIN {table(user_model)} u ON u.{qn('id')} = r.{qn('started_by_id')} "
        f"LEFT JOIN {table(AgentVersion)} v ON v.{qn('id')} = s.{qn('agent_version_id')} "
        f"LEFT JOIN {table(Agent)} a ON a.{qn('id')} = v.{qn('agent_id')} "
        f"LEFT JOIN {table(Project)} p ON p.{qn('id')} = a.{qn('project_id')} "
        f"WHERE s.{qn('id')} = %s"
    )
    return sql, parts


def _load_step_run(step_run_id: int) -> StepRun:
    """The step run with its run, the run's flow version (not its definition and source)
    and starting user, its agent version, agent and project: one hand-written query
    (the ORM's select_related over 7 tables cost more CPU than the round trip). Raises
    ``StepRun.DoesNotExist``."""
    sql, parts = _step_run_sql(connection.vendor)
    rows = fetch_instances(sql, [step_run_id], parts)
    if not rows:
        raise StepRun.DoesNotExist(f"step run {step_run_id} does not exist")
    step_run, run, flow_version, user, version, agent, project = rows[0]
    run.flow_version = flow_version
    run.started_by = user
    step_run.run = run
    step_run.agent_version = version
    if version is not None:
        agent.project = project
        version.agent = agent
        if agent.project_id == run.project_id:
            run.project = project
    return step_run


def step_execute(*, step_run_id: int) -> None:
    """Claim step run ``step_run_id`` and run one attempt of it. Returns quietly when the
    step run is gone or not pending (a duplicate delivery, a cancelled run)."""
    now = _now()
    owner = _owner()
    # One transaction (one commit): the claim and, for a tool step, its turn row, which
    # must be durable before the call (it carries the call's idempotency key).
    with transaction.atomic():
        claimed = (
            StepRun.objects.filter(pk=step_run_id, status=StepStatus.PENDING, lease_owner=QUEUED)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + EARLY_TOLERANCE))
            .update(
                status=StepStatus.RUNNING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds()),
                attempt=F("attempt") + 1,
                started_at=Coalesce("started_at", now),
                updated_at=now,
            )
        )
        if claimed != 1:
            return
        step_run = _load_step_run(step_run_id)
        run = step_run.run
        cancelled = not step_run.compensates and (run.cancel_requested or run.is_final)
        if not cancelled:
            _prepare_tool_turn(step_run, run)
    if cancelled:
        _record(step_run, owner, Outcome("cancelled", error="the run was cancelled"), now)
        return
    heartbeat.hold(step_run.pk, owner)
    try:
        outcome = _run_attempt(step_run, run)
    except Exception as exc:  # noqa: BLE001 - a step ends failed, never half-way
        logger.exception("flows: step run %s raised", step_run_id)
        outcome = Outcome(
            "failed", error=f"{type(exc).__name__}: {str(exc)[:300]}", error_kind="error"
        )
    finally:
        heartbeat.release(step_run.pk)
    _record(step_run, owner, outcome, now)


def _prepare_tool_turn(step_run: StepRun, run: Run) -> None:
    """In the claim's transaction, for a tool step: render its arguments and find or create
    its turn (``_tool_turn``), kept on ``step_run`` for the attempt. Anything unusual (no
    agent version, a template error, arguments that are not an object) is left to the
    attempt, which renders again and fails as it always did."""
    if step_run.kind != "tool" or step_run.agent_version_id is None:
        return
    try:
        spec = _spec_of(definition_of(run), step_run)
        if getattr(spec, "kind", None) != "tool":
            return
        arguments = render_value(spec.arguments, template_context(run, step_run))
    except Exception:  # noqa: BLE001 - the attempt reports it
        return
    if isinstance(arguments, dict):
        step_run._prepared_tool = (arguments, _tool_turn(step_run, run, arguments))


def _run_attempt(step_run: StepRun, run: Run) -> Outcome:
    definition = definition_of(run)
    spec = _spec_of(definition, step_run)
    timeout = getattr(spec, "timeout_seconds", None)
    if timeout:
        return _with_timeout(lambda: _execute_kind(step_run, run, definition, spec), timeout)
    return _execute_kind(step_run, run, definition, spec)


def _with_timeout(body, timeout_seconds: float) -> Outcome:
    """Run ``body`` in a thread; past ``timeout_seconds`` the attempt fails ``timeout``
    (the thread's later result is dropped)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["outcome"] = body()
        except Exception as exc:  # noqa: BLE001
            box["outcome"] = Outcome(
                "failed", error=f"{type(exc).__name__}: {exc}", error_kind="error"
            )
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True, name="flows-step")
    thread.start()
    thread.join(timeout_seconds)
    if thread.is_alive():
        return Outcome(
            "failed", error=f"the step ran longer than {timeout_seconds:g} s", error_kind="timeout"
        )
    return box["outcome"]


def _spec_of(definition: FlowDefinition, step_run: StepRun):
    if step_run.compensates:
        original = definition.step(step_run.compensates)
        return next(c for c in original.on_failure if c.id == step_run.step_id)
    spec = definition.step(step_run.step_id)
    if step_run.parent_id is not None:
        return spec.step
    return spec


class LazySteps(dict):
    """``steps`` in templates: step id -> output, read from the database on first use."""

    def __init__(self, run: Run):
        super().__init__()
        self._run_id = run.pk

    def __missing__(self, key: str) -> Any:
        row = (
            StepRun.objects.filter(run_id=self._run_id, step_id=key, item_index=-1, compensates="")
            .values_list("status", "output")
            .first()
        )
        if row is None or row[0] not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            raise KeyError(key)
        self[key] = row[1]
        return row[1]

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # noqa: B018
        except KeyError:
            return False
        return True


def template_context(run: Run, step_run: StepRun | None = None) -> dict[str, Any]:
    context = {
        "input": run.input,
        "steps": LazySteps(run),
        "run": {"id": run.pk, "trace_id": run.trace_id},
    }
    if step_run is not None and step_run.item_index >= 0:
        context["item"] = (step_run.input or {}).get("item")
        context["index"] = step_run.item_index
    return context


def _execute_kind(step_run: StepRun, run: Run, definition: FlowDefinition, spec) -> Outcome:
    context = template_context(run, step_run)
    try:
        if isinstance(spec, MapStep):
            items = evaluate_expression(spec.over, context)
            if not isinstance(items, list | tuple):
                return Outcome(
                    "failed",
                    error=f"'over' gave {type(items).__name__}, not a list",
                    error_kind="template",
                )
            return Outcome("fanout", items=list(items))
        if isinstance(spec, RouterStep):
            return _execute_router(step_run, run, spec, context)
        if isinstance(spec, ApprovalStep):
            return _execute_approval(step_run, run, spec, context)
        if spec.kind == "agent":
            text = render_value(spec.input, context)
            return _execute_agent(step_run, run, spec, str(text))
        if spec.kind == "tool":
            prepared = getattr(step_run, "_prepared_tool", None)
            arguments = prepared[0] if prepared else render_value(spec.arguments, context)
            return _execute_tool(step_run, run, spec, arguments)
    except TemplateError as exc:
        return Outcome("failed", error=str(exc), error_kind="template")
    return Outcome("failed", error=f"unknown step kind {spec.kind!r}", error_kind="error")


def _error_kind_of_rule(rule: str) -> str:
    if rule == "model.endpoint_unavailable":
        return "model"
    if rule in ("error", "usage_limit", ""):
        return "error"
    return "policy"


def _execute_agent(step_run: StepRun, run: Run, spec, text: str) -> Outcome:
    from agents.runtime.turn import run_agent_turn

    version = step_run.agent_version
    if version is None:
        return Outcome(
            "failed", error=f"agent {spec.agent!r} had no active version", error_kind="policy"
        )
    StepRun.objects.filter(pk=step_run.pk).update(input={"text": text})
    result = run_agent_turn(
        agent_version=version,
        input=text,
        run_id=str(run.pk),
        step_id=str(step_run.pk),
        user=run.started_by,
        should_stop=_cancel_check(run.pk),
        key_scope=_key_scope(run, step_run),
    )
    return _turn_outcome(result)


def _key_scope(run: Run, step_run: StepRun) -> str:
    """The idempotency scope of an agent step's tool calls: the same at every attempt of
    the step run, so a turn run again after a crash sends the keys it sent before."""
    return f"flow-run:{run.pk}:step-run:{step_run.pk}"


def _cancel_check(run_id: int):
    """The ``should_stop`` of a step's agent turn: "the run was cancelled" once
    ``run_cancel`` marked the run (one indexed read per model request / tool call)."""

    def should_stop() -> str | None:
        requested = Run.objects.filter(pk=run_id).values_list("cancel_requested", flat=True)
        return "the run was cancelled" if requested.first() else None

    return should_stop


def _turn_outcome(result) -> Outcome:
    from agents.runtime.context import STOPPED_RULE

    base = {"cost_usd": result.cost_usd, "turn_id": result.turn_id, "events": result.events}
    if result.status == "completed":
        return Outcome("succeeded", output=result.output, **base)
    if result.status == "failed" and result.rule == STOPPED_RULE:
        return Outcome("cancelled", error=result.reason, **base)
    if result.status == "parked":
        return Outcome(
            "waiting_approval", approval_request_ids=list(result.approval_request_ids), **base
        )
    return Outcome(
        "failed",
        error=f"{result.rule}: {result.reason}" if result.rule else result.reason,
        error_kind=_error_kind_of_rule(result.rule),
        **base,
    )


TOOL_CALL_ID = "step"


def _tool_turn(step_run: StepRun, run: Run, arguments: dict) -> AgentTurn:
    """The step's ``AgentTurn``: created at the first attempt (committed before the call),
    the same one at every later attempt, so the call's idempotency key is stable. A retry
    finds it by the id its failed attempt recorded; an attempt after a worker died
    mid-call (nothing recorded) by the run and step ids the turn carries. The claim's
    transaction usually did this already (``_prepare_tool_turn``)."""
    prepared = getattr(step_run, "_prepared_tool", None)
    if prepared is not None and prepared[0] == arguments:
        return prepared[1]
    turn = None
    if step_run.turn_id:
        turn = AgentTurn.objects.filter(pk=step_run.turn_id).first()
    elif step_run.attempt > 1:
        turn = (
            AgentTurn.objects.filter(run_id=str(run.pk), step_id=str(step_run.pk))
            .order_by("pk")
            .first()
        )
    if turn is None:
        turn = AgentTurn.objects.create(
            agent_version=step_run.agent_version,
            run_id=str(run.pk),
            step_id=str(step_run.pk),
            user=run.started_by,
            input=json.dumps(arguments, default=str)[:10000],
        )
    step_run.turn_id = turn.pk
    return turn


def _tool_context(step_run: StepRun, run: Run, turn: AgentTurn):
    """The ``TurnContext`` of a tool step: as an agent turn's, with the version's grants
    (tools loaded) and the user's role read once."""
    from agents.governed import version_policy
    from agents.runtime.context import TurnContext
    from agents.runtime.turn import load_version, user_role, version_grants

    version = step_run.agent_version
    if version is None or not AgentVersion.agent.is_cached(version):
        version = load_version(step_run.agent_version_id)
    ctx = TurnContext(
        version=version,
        turn=turn,
        policy=version_policy(version),
        run_id=str(run.pk),
        step_id=str(step_run.pk),
        user=run.started_by,
    )
    ctx.grants = version_grants(version)
    ctx.user_role = user_role(version, ctx.user)
    return ctx


def _execute_tool(
    step_run: StepRun, run: Run, spec, arguments: Any, approved: dict | None = None
) -> Outcome:
    """Call the tool through ``GovernedToolset`` (decision, PII, approval, execution with
    the idempotency key, audit), as the step's agent version."""
    from pydantic_ai import ApprovalRequired, ModelRetry

    from agents.runtime.toolset import ConnectorToolset, GovernedToolset
    from governance.budgets import cost_record
    from governance.pricing import fixed_price

    if step_run.agent_version_id is None:
        return Outcome(
            "failed", error=f"agent {spec.agent!r} had no active version", error_kind="policy"
        )
    if not isinstance(arguments, dict):
        return Outcome(
            "failed", error="the arguments must render to an object", error_kind="template"
        )
    turn = _tool_turn(step_run, run, arguments)
    ctx = _tool_context(step_run, run, turn)
    grant = ctx.grants.get(spec.tool)
    tool = (
        grant.tool
        if grant is not None
        else Tool.objects.filter(project_id=run.project_id, name=spec.tool).first()
    )
    if tool is None:
        return Outcome("failed", error=f"no tool {spec.tool!r}", error_kind="policy")
    toolset = GovernedToolset(ConnectorToolset(tools={tool.name: tool}, ctx=ctx), ctx=ctx)
    if approved is not None:
        ctx.approved = {TOOL_CALL_ID: approved}
    # The execution's outcome (breaker, tool.executed) commits with the step's record.
    ctx.deferred_writes = []
    base = {
        "turn_id": turn.pk,
        "events": ctx.events,
        "input": arguments,
        "writes": ctx.deferred_writes,
    }
    try:
        output = toolset._call(tool.name, dict(arguments), TOOL_CALL_ID, approved is not None)
    except ApprovalRequired:
        turn.status = TurnStatus.PARKED
        turn.pending = ctx.pending
        turn.save(update_fields=["status", "pending", "updated_at"])
        ids = [entry["approval_request_id"] for entry in ctx.pending]
        return Outcome("waiting_approval", approval_request_ids=ids, **base)
    except ModelRetry as exc:
        return Outcome("failed", error=str(exc), error_kind="policy", **base)
    executed = [e for e in ctx.events if e["event"] == "tool.executed"]
    if not executed:
        return Outcome("failed", error=str(output), error_kind="policy", **base)
    if not executed[-1].get("ok"):
        return Outcome(
            "failed", error=executed[-1].get("error") or str(output), error_kind="tool", **base
        )
    if isinstance(output, str) and output.startswith("REFUSED"):
        return Outcome("failed", error=output, error_kind="policy", **base)
    cost = Decimal(0)
    if tool.cost_per_call_usd:
        entry = cost_record(
            call_id=ctx.call_id("tool", TOOL_CALL_ID),
            kind="tool",
            project=run.project,
            priced=fixed_price(Decimal(tool.cost_per_call_usd)),
            user=run.started_by,
            agent=ctx.version.agent,
            agent_version=ctx.version,
            tool=tool,
            run_id=str(run.pk),
            step_id=str(step_run.pk),
        )
        cost = Decimal(entry.cost_usd)
    # The turn completes in the transaction that records the step (one commit less).
    completed = {
        "status": TurnStatus.COMPLETED,
        "output": json.dumps(output, default=str)[:10000],
        "tool_calls": turn.tool_calls + 1,
    }
    return Outcome("succeeded", output=output, cost_usd=cost, turn_update=completed, **base)


def _execute_router(step_run: StepRun, run: Run, spec: RouterStep, context) -> Outcome:
    names = list(spec.branches)
    if spec.rules:
        steps = dict(
            StepRun.objects.filter(
                run=run, item_index=-1, compensates="", status=StepStatus.SUCCEEDED
            ).values_list("step_id", "output")
        )
        variables = {"input": run.input, "steps": steps, "run": context["run"]}
        for index, rule in enumerate(spec.rules):
            try:
                value = compile_router_rule(rule.when).execute(variables)
            except Exception as exc:  # noqa: BLE001 - fail closed: the step fails
                return Outcome(
                    "failed", error=f"rules.{index}.when failed: {exc}", error_kind="template"
                )
            if value is True:
                return Outcome("succeeded", output={"branch": rule.then, "rule": index})
        if spec.default:
            return Outcome("succeeded", output={"branch": spec.default, "rule": None})
        return Outcome("failed", error="no rule matched and no default branch", error_kind="output")
    text = str(render_value(spec.input, context))
    prompt = f"{text}\n\nAnswer with exactly one of these branch names: {', '.join(names)}."
    outcome = _execute_agent(step_run, run, spec, prompt)
    if outcome.status != "succeeded":
        return outcome
    answer = str(outcome.output).strip().strip(".!\"'`").strip().lower()
    chosen = [n for n in names if n.lower() == answer]
    if not chosen:
        words = set(re_words(answer))
        chosen = [n for n in names if n.lower() in words]
    if len(chosen) != 1:
        outcome.status = "failed"
        outcome.error = f"the agent answered {str(outcome.output)[:200]!r}, not one branch name"
        outcome.error_kind = "output"
        return outcome
    outcome.output = {"branch": chosen[0], "answer": str(outcome.output)[:500]}
    return outcome


def re_words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9_-]+", text)


def _execute_approval(step_run: StepRun, run: Run, spec: ApprovalStep, context) -> Outcome:
    from governance.approval_port import approval_request

    message = str(render_value(spec.message, context))
    request_id = approval_request(
        project_id=run.project_id,
        summary=message[:300],
        payload={"run_id": run.pk, "step_run_id": step_run.pk, "step": step_run.step_id},
        approver_role=spec.approver_role,
        quorum=spec.quorum,
        subject_kind="flow_step",
        requested_by_user_id=run.started_by_id,
    )
    StepRun.objects.filter(pk=step_run.pk).update(input={"message": message})
    return Outcome("waiting_approval", approval_request_ids=[request_id])


# --- recording an attempt and moving on ----------------------------------------------------


def _failures_since_reset(attempts: list[dict]) -> int:
    count = 0
    for entry in attempts:
        if entry.get("status") == "reset" or entry.get("status") == "fallback":
            count = 0
        elif entry.get("status") == "failed":
            count += 1
    return count


def retry_delay_seconds(retries, failures: int, rand: random.Random | None = None) -> float:
    """Seconds before the attempt after ``failures`` failed ones:
    ``min(max_delay_seconds, backoff_seconds * 2 ** (failures - 1))``, times a random
    factor in [0.5, 1] when ``jitter`` ("equal jitter")."""
    delay = min(retries.max_delay_seconds, retries.backoff_seconds * (2 ** max(failures - 1, 0)))
    if retries.jitter:
        delay *= 0.5 + 0.5 * (rand or random).random()
    return delay


def _record(step_run: StepRun, owner: str, outcome: Outcome, started: datetime) -> None:
    """Record one attempt's outcome and move the run forward, in one transaction: first
    the writes the attempt's governed call deferred (its execution outcome), then, if the
    step run is still ours, its new state, spans and dependents; the audit events of all
    of it are appended together at the end (one chain-head lock, taken last)."""
    loaded = step_run.run if StepRun.run.is_cached(step_run) else None
    with audit_batch():
        for write in outcome.writes:
            # Whatever happens to the step's record, what the call did is written.
            write()
        _record_locked(step_run, loaded, owner, outcome, started)


def _record_locked(step_run, loaded, owner: str, outcome: Outcome, started: datetime) -> None:
    """``_record``'s body (inside its transaction): lock the run, then write the step run
    with a conditional UPDATE (only while it still runs under ``owner``'s lease; a result
    from a worker that lost its lease is dropped), then what follows from it.

    The step run in memory is the one loaded right after the claim: while the lease was
    ours nothing else writes the fields recorded here (cancel and retry touch pending,
    waiting or final step runs; the sweep takes the lease, which the UPDATE checks; the
    heartbeat writes ``lease_expires_at``, cleared here), so no locking re-read is needed.
    A map step's fan-out creates its items before that UPDATE: it checks the lease with a
    locking read first (once per map)."""
    run = get_for_update(Run, step_run.run_id)
    if loaded is not None:
        run.flow_version = loaded.flow_version
        if Run.flow.is_cached(loaded):
            run.flow = loaded.flow
    if outcome.status == "fanout":
        # order_by(): the model's ordering would join (and lock) the run again.
        fresh = StepRun.objects.select_for_update().filter(pk=step_run.pk).order_by().first()
        if fresh is None or fresh.status != StepStatus.RUNNING or fresh.lease_owner != owner:
            logger.info("flows: step run %s lost its lease; result dropped", step_run.pk)
            return
        step_run = fresh
    definition = definition_of(run)
    now = _now()
    entry = {
        "attempt": step_run.attempt,
        "queued_at": _iso(step_run.queued_at),
        "started_at": started.isoformat(),
        "finished_at": now.isoformat(),
        "status": outcome.status,
        "agent_version": step_run.agent_version_id,
    }
    if outcome.error:
        entry.update(error=outcome.error[:1000], error_kind=outcome.error_kind)
    step_run.attempts = [*step_run.attempts, entry]
    step_run.lease_owner = ""
    step_run.lease_expires_at = None
    step_run.cost_usd = Decimal(step_run.cost_usd) + outcome.cost_usd
    if outcome.turn_id:
        step_run.turn_id = outcome.turn_id
    fields = list(_RECORDED_FIELDS)
    if outcome.input is not None:
        step_run.input = outcome.input
        fields.append("input")
    spans = _attempt_spans(run, step_run, outcome, started, now)
    changed = [step_run]
    requeue = None
    if outcome.status == "fanout":
        _start_map(run, step_run, definition, outcome.items or [], now)
        fields.append("input")
    elif outcome.status == "cancelled" or (
        not step_run.compensates and (run.cancel_requested or run.is_final)
    ):
        step_run.status = StepStatus.CANCELLED
        step_run.error = outcome.error or "the run was cancelled"
        step_run.finished_at = now
        if outcome.status == "succeeded":
            step_run.output = outcome.output
            step_run.status = StepStatus.SUCCEEDED
    elif outcome.status == "succeeded":
        step_run.status = StepStatus.SUCCEEDED
        step_run.output = outcome.output
        step_run.error = ""
        step_run.error_kind = ""
        step_run.finished_at = now
    elif outcome.status == "waiting_approval":
        step_run.status = StepStatus.WAITING_APPROVAL
        step_run.approval_request_ids = outcome.approval_request_ids
        step_run.approval_outcomes = {}
    else:
        requeue = _fail_or_retry(run, step_run, definition, outcome, now)
    values = {name: getattr(step_run, StepRun._meta.get_field(name).attname) for name in fields}
    step_run.updated_at = now
    written = update_where(
        StepRun,
        {**values, "updated_at": now},
        {"id": step_run.pk, "status": StepStatus.RUNNING, "lease_owner": owner},
    )
    if written != 1:
        logger.info("flows: step run %s lost its lease; result dropped", step_run.pk)
        return
    if requeue is not None:
        _queue("step_execute", step_run.pk, countdown=requeue)
    if outcome.turn_id and outcome.turn_update:
        AgentTurn.objects.filter(pk=outcome.turn_id).update(**outcome.turn_update, updated_at=now)
    if step_run.status in STEP_FINAL:
        observability.count_steps_final(run.project_id, [(step_run.kind, step_run.status)])
    Span.objects.bulk_create(spans)
    if outcome.cost_usd:
        Run.objects.filter(pk=run.pk).update(cost_usd=F("cost_usd") + outcome.cost_usd)
    busy = _advance(run, definition, changed)
    _sync_run_status(run, busy=busy)
    _export_on_commit(run, [s.span_id for s in spans])


# What recording an attempt may change on its step run (``_record_locked``; ``input`` too
# when the outcome carries it or a map fans out).
_RECORDED_FIELDS = (
    "attempts",
    "lease_owner",
    "lease_expires_at",
    "cost_usd",
    "turn_id",
    "span_id",
    "status",
    "output",
    "error",
    "error_kind",
    "finished_at",
    "approval_request_ids",
    "approval_outcomes",
    "next_attempt_at",
    "queued_at",
    "agent_version",
)


def _fail_or_retry(run: Run, step_run: StepRun, definition, outcome: Outcome, now) -> float | None:
    """Retry (after a backoff), fall back, or fail ``step_run``. Returns the countdown of
    the task to queue once the record is written (0: at once), None when none."""
    spec = _spec_of(definition, step_run)
    retries = getattr(spec, "retries", None)
    failures = _failures_since_reset(step_run.attempts)
    step_run.error = outcome.error
    step_run.error_kind = outcome.error_kind
    if (
        retries is not None
        and outcome.error_kind in retries.retry_on
        and failures < retries.max_attempts
    ):
        delay = retry_delay_seconds(retries, failures)
        step_run.status = StepStatus.PENDING
        step_run.next_attempt_at = now + timedelta(seconds=delay)
        step_run.lease_owner = QUEUED
        step_run.queued_at = now
        step_run.attempts[-1]["retry_in_seconds"] = round(delay, 3)
        return delay
    fallback = getattr(spec, "fallback_agent", None)
    if fallback and not any(e.get("status") == "fallback" for e in step_run.attempts):
        version = _agent_version_of(run.project_id, fallback)
        if version is not None:
            step_run.attempts = [
                *step_run.attempts,
                {"status": "fallback", "at": now.isoformat(), "agent_version": version.pk},
            ]
            step_run.agent_version = version
            step_run.status = StepStatus.PENDING
            step_run.next_attempt_at = None
            step_run.lease_owner = QUEUED
            step_run.queued_at = now
            return 0.0
    step_run.status = StepStatus.FAILED
    step_run.finished_at = now
    step_run.next_attempt_at = None
    return None


def _start_map(run: Run, step_run: StepRun, definition, items: list, now) -> None:
    """Create (or, on a retried run, reopen) the map's item step runs and fill its slots."""
    spec = definition.step(step_run.step_id)
    step_run.input = {"count": len(items)}
    if not items:
        step_run.status = StepStatus.SUCCEEDED
        step_run.output = []
        step_run.finished_at = now
        return
    version = None
    if getattr(spec.step, "agent", None):
        version = _agent_version_of(run.project_id, spec.step.agent)
    existing = {c.item_index: c for c in step_run.children.all()}
    new = [
        StepRun(
            run=run,
            step_id=step_run.step_id,
            kind=spec.step.kind,
            parent=step_run,
            item_index=index,
            input={"item": item},
            agent_version=version,
            created_at=now,
        )
        for index, item in enumerate(items)
        if index not in existing
    ]
    StepRun.objects.bulk_create(new)
    step_run.children.filter(status__in=[StepStatus.FAILED, StepStatus.CANCELLED]).update(
        status=StepStatus.PENDING, lease_owner="", next_attempt_at=None, updated_at=now
    )
    # The map step holds no worker while its items run: no lease to sweep.
    step_run.status = StepStatus.RUNNING
    step_run.lease_owner = ""
    step_run.lease_expires_at = None


# ``_child_counts`` key of the pending items not queued yet (a free map slot queues them).
WAITING = "pending-unqueued"
# ... and of the queued or running ones (a lease owner: ``QUEUED`` or a worker's).
BUSY = "leased"


def _fill_map_slots(map_run: StepRun, spec: MapStep, counts: dict[str, int]) -> bool:
    """Queue waiting items while fewer than ``max_parallel`` are in flight (``counts``:
    ``_child_counts`` of ``map_run``). True when it queued some."""
    waiting_count = counts.get(WAITING, 0)
    in_flight = (
        counts.get(StepStatus.RUNNING, 0)
        + counts.get(StepStatus.WAITING_APPROVAL, 0)
        + counts.get(StepStatus.PENDING, 0)
        - waiting_count
    )
    slots = spec.max_parallel - in_flight
    if slots > 0 and waiting_count:
        waiting = list(
            StepRun.objects.filter(
                parent=map_run, status=StepStatus.PENDING, lease_owner=""
            ).order_by("item_index")[:slots]
        )
        _dispatch(waiting)
        return bool(waiting)
    return False


def _child_counts(map_run: StepRun) -> dict[str, int]:
    """Items of ``map_run`` by status, under ``WAITING`` the pending ones not queued and
    under ``BUSY`` the queued or running ones (one query)."""
    counts: dict[str, int] = {BUSY: 0}
    rows = (
        StepRun.objects.filter(parent=map_run)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"), waiting=Count("pk", filter=Q(lease_owner="")))
    )
    for status, n, waiting in rows:
        counts[status] = n
        if status == StepStatus.PENDING:
            counts[WAITING] = waiting
        if status in (StepStatus.PENDING, StepStatus.RUNNING):
            counts[BUSY] += n - waiting
    return counts


def _map_check(run: Run, map_run: StepRun, definition, now) -> bool:
    """Fan in when every item is final; fill free slots otherwise. True when the map step
    changed status. Sets ``map_run.items_busy``: an item of it is queued or running."""
    spec = definition.step(map_run.step_id)
    counts = _child_counts(map_run)
    failed = counts.get(StepStatus.FAILED, 0)
    if failed and not run.cancel_requested:
        dropped = StepRun.objects.filter(parent=map_run, status=StepStatus.PENDING).update(
            status=StepStatus.CANCELLED,
            error="another item failed",
            finished_at=now,
            updated_at=now,
        )
        observability.count_steps_final(
            run.project_id, [(map_run.kind, StepStatus.CANCELLED)] * dropped
        )
        counts = _child_counts(map_run)
    open_items = sum(
        counts.get(s, 0)
        for s in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL)
    )
    map_run.items_busy = counts[BUSY] > 0
    if open_items:
        if not run.cancel_requested and _fill_map_slots(map_run, spec, counts):
            map_run.items_busy = True
        return False
    if failed or counts.get(StepStatus.CANCELLED, 0):
        first = (
            StepRun.objects.filter(parent=map_run, status=StepStatus.FAILED)
            .order_by("item_index")
            .first()
        )
        map_run.status = StepStatus.FAILED if failed else StepStatus.CANCELLED
        map_run.error = (
            f"item {first.item_index} failed: {first.error}" if first else "items were cancelled"
        )
        map_run.error_kind = first.error_kind if first else ""
    else:
        map_run.status = StepStatus.SUCCEEDED
        map_run.output = list(
            StepRun.objects.filter(parent=map_run)
            .order_by("item_index")
            .values_list("output", flat=True)
        )
    map_run.finished_at = now
    map_run.cost_usd = StepRun.objects.filter(parent=map_run).aggregate(c=Sum("cost_usd"))["c"] or 0
    map_run.save()
    observability.count_steps_final(run.project_id, [(map_run.kind, map_run.status)])
    return True


# Run trace id -> {step id: step run id} of its top-level step runs (created with the run,
# never re-created: ``run_start``), per process, for the few most recent runs.
_step_run_ids: dict[str, dict[str, int]] = {}


def _top_level_ids(run: Run) -> dict[str, int]:
    ids = _step_run_ids.get(run.trace_id)
    if ids is None:
        if len(_step_run_ids) >= 256:
            _step_run_ids.pop(next(iter(_step_run_ids)))
        ids = dict(
            StepRun.objects.filter(run=run, item_index=-1, compensates="")
            .order_by()
            .values_list("step_id", "pk")
        )
        _step_run_ids[run.trace_id] = ids
    return ids


def _dispatch_if_waiting(step_run_id: int, now) -> bool:
    """Queue step run ``step_run_id`` if it is pending and not queued yet: one conditional
    UPDATE (the run is locked by the caller)."""
    queued = StepRun.objects.filter(
        pk=step_run_id, status=StepStatus.PENDING, lease_owner=""
    ).update(lease_owner=QUEUED, queued_at=now, updated_at=now)
    if queued == 1:
        _queue("step_execute", step_run_id)
    return queued == 1


def _advance(run: Run, definition: FlowDefinition, changed: list[StepRun]) -> bool:
    """After ``changed`` step runs moved: fan in maps, skip or queue their dependents, and
    finish the run when nothing is left. Runs inside the recording transaction. True when
    a step run of the run is known to be queued or running afterwards (for
    ``_sync_run_status``)."""
    now = _now()
    if run.cancel_requested or run.is_final:
        if run.cancel_requested and not run.is_final:
            # A map whose last running item just stopped closes now.
            _stop_open_steps(run, reason="the run was cancelled")
        _maybe_finish(run, definition)
        return False
    work = list(changed)
    deps = definition.dependencies()
    dependents = definition.dependents()
    branch_of = definition.branch_of()
    failed = False
    dispatched = False
    open_map = False
    items_busy = False
    while work:
        step_run = work.pop()
        if step_run.parent_id is not None:
            parent = StepRun.objects.select_for_update().get(pk=step_run.parent_id)
            if parent.status == StepStatus.RUNNING:
                if _map_check(run, parent, definition, now):
                    work.append(parent)
                else:
                    open_map = True  # items still open: the run cannot finish now
                    items_busy = items_busy or parent.items_busy
            continue
        if step_run.compensates:
            continue
        if step_run.status == StepStatus.RUNNING and step_run.kind == "map":
            _map_check(run, step_run, definition, now) and work.append(step_run)
            continue
        if step_run.status == StepStatus.FAILED:
            failed = True
            continue
        if step_run.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            continue
        targets = dependents.get(step_run.step_id, [])
        if not targets:
            continue
        if (
            len(targets) == 1
            and step_run.status == StepStatus.SUCCEEDED
            and deps[targets[0]] == {step_run.step_id}
            and targets[0] not in branch_of
            and targets[0] in (ids := _top_level_ids(run))
        ):
            # Its one dependency just succeeded: ready if still waiting (a pipeline).
            if _dispatch_if_waiting(ids[targets[0]], now):
                dispatched = True
            continue
        needed = set(targets) | set().union(*(deps[t] for t in targets))
        rows = {
            s.step_id: s
            for s in StepRun.objects.filter(
                run=run, item_index=-1, compensates="", step_id__in=needed
            ).order_by()
        }
        ready = []
        for target in targets:
            row = rows[target]
            if row.status != StepStatus.PENDING or row.lease_owner:
                continue
            statuses = [rows[d].status for d in deps[target]]
            if any(s not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in statuses):
                continue
            skip = False
            if target in branch_of:
                router_id, branch = branch_of[target]
                router = rows[router_id]
                chosen = (
                    (router.output or {}).get("branch")
                    if router.status == StepStatus.SUCCEEDED
                    else None
                )
                skip = chosen != branch
            if not skip and statuses and all(s == StepStatus.SKIPPED for s in statuses):
                skip = True
            if skip:
                row.status = StepStatus.SKIPPED
                row.finished_at = now
                row.save(update_fields=["status", "finished_at", "updated_at"])
                observability.count_steps_final(run.project_id, [(row.kind, row.status)])
                work.append(row)
            else:
                ready.append(row)
        _dispatch(ready)
        dispatched = dispatched or bool(ready)
    if (dispatched or open_map) and not failed:
        return dispatched or items_busy  # the run goes on: nothing to finish
    if failed:
        run.error = run.error or "a step failed"
        _stop_open_steps(run, reason="an earlier step failed")
        Run.objects.filter(pk=run.pk).update(error=run.error)
    _maybe_finish(run, definition)
    return False


def _maybe_finish(run: Run, definition: FlowDefinition) -> None:
    """Finish the run when no step is open: succeeded (its output rendered), or, after a
    failure or a cancel, once the compensations have run, failed / cancelled."""
    if run.is_final:
        return
    steps = StepRun.objects.filter(run=run)
    open_q = Q(status__in=[StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL])
    if steps.filter(open_q, compensates="").exists():
        return
    now = _now()
    failed_or_cancelled = (
        run.cancel_requested
        or steps.filter(status=StepStatus.FAILED, item_index=-1, compensates="").exists()
    )
    if failed_or_cancelled:
        if _compensate(run, definition):
            return
        final = RunStatus.CANCELLED if run.cancel_requested else RunStatus.FAILED
        if not run.error:
            first = steps.filter(status=StepStatus.FAILED, item_index=-1, compensates="").first()
            run.error = (
                "cancelled"
                if run.cancel_requested
                else f"step {first.step_id} failed: {first.error}"
            )
        elif not run.cancel_requested:
            first = steps.filter(status=StepStatus.FAILED, item_index=-1, compensates="").first()
            if first is not None and run.error == "a step failed":
                run.error = f"step {first.step_id} failed: {first.error}"
        _finish_run(run, final, None, now)
        return
    try:
        output = _run_output(run, definition)
    except TemplateError as exc:
        run.error = f"output: {exc}"
        _finish_run(run, RunStatus.FAILED, None, now)
        return
    _finish_run(run, RunStatus.SUCCEEDED, output, now)


def _run_output(run: Run, definition: FlowDefinition) -> Any:
    context = template_context(run)
    if definition.output is not None:
        return render_value(definition.output, context)
    outputs = dict(
        StepRun.objects.filter(
            run=run, item_index=-1, compensates="", step_id__in=definition.sinks()
        ).values_list("step_id", "output")
    )
    return {step_id: outputs.get(step_id) for step_id in definition.sinks()}


def _finish_run(run: Run, status: str, output: Any, now) -> None:
    cost = (
        StepRun.objects.filter(run=run, parent__isnull=True).aggregate(c=Sum("cost_usd"))["c"] or 0
    )
    run.status = status
    run.output = output
    run.finished_at = now
    run.cost_usd = cost
    run.save(update_fields=["status", "output", "error", "finished_at", "cost_usd", "updated_at"])
    observability.count_run_final(run)
    Span.objects.get_or_create(
        trace_id=run.trace_id,
        span_id=root_span_id(run),
        defaults={
            "run": run,
            "name": f"run {run.flow.slug}",
            "kind": SpanKind.RUN,
            "start_time": run.started_at or run.created_at,
            "end_time": now,
            "status": "ok" if status == RunStatus.SUCCEEDED else "error",
            "attributes": {
                "flow": run.flow.slug,
                "flow.version": run.flow_version.number,
                "run.id": run.pk,
                "run.status": status,
                "cost_usd": str(cost),
            },
        },
    )
    audit_record(
        action=f"flow.run.{status}",
        obj=run,
        data={"trace_id": run.trace_id, "error": run.error[:500], "cost_usd": cost},
    )
    _export_on_commit(run, [root_span_id(run)])


def _compensate(run: Run, definition: FlowDefinition) -> bool:
    """Create the compensation step runs (once) and queue the next one. True while any is
    open; compensations run one at a time, the last completed step's first."""
    comps = StepRun.objects.filter(run=run).exclude(compensates="")
    if not comps.exists():
        done = (
            StepRun.objects.filter(
                run=run, item_index=-1, compensates="", status=StepStatus.SUCCEEDED
            )
            .exclude(finished_at=None)
            .order_by("-finished_at", "-pk")
        )
        rows = []
        now = _now()
        for step_run in done:
            spec = definition.step(step_run.step_id)
            for comp in spec.on_failure:
                version = _agent_version_of(run.project_id, comp.agent)
                rows.append(
                    StepRun(
                        run=run,
                        step_id=comp.id,
                        kind=comp.kind,
                        compensates=step_run.step_id,
                        agent_version=version,
                        created_at=now,
                    )
                )
        if not rows:
            return False
        for offset, row in enumerate(rows):
            # Keep the order explicit: created_at breaks ties by pk.
            row.created_at = now + timedelta(microseconds=offset)
        StepRun.objects.bulk_create(rows)
        comps = StepRun.objects.filter(run=run).exclude(compensates="")
    if comps.filter(status__in=[StepStatus.RUNNING, StepStatus.WAITING_APPROVAL]).exists():
        return True
    if comps.filter(status=StepStatus.PENDING, lease_owner=QUEUED).exists():
        return True
    following = comps.filter(status=StepStatus.PENDING).order_by("created_at", "pk").first()
    if following is None:
        return False
    _dispatch([following])
    return True


# --- approvals -----------------------------------------------------------------------------


def approval_decided(*, outcome, payload: dict, project_id: int) -> None:
    """``governance.approval_port.approval_decided`` receiver: note the outcome on the
    waiting step run; once all its requests are final, queue ``step_resume``. Tolerates
    duplicates (the resume claims the step with a conditional UPDATE)."""
    step_run_id = payload.get("step_run_id") or payload.get("step_id")
    try:
        step_run_id = int(step_run_id)
    except (TypeError, ValueError):
        return
    with transaction.atomic():
        # Only the step run is locked (of=self, no ordering join): step_resume and _record
        # lock the run first, then the step run; locking both here deadlocked with them.
        step_run = (
            StepRun.objects.select_for_update(of=("self",))
            .filter(pk=step_run_id, status=StepStatus.WAITING_APPROVAL, run__project_id=project_id)
            .order_by()
            .first()
        )
        if step_run is None or outcome.request_id not in step_run.approval_request_ids:
            return
        if str(payload.get("run_id")) != str(step_run.run_id):
            return
        seen = dict(step_run.approval_outcomes or {})
        noted = seen.get(str(outcome.request_id))
        if noted is None or noted["status"] not in _FINAL:  # a duplicate changes nothing
            seen[str(outcome.request_id)] = {
                "status": outcome.status,
                "arguments": outcome.arguments,
                "comment": outcome.comment,
            }
            StepRun.objects.filter(pk=step_run.pk).update(approval_outcomes=seen)
        outcomes = _outcomes(step_run.approval_request_ids, seen)
        if all(o["status"] in _FINAL for o in outcomes.values()) and len(outcomes) == len(
            step_run.approval_request_ids
        ):
            _queue("step_resume", step_run.pk)


_FINAL = frozenset({"approved", "rejected", "expired", "cancelled"})


def _outcomes(ids: list[int], seen: dict[str, dict]) -> dict[int, dict]:
    """The outcome of each request: from ``approval_outcomes`` (the approvals app), or,
    when no reader is registered, from the outcomes the signals carried."""
    from governance.approval_port import approval_outcomes

    try:
        read = approval_outcomes(ids)
    except ImproperlyConfigured:
        return {int(k): v for k, v in seen.items() if int(k) in ids}
    return {
        request_id: {"status": o.status, "arguments": o.arguments, "comment": o.comment}
        for request_id, o in read.items()
    }


def step_resume(*, step_run_id: int) -> None:
    """Continue a step run waiting for approval once every request is final: claim it
    (conditional UPDATE: a duplicate resume changes nothing), then finish the approval
    step, resume the parked agent turn, or run the approved tool call."""
    step_run = StepRun.objects.filter(pk=step_run_id, status=StepStatus.WAITING_APPROVAL).first()
    if step_run is None:
        return
    outcomes = _outcomes(step_run.approval_request_ids, step_run.approval_outcomes or {})
    if len(outcomes) < len(step_run.approval_request_ids) or any(
        o["status"] not in _FINAL for o in outcomes.values()
    ):
        return
    now = _now()
    owner = _owner()
    with transaction.atomic():
        # The run locked as _record locks it: the run's status follows the claim.
        locked = Run.objects.select_for_update().get(pk=step_run.run_id)
        claimed = StepRun.objects.filter(pk=step_run_id, status=StepStatus.WAITING_APPROVAL).update(
            status=StepStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds()),
            updated_at=now,
        )
        if claimed != 1:
            return
        _sync_run_status(locked)
    step_run = _load_step_run(step_run_id)
    run = step_run.run
    heartbeat.hold(step_run.pk, owner)
    try:
        outcome = _resume_attempt(step_run, run, outcomes, now)
    except Exception as exc:  # noqa: BLE001
        logger.exception("flows: resuming step run %s raised", step_run_id)
        outcome = Outcome(
            "failed", error=f"{type(exc).__name__}: {str(exc)[:300]}", error_kind="error"
        )
    finally:
        heartbeat.release(step_run.pk)
    _record(step_run, owner, outcome, now)


def _resume_attempt(step_run: StepRun, run: Run, outcomes: dict[int, dict], started) -> Outcome:
    from agents.runtime.resume import decisions_for
    from agents.runtime.turn import Resume, run_agent_turn
    from governance.approval_port import ApprovalOutcome

    definition = definition_of(run)
    spec = _spec_of(definition, step_run)
    approval_span = Span(
        run=run,
        step_run=step_run,
        trace_id=run.trace_id,
        span_id=new_span_id(),
        parent_span_id=root_span_id(run),
        name=f"approval {step_run.step_id}",
        kind=SpanKind.APPROVAL,
        start_time=step_run.updated_at,
        end_time=started,
        status="ok" if all(o["status"] == "approved" for o in outcomes.values()) else "error",
        attributes={
            "approval.request_ids": list(outcomes),
            "approval.statuses": [o["status"] for o in outcomes.values()],
        },
    )
    approval_span.save()
    if run.cancel_requested or run.is_final:
        return Outcome("cancelled", error="the run was cancelled")
    if isinstance(spec, ApprovalStep):
        ((request_id, decision),) = outcomes.items()
        if decision["status"] == "approved":
            return Outcome(
                "succeeded", output={"approved": True, "comment": decision.get("comment", "")}
            )
        return Outcome(
            "failed",
            error=f"approval {request_id} {decision['status']}: {decision.get('comment', '')}".strip(),
            error_kind="rejected",
        )
    turn = AgentTurn.objects.get(pk=step_run.turn_id)
    if spec.kind == "tool":
        entry = next(iter(turn.pending))
        decision = outcomes.get(entry["approval_request_id"], {})
        if decision.get("status") != "approved":
            return Outcome(
                "failed",
                error=f"the tool call was {decision.get('status', 'not approved')}: {decision.get('comment', '')}",
                error_kind="rejected",
                turn_id=turn.pk,
            )
        arguments = decision.get("arguments") or entry["arguments"]
        return _execute_tool(step_run, run, spec, arguments, approved=entry)
    read = {
        request_id: ApprovalOutcome(
            request_id=request_id,
            status=o["status"],
            arguments=o.get("arguments"),
            comment=o.get("comment") or "",
        )
        for request_id, o in outcomes.items()
    }
    decisions = decisions_for(read, turn.pending)
    try:
        result = run_agent_turn(
            agent_version=None,
            resume=Resume(turn_id=turn.pk, decisions=decisions),
            should_stop=_cancel_check(run.pk),
            key_scope=_key_scope(run, step_run),
        )
    except ValueError as exc:
        return Outcome("failed", error=str(exc), error_kind="error", turn_id=turn.pk)
    outcome = _turn_outcome(result)
    if isinstance(spec, RouterStep) and outcome.status == "succeeded":
        names = list(spec.branches)
        answer = str(outcome.output).strip().strip(".").lower()
        chosen = [n for n in names if n.lower() == answer]
        if len(chosen) != 1:
            return Outcome("failed", error=f"the agent answered {answer!r}", error_kind="output")
        outcome.output = {"branch": chosen[0]}
    return outcome


# --- sweeping ------------------------------------------------------------------------------


def sweep(*, lost_after_seconds: float | None = None) -> dict[str, int]:
    """Requeue step runs whose lease expired (their worker died) and pending ones whose
    task was queued more than ``lost_after_seconds`` (default: the lease) ago and never
    claimed (lost message), and resume waiting step runs whose approval requests are all
    final (a missed ``approval_decided``; only when ``approval_outcomes`` can answer).
    Returns ``{"expired": n, "lost": m, "resumed": k}``."""
    now = _now()
    lost_after = timedelta(
        seconds=lost_after_seconds if lost_after_seconds is not None else lease_seconds()
    )
    expired = 0
    for step_run in StepRun.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now):
        with transaction.atomic():
            entry = {
                "attempt": step_run.attempt,
                "started_at": _iso(step_run.started_at),
                "finished_at": now.isoformat(),
                "status": "lease_expired",
                "error": f"the worker {step_run.lease_owner} stopped renewing its lease",
            }
            changed = StepRun.objects.filter(
                pk=step_run.pk, status=StepStatus.RUNNING, lease_owner=step_run.lease_owner
            ).update(
                status=StepStatus.PENDING,
                lease_owner=QUEUED,
                lease_expires_at=None,
                queued_at=now,
                next_attempt_at=None,
                attempts=[*step_run.attempts, entry],
                updated_at=now,
            )
            if changed == 1:
                expired += 1
                _queue("step_execute", step_run.pk)
    lost = 0
    stale = StepRun.objects.filter(
        status=StepStatus.PENDING, lease_owner=QUEUED, queued_at__lt=now - lost_after
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=now - lost_after))
    for step_run in stale.exclude(
        run__status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED]
    ):
        with transaction.atomic():
            if StepRun.objects.filter(
                pk=step_run.pk, status=StepStatus.PENDING, queued_at=step_run.queued_at
            ).update(queued_at=now, updated_at=now):
                lost += 1
                _queue("step_execute", step_run.pk)
    # Steps waiting for approvals that are all decided (a signal was missed): resumed
    # when the approvals app can be asked (approval_outcomes).
    resumed = 0
    from governance.approval_port import approval_outcomes

    waiting = StepRun.objects.filter(status=StepStatus.WAITING_APPROVAL).exclude(
        approval_request_ids=[]
    )
    for step_run in waiting.only("pk", "approval_request_ids")[:500]:
        try:
            read = approval_outcomes(step_run.approval_request_ids)
        except ImproperlyConfigured:
            break
        if len(read) == len(step_run.approval_request_ids) and all(o.final for o in read.values()):
            resumed += 1
            _queue("step_resume", step_run.pk)
    return {"expired": expired, "lost": lost, "resumed": resumed}


# --- spans ---------------------------------------------------------------------------------


def _attempt_spans(run: Run, step_run: StepRun, outcome: Outcome, started, ended) -> list[Span]:
    """The attempt's step span and, under it, its model and tool call spans from the
    turn's events. Events carry durations but no start times: calls are laid out one
    after the other from the attempt's start."""
    span_id = new_span_id()
    step_run.span_id = step_run.span_id or span_id
    parent = root_span_id(run)
    if step_run.parent_id is not None:
        parent = _map_span_id(run, step_run.parent_id) or parent
    label = step_run.step_id + (f"[{step_run.item_index}]" if step_run.item_index >= 0 else "")
    spans = [
        Span(
            run=run,
            step_run=step_run,
            trace_id=run.trace_id,
            span_id=span_id,
            parent_span_id=parent,
            name=f"step {label}",
            kind=SpanKind.STEP,
            start_time=started,
            end_time=ended,
            status="error" if outcome.status == "failed" else "ok",
            attributes={
                "step.id": step_run.step_id,
                "step.kind": step_run.kind,
                "step.attempt": step_run.attempt,
                "step.item_index": step_run.item_index,
                "step.outcome": outcome.status,
                "step.compensates": step_run.compensates,
                "error": outcome.error[:300],
                "cost_usd": str(outcome.cost_usd),
                "agent_version_id": step_run.agent_version_id or 0,
                "turn_id": outcome.turn_id or 0,
            },
        )
    ]
    cursor = started
    for event in outcome.events:
        name = event.get("event")
        if name == "model.call":
            duration = timedelta(milliseconds=float(event.get("latency_ms") or 0))
            spans.append(
                Span(
                    run=run,
                    step_run=step_run,
                    trace_id=run.trace_id,
                    span_id=new_span_id(),
                    parent_span_id=span_id,
                    name=f"model {event.get('model', '')}",
                    kind=SpanKind.MODEL,
                    start_time=cursor,
                    end_time=min(cursor + duration, ended),
                    attributes={
                        "gen_ai.request.model": event.get("model", ""),
                        "endpoint": event.get("endpoint", ""),
                        "call_id": event.get("call_id", ""),
                        "gen_ai.usage.input_tokens": (event.get("usage") or {}).get("input", 0),
                        "gen_ai.usage.output_tokens": (event.get("usage") or {}).get("output", 0),
                        "cost_usd": str(event.get("cost_usd", "")),
                        "tool_calls": ",".join(event.get("tool_calls") or []),
                    },
                )
            )
            cursor = min(cursor + duration, ended)
        elif name == "tool.executed":
            duration = timedelta(milliseconds=float(event.get("duration_ms") or 0))
            spans.append(
                Span(
                    run=run,
                    step_run=step_run,
                    trace_id=run.trace_id,
                    span_id=new_span_id(),
                    parent_span_id=span_id,
                    name=f"tool {event.get('tool', '')}",
                    kind=SpanKind.TOOL,
                    start_time=cursor,
                    end_time=min(cursor + duration, ended),
                    status="ok" if event.get("ok") else "error",
                    attributes={
                        "tool.name": event.get("tool", ""),
                        "tool.call_id": event.get("tool_call_id", ""),
                        "error": (event.get("error") or "")[:300],
                    },
                )
            )
            cursor = min(cursor + duration, ended)
    return spans


# (run trace id, map step run id) -> the map step's span id, per process: set when the map
# fans out, before its items exist, and never changed after.
_map_span_ids: dict[tuple[str, int], str] = {}


def _map_span_id(run: Run, map_run_id: int) -> str:
    key = (run.trace_id, map_run_id)
    span_id = _map_span_ids.get(key)
    if span_id is None:
        span_id = (
            StepRun.objects.filter(pk=map_run_id)
            .order_by()
            .values_list("span_id", flat=True)
            .first()
        )
        if not span_id:
            return ""
        if len(_map_span_ids) >= 1024:
            _map_span_ids.pop(next(iter(_map_span_ids)))
        _map_span_ids[key] = span_id
    return span_id


def _export_on_commit(run: Run, span_ids: list[str]) -> None:
    if not span_ids or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from flows.tracing import export_spans

    trace_id = run.trace_id
    transaction.on_commit(lambda: export_spans(trace_id=trace_id, span_ids=span_ids))
