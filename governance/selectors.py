"""Governance reads: audit events visible to a user and verification of the audit chain."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from governance.audit_chain import GENESIS_HASH_VALUE, HASHED_FIELDS, event_hash_from_text
from governance.models import AuditChainHead, AuditEvent


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """Result of walking the audit chain.

    ``ok`` is True when every event's hash matches its content and links to the one
    before; otherwise ``first_broken_sequence`` names the first sequence number that
    fails and ``reason`` says how. ``checked`` is the number of events read.
    """

    ok: bool
    checked: int
    first_broken_sequence: int | None = None
    reason: str = ""
    head_hash: str = ""


def audit_events_for_projects(project_ids) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project_id__in=project_ids).order_by("-sequence")


def _chain_rows(names: list[str], chunk_size: int, first: int = 1, last: int | None = None):
    """Events ``first..last`` as tuples ``(*names, data as JSON text, hash)`` in sequence
    order.

    PostgreSQL: one server-side cursor with ``occurred_at`` already formatted as
    ``format_timestamp`` writes it (no datetime objects per row). Elsewhere: the ORM.
    """
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        columns = [
            "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
            if name == "occurred_at"
            else connection.ops.quote_name(name)
            for name in names
        ]
        sql = (
            f"SELECT {', '.join(columns)}, data::text, hash FROM {table} "  # noqa: S608
            "WHERE sequence >= %s AND sequence <= %s ORDER BY sequence"
        )
        with (
            connection.cursor() as django_cursor,
            django_cursor.connection.cursor(name="audit_chain_verify") as cursor,
        ):
            cursor.execute(sql, [first, last if last is not None else 2**63 - 1])
            yield from _prefetched(cursor, chunk_size)
        return
    rows = (
        AuditEvent.objects.filter(sequence__gte=first)
        .order_by("sequence")
        .annotate(data_text=Cast("data", TextField()))
        .values_list(*names, "data_text", "hash")
    )
    if last is not None:
        rows = rows.filter(sequence__lte=last)
    yield from rows.iterator(chunk_size=chunk_size)


def _prefetched(cursor, chunk_size: int):
    """Rows of ``cursor``, fetched ``chunk_size`` at a time by a thread while the caller
    hashes the previous chunk (the database's work overlaps ours; psycopg releases the
    GIL while it waits). The thread is stopped and joined before the cursor closes."""
    import queue
    import threading

    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            while not stop.is_set():
                rows = cursor.fetchmany(chunk_size)
                if not rows:
                    break
                put(rows)
        except BaseException as exc:  # noqa: BLE001 - raised again by the consumer
            errors.append(exc)
        put(done)

    thread = threading.Thread(target=produce, name="audit-verify-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is done:
                if errors:
                    raise errors[0]
                return
            yield from item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True, slots=True)
class _RangeResult:
    checked: int
    next_expected: int
    last_hash: str
    failure: tuple[int, str] | None = None  # (sequence, reason)


def _verify_range(first: int, last: int | None, prev: str, chunk_size: int) -> _RangeResult:
    """Check events ``first..last`` (hash, link to the one before, no gap) starting from
    ``prev``, the hash event ``first - 1`` has (the genesis value for 1)."""
    names = [name for name in HASHED_FIELDS if name != "data"]
    expected = first
    checked = 0
    with transaction.atomic():  # a named (server-side) cursor lives in a transaction
        for row in _chain_rows(names, chunk_size, first, last):
            checked += 1
            fields = dict(zip(names, row, strict=False))
            sequence = fields["sequence"]
            if sequence != expected:
                reason = f"sequence {expected} is missing (next is {sequence})"
                return _RangeResult(checked, expected, prev, (expected, reason))
            if fields["prev_hash"] != prev:
                reason = "prev_hash does not match the previous event's hash"
                return _RangeResult(checked, expected, prev, (sequence, reason))
            if event_hash_from_text(fields, row[-2]) != row[-1]:
                reason = "content does not match its hash (event altered)"
                return _RangeResult(checked, expected, prev, (sequence, reason))
            prev = row[-1]
            expected += 1
    return _RangeResult(checked, expected, prev)


def _verify_range_in_child(first: int, last: int, chunk_size: int) -> _RangeResult:
    """A worker process's part: its range, linked to the stored hash of ``first - 1``
    (whose own content the range before checks)."""
    from django.db import connections

    try:
        if first == 1:
            prev = GENESIS_HASH_VALUE
        else:
            stored = AuditEvent.objects.filter(sequence=first - 1).values_list("hash", flat=True)
            prev = stored.first() or ""
        return _verify_range(first, last, prev, chunk_size)
    finally:
        connections.close_all()


def _verify_parallel(workers: int, chunk_size: int) -> tuple[_RangeResult, int]:
    """Split ``1..max(sequence)`` into ``workers`` ranges checked by forked processes;
    returns the combined result and the number of events read."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from django.db import connections
    from django.db.models import Max

    top = AuditEvent.objects.aggregate(top=Max("sequence"))["top"] or 0
    size = -(-top // workers) if top else 1
    ranges = [(lo, min(top, lo + size - 1)) for lo in range(1, top + 1, size)]
    connections.close_all()  # children must not share the parent's connection
    context = multiprocessing.get_context("fork")
    firsts = [first for first, _ in ranges]
    lasts = [last for _, last in ranges]
    with ProcessPoolExecutor(max_workers=max(1, len(ranges)), mp_context=context) as pool:
        parts = list(pool.map(_verify_range_in_child, firsts, lasts, [chunk_size] * len(ranges)))
    checked = 0
    last_hash = GENESIS_HASH_VALUE
    for (_, last), part in zip(ranges, parts, strict=True):
        checked += part.checked
        if part.failure is not None:
            return part, checked
        if part.next_expected != last + 1:
            reason = f"sequence {part.next_expected} is missing"
            return _RangeResult(
                part.checked, part.next_expected, part.last_hash, (part.next_expected, reason)
            ), checked
        last_hash = part.last_hash
    return _RangeResult(checked, top + 1, last_hash), checked


def audit_chain_verify(*, chunk_size: int = 2000, workers: int = 1) -> ChainVerification:
    """Walk every audit event in sequence order and check hashes, links and gaps.

    Reads in chunks of ``chunk_size`` rows (a server-side cursor on PostgreSQL), so
    memory stays flat however long the chain is. Also checks the chain head, which
    catches events removed from the end. ``workers`` > 1 (PostgreSQL, outside a
    transaction: the command and benchmarks) splits the chain into ranges checked by
    forked processes, each linked to the stored hash before it.
    """
    if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        result, checked = _verify_parallel(workers, chunk_size)
    else:
        result = _verify_range(1, None, GENESIS_HASH_VALUE, chunk_size)
        checked = result.checked
    if result.failure is not None:
        return ChainVerification(False, checked, result.failure[0], result.failure[1])
    expected, prev = result.next_expected, result.last_hash
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None:
        return ChainVerification(False, checked, expected, "the chain head row is missing")
    if head.sequence != expected - 1 or head.hash != prev:
        if head.sequence >= expected:
            return ChainVerification(
                False, checked, expected, f"events {expected}..{head.sequence} were removed"
            )
        return ChainVerification(False, checked, head.sequence, "the chain head does not match")
    return ChainVerification(True, checked, head_hash=prev)


# Budgets, reservations and the cost ledger live in governance.budgets; re-exported here.
from governance.budgets import (  # noqa: E402, F401
    budget_alerts,
    budget_periods,
    budget_usage,
    budgets_for_project,
    cost_breakdown,
    cost_entries_for_project,
    cost_totals,
    reservations_for_project,
    reservations_in_flight,
)

# The decision log of a run and cost reports; re-exported here.
from governance.decisions import run_decision_log  # noqa: E402, F401

# Policies (versioned YAML documents) live in governance.policies; re-exported here.
from governance.policies import (  # noqa: E402, F401
    effective_policy,
    policies_for_project,
    policy_diff,
    policy_version_active_at,
)
from governance.reports import budget_burndown, cost_report  # noqa: E402, F401
