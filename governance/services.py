"""Governance writes. For now: appending to the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from controlplane.context import Actor, current_actor, current_request_id, current_trace_id
from governance.audit_chain import event_hash, mask_secrets, to_json_data
from governance.metrics import observe_audit_event
from governance.models import AuditChainHead, AuditEvent

ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


# Events waiting to be appended by the innermost open ``audit_batch`` (None: no batch).
_batch: ContextVar[list[AuditEvent] | None] = ContextVar("audit_batch", default=None)


class AuditChainBrokenError(RuntimeError):
    """The chain cannot be extended safely (its head row is gone while events exist)."""


def _genesis_head() -> AuditChainHead:
    """Create the head of an empty chain (a fresh database, or tables flushed in tests).

    Refuses when events exist without a head: recreating it from the last event would
    hide events cut from the end of the chain. Raises ``AuditChainBrokenError``.
    """
    try:
        # The insert blocks on the primary key while a concurrent creator's transaction is
        # open, then fails: only the writer that really created the head checks for events.
        with transaction.atomic():
            AuditChainHead.objects.create(pk=1)
            if AuditEvent.objects.exists():
                raise AuditChainBrokenError(
                    "the audit chain head row is missing while events exist; "
                    "run manage.py audit_verify"
                )
    except IntegrityError:
        pass  # a concurrent writer created it first
    return AuditChainHead.objects.select_for_update().get(pk=1)


def audit_data_scan(data: dict[str, Any], *, project: Any) -> dict[str, Any]:
    """``data`` as the audit log may keep it: every string value scanned for PII in the
    ``audit`` direction under the project's policy (the ``default`` policy's active
    version, else the built-in defaults: secrets redacted).

    Redacted / masked / hashed values replace the originals, and ``pii`` records what
    was acted on as ``{entity_type: count}`` (never the values). A ``block`` rule, or a
    scan or policy lookup that fails, withholds the whole data: the event is still
    written (the action happened) with ``{"withheld": reason, "pii": {...}}`` (fail
    closed).
    """
    if not data:
        return data
    from governance.pii import scan_data
    from governance.policies import audit_policy

    try:
        policy = audit_policy(project_id=project.pk) if project is not None else None
        rules = policy.document.pii_policy if policy is not None else None
    except Exception as exc:  # noqa: BLE001 - no policy, no plain data
        return {"withheld": f"the PII policy could not be read ({type(exc).__name__})"}
    result = scan_data(data, "audit", rules)
    counts: dict[str, int] = {}
    for finding in result.findings:
        if finding.action != "allow":
            counts[finding.entity_type] = counts.get(finding.entity_type, 0) + 1
    if result.error:
        return {"withheld": result.error}
    if result.blocked:
        return {"withheld": "blocked by the audit PII policy", "pii": counts}
    if not counts:
        return data
    return {**result.value_out, "pii": counts}


def audit_record(
    *,
    action: str,
    obj: models.Model | None = None,
    project: Any = None,
    data: dict[str, Any] | None = None,
    actor: Actor | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
) -> AuditEvent:
    """Append one audit event to the chain and return it.

    ``action`` is a dotted name (``agent.version.created``). ``obj`` fills
    ``object_type`` (``app_label.model``), ``object_id`` and ``object_repr`` unless they
    are given. ``project`` defaults to ``obj.project`` when the object has one. ``data``
    is any JSON-able mapping (Decimal, datetime and UUID become strings); secret-looking
    keys and token-shaped strings are masked, then the data passes the PII scanner
    (direction ``audit``, the project's policy; see ``audit_data_scan``) before it is
    written. ``actor`` defaults to the
    current context (``controlplane.context.current_actor``).

    Runs inside the caller's transaction, so the event commits or rolls back with the
    change it describes. Appends are serialized on the chain head row.

    Raises ``ValueError`` for a malformed action name or non-mapping data, and
    ``AuditChainBrokenError`` when the chain head is missing while events exist.
    """
    if not ACTION_RE.match(action):
        raise ValueError(f"audit action {action!r} must be a dotted lowercase name")
    if data is not None and not isinstance(data, dict):
        raise ValueError("audit data must be a mapping")
    actor = actor or current_actor()
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)
        if project is None:
            project = getattr(obj, "project", None)
            if project is None and obj._meta.label_lower == "controlplane.project":
                project = obj
    clean_data = audit_data_scan(mask_secrets(to_json_data(data or {})), project=project)
    event = AuditEvent(
        occurred_at=timezone.now(),
        actor_id=actor.user_id,
        actor_kind=actor.kind,
        actor_name=actor.name[:200],
        actor_ref=actor.ref[:64],
        action=action,
        object_type=object_type[:100],
        object_id=object_id[:64],
        object_repr=mask_secrets(object_repr)[:200],
        project=project,
        project_ref=str(project.pk) if project is not None else "",
        request_id=current_request_id(),
        trace_id=current_trace_id(),
        data=clean_data,
    )
    # Metrics count the event once it has committed (with its batch, if there is one).
    observe = partial(
        observe_audit_event,
        action=action,
        project_slug=getattr(project, "slug", ""),
        data=clean_data,
    )
    pending = _batch.get()
    if pending is not None:
        pending.append(event)
        transaction.on_commit(observe)
        return event
    with transaction.atomic():
        _append_to_chain([event])
    transaction.on_commit(observe)
    return event


def _append_to_chain(events: list[AuditEvent]) -> None:
    """Give ``events`` their sequence numbers and hashes after the chain head and insert
    them: one head lock, one INSERT, one head update. Call inside a transaction."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        head = _genesis_head()
    sequence, prev_hash = head.sequence, head.hash
    for event in events:
        sequence += 1
        event.sequence = sequence
        event.prev_hash = prev_hash
        event.hash = prev_hash = event_hash(event.__dict__)
    head.sequence, head.hash = sequence, prev_hash
    if connection.vendor == "postgresql":
        _insert_and_move_head(events, head)
        return
    if len(events) == 1:
        events[0].save()
    else:
        AuditEvent.objects.bulk_create(events)
    head.save(update_fields=["sequence", "hash"])


def _insert_and_move_head(events: list[AuditEvent], head: AuditChainHead) -> None:
    """PostgreSQL: insert ``events`` (their sequence numbers, the primary key, are set)
    and move the head in one statement: a data-modifying CTE around the INSERT Django's
    bulk insert compiles. One round trip instead of two."""
    query = InsertQuery(AuditEvent)
    query.insert_values(AuditEvent._meta.concrete_fields, events)
    statements = query.get_compiler(connection=connection).as_sql()
    (insert_sql, params), *rest = statements
    if rest:  # not one multi-row INSERT: the ORM's way
        AuditEvent.objects.bulk_create(events)
        head.save(update_fields=["sequence", "hash"])
        return
    head_table = connection.ops.quote_name(AuditChainHead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH inserted AS ({insert_sql})"  # noqa: S608 - SQL compiled by Django
            f" UPDATE {head_table} SET sequence = %s, hash = %s WHERE id = %s",
            [*params, head.sequence, head.hash, head.pk],
        )
    for event in events:
        event._state.adding = False
        event._state.db = connection.alias


@contextmanager
def audit_batch() -> Iterator[None]:
    """One transaction whose audit events are appended together when it ends.

    Inside, ``audit_record`` scans and stamps each event at once but only buffers it; on a
    normal exit the buffered events are appended in the order recorded (one chain-head
    lock, one INSERT, one head update) and the transaction commits with them. On an
    exception everything rolls back, the events included, and the exception propagates.
    The head lock is taken last, so the block may lock budget, reservation or counter rows
    first (the lock order every other writer follows). Nested batches join the outer one.

    The governed call path uses one batch per step of a call (a tool call's decision, its
    execution outcome, a model call's settlement), so a call's audit events cost one
    transaction instead of one each. Caveat: an event recorded inside a nested
    ``transaction.atomic`` block that rolls back while the batch goes on is still
    appended; record events after the work they describe has succeeded (as the services
    do).
    """
    if _batch.get() is not None:
        yield
        return
    pending: list[AuditEvent] = []
    token = _batch.set(pending)
    try:
        with transaction.atomic():
            yield
            _batch.set(None)
            if pending:
                _append_to_chain(pending)
    finally:
        _batch.reset(token)


# Budgets, reservations and the cost ledger live in governance.budgets; re-exported here.
from governance.budgets import (  # noqa: E402, F401
    BudgetExceeded,
    ReservationNotFound,
    applicable_budgets,
    budget_create,
    budget_deactivate,
    budget_delete,
    budget_expire_reservations,
    budget_release,
    budget_reserve,
    budget_settle,
    budget_update,
    cost_record,
)

# Policies (versioned YAML documents) live in governance.policies; re-exported here.
from governance.policies import (  # noqa: E402, F401
    policy_activate,
    policy_create,
    policy_version_create,
)
