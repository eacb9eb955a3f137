"""Governance writes. For now: appending to the audit log."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, partial
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from controlplane.context import Actor, current_actor, current_request_id, current_trace_id
from governance.audit_chain import event_hash_from_text, mask_secrets, to_json_data
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


# Events per INSERT statement (17 parameters each; SQLite allows 32,766 per statement).
_INSERT_CHUNK = 500
_json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# The chain head this process last wrote, per database: (sequence, hash). Only a guess
# (another process may have appended since, or the transaction that wrote it rolled back);
# ``_append_if_head`` checks it in the statement that uses it.
_head_guess: dict[tuple[str, str], tuple[int, str]] = {}


def _guess_key() -> tuple[str, str]:
    return connection.alias, str(connection.settings_dict.get("NAME"))


def _append_to_chain(events: list[AuditEvent]) -> None:
    """Give ``events`` their sequence numbers and hashes after the chain head and insert
    them, moving the head. Call inside a transaction.

    The hot path of every governed call, so written in SQL by hand rather than through
    the ORM's insert compiler (which cost more CPU than the round trips): the column list
    is the model's, the values are adapted with the connection's own adapters, and each
    event's ``data`` is serialized once to JSON text, which is both the stored value and
    the input of ``event_hash_from_text`` (the same digest as ``event_hash``, computed
    mostly by the C ``json`` module; see ``governance.audit_chain``).

    On PostgreSQL the events are first chained after the head this process last wrote
    and appended by ONE statement that moves the head only if it is still that one
    (``_append_if_head``); when another writer moved it, the head is read under a row lock
    and the events are re-chained after it (head lock, then INSERT + head update in one
    statement). SQLite holds its write lock from BEGIN, so it reads the head directly.
    """
    postgres = connection.vendor == "postgresql"
    guess = _head_guess.get(_guess_key()) if postgres else None
    if guess is not None and len(events) <= _INSERT_CHUNK and _append_if_head(events, guess):
        return
    head_table = connection.ops.quote_name(AuditChainHead._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sequence, hash FROM {head_table} WHERE id = 1{lock}"  # noqa: S608
        )
        row = cursor.fetchone()
    if row is None:
        head = _genesis_head()
        row = (head.sequence, head.hash)
    rows, (sequence, prev_hash) = _chain(events, row)
    head_sql = f"UPDATE {head_table} SET sequence = %s, hash = %s WHERE id = 1"  # noqa: S608
    chunks = [rows[i : i + _INSERT_CHUNK] for i in range(0, len(rows), _INSERT_CHUNK)]
    with connection.cursor() as cursor:
        for index, chunk in enumerate(chunks):
            insert_sql = _insert_sql(len(chunk))
            params = [value for row in chunk for value in row]
            if postgres and index == len(chunks) - 1:
                cursor.execute(
                    f"WITH inserted AS ({insert_sql}) {head_sql}", [*params, sequence, prev_hash]
                )
            else:
                cursor.execute(insert_sql, params)
        if not postgres:
            cursor.execute(head_sql, [sequence, prev_hash])
    _appended(events, (sequence, prev_hash))


def _chain(
    events: list[AuditEvent], head: tuple[int, str]
) -> tuple[list[list[Any]], tuple[int, str]]:
    """Number and hash ``events`` after ``head`` (sequence, hash); return their INSERT rows
    and the new head."""
    sequence, prev_hash = head
    rows: list[list[Any]] = []
    for event in events:
        sequence += 1
        event.sequence = sequence
        event.prev_hash = prev_hash
        data_text = _json_text(event.data)
        event.hash = prev_hash = event_hash_from_text(event.__dict__, data_text)
        rows.append(_event_row(event, data_text))
    return rows, (sequence, prev_hash)


def _appended(events: list[AuditEvent], head: tuple[int, str]) -> None:
    for event in events:
        event._state.adding = False
        event._state.db = connection.alias
    if connection.vendor == "postgresql":
        _head_guess[_guess_key()] = head


def _append_if_head(events: list[AuditEvent], guess: tuple[int, str]) -> bool:
    """PostgreSQL: append ``events`` chained after ``guess`` in one statement that moves
    the head from ``guess`` to the new head and inserts the events only if it did (a
    conditional UPDATE: it waits for a writer holding the head and re-checks against what
    that writer committed). Returns False, having written nothing, when the head is
    elsewhere."""
    rows, new_head = _chain(events, guess)
    head_table = connection.ops.quote_name(AuditChainHead._meta.db_table)
    insert_into, _ = _insert_parts(connection.vendor)
    sql = (
        f"WITH moved AS (UPDATE {head_table} SET sequence = %s, hash = %s "  # noqa: S608
        "WHERE id = 1 AND sequence = %s AND hash = %s RETURNING 1), "
        f"inserted AS ({insert_into} SELECT * FROM (VALUES {_values_sql(len(rows))}) AS v "
        "WHERE EXISTS (SELECT 1 FROM moved)) "
        "SELECT count(*) FROM moved"
    )
    params = [*new_head, *guess, *(value for row in rows for value in row)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (moved,) = cursor.fetchone()
    if moved != 1:
        return False
    _appended(events, new_head)
    return True


_EVENT_COLUMNS = tuple(field.column for field in AuditEvent._meta.concrete_fields)


def _event_row(event: AuditEvent, data_text: str) -> list[Any]:
    """The INSERT values of ``event`` in ``_EVENT_COLUMNS`` order (``data`` as JSON text)."""
    values = []
    for field in AuditEvent._meta.concrete_fields:
        if field.name == "data":
            values.append(data_text)
        elif field.name == "occurred_at":
            values.append(connection.ops.adapt_datetimefield_value(event.occurred_at))
        else:
            values.append(getattr(event, field.attname))
    return values


@cache
def _insert_parts(vendor: str) -> tuple[str, str]:
    """``("INSERT INTO governance_auditevent (...)", one row's placeholders)``. On
    PostgreSQL each placeholder is cast to its column's base type (``varchar``, not
    ``varchar(n)``): the one-statement append inserts from ``VALUES`` inside a SELECT,
    which does not take its types from the INSERT, and a cast to ``varchar(n)`` would cut a
    longer value silently where the column refuses it."""
    qn = connection.ops.quote_name
    columns = ", ".join(qn(column) for column in _EVENT_COLUMNS)
    insert_into = f"INSERT INTO {qn(AuditEvent._meta.db_table)} ({columns})"
    if vendor == "postgresql":
        types = (f.db_type(connection).split("(")[0] for f in AuditEvent._meta.concrete_fields)
        row = ", ".join(f"%s::{db_type}" for db_type in types)
    else:
        row = ", ".join(["%s"] * len(_EVENT_COLUMNS))
    return insert_into, row


def _values_sql(count: int) -> str:
    _, row = _insert_parts(connection.vendor)
    return ", ".join([f"({row})"] * count)


def _insert_sql(count: int) -> str:
    """``INSERT INTO governance_auditevent (...) VALUES (...), ...`` for ``count`` events."""
    insert_into, _ = _insert_parts(connection.vendor)
    return f"{insert_into} VALUES {_values_sql(count)}"


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
