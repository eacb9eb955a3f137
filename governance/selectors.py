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


def _chain_rows(names: list[str], chunk_size: int):
    """Every event as a tuple ``(*names, data as JSON text, hash)`` in sequence order.

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
            "ORDER BY sequence"
        )
        with (
            connection.cursor() as django_cursor,
            django_cursor.connection.cursor(name="audit_chain_verify") as cursor,
        ):
            cursor.itersize = chunk_size
            cursor.execute(sql)
            yield from cursor
        return
    rows = (
        AuditEvent.objects.order_by("sequence")
        .annotate(data_text=Cast("data", TextField()))
        .values_list(*names, "data_text", "hash")
    )
    yield from rows.iterator(chunk_size=chunk_size)


def audit_chain_verify(*, chunk_size: int = 2000) -> ChainVerification:
    """Walk every audit event in sequence order and check hashes, links and gaps.

    Reads in chunks of ``chunk_size`` rows (a server-side cursor on PostgreSQL), so
    memory stays flat however long the chain is. Also checks the chain head, which
    catches events removed from the end.
    """
    expected = 1
    prev = GENESIS_HASH_VALUE
    checked = 0
    names = [name for name in HASHED_FIELDS if name != "data"]
    with transaction.atomic():  # a named (server-side) cursor lives in a transaction
        for row in _chain_rows(names, chunk_size):
            checked += 1
            fields = dict(zip(names, row, strict=False))
            sequence = fields["sequence"]
            if sequence != expected:
                return ChainVerification(
                    False,
                    checked,
                    expected,
                    f"sequence {expected} is missing (next is {sequence})",
                )
            if fields["prev_hash"] != prev:
                return ChainVerification(
                    False,
                    checked,
                    sequence,
                    "prev_hash does not match the previous event's hash",
                )
            if event_hash_from_text(fields, row[-2]) != row[-1]:
                return ChainVerification(
                    False, checked, sequence, "content does not match its hash (event altered)"
                )
            prev = row[-1]
            expected += 1
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
