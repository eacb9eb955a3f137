"""Streamed exports of the audit log: JSON Lines and CSV, oldest first (chain order).

Rows are read with a server-side cursor in chunks, so memory stays flat however many
events match. The data exported is what the log stores: secrets were masked and PII
scanned (redacted, or withheld by a block rule) before each event was written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from governance.models import AuditEvent

EXPORT_FIELDS = (
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_name",
    "actor_ref",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "project_ref",
    "request_id",
    "trace_id",
    "data",
    "prev_hash",
    "hash",
)
CHUNK_SIZE = 2000
FORMATS = {"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}


def event_record(event: AuditEvent) -> dict:
    """An event as a JSON-able dict with ``EXPORT_FIELDS`` (``occurred_at`` ISO 8601)."""
    record = {name: getattr(event, name) for name in EXPORT_FIELDS}
    record["occurred_at"] = event.occurred_at.isoformat()
    return record


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a leading = + - @ is quoted)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def iter_jsonl(events: QuerySet[AuditEvent]) -> Iterator[str]:
    for event in events.order_by("sequence").iterator(chunk_size=CHUNK_SIZE):
        yield json.dumps(event_record(event), sort_keys=True, default=str) + "\n"


def iter_csv(events: QuerySet[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(EXPORT_FIELDS)
    for event in events.order_by("sequence").iterator(chunk_size=CHUNK_SIZE):
        record = event_record(event)
        record["data"] = json.dumps(record["data"], sort_keys=True, default=str)
        yield line([csv_cell(record[name]) for name in EXPORT_FIELDS])


def streaming_response(events: QuerySet[AuditEvent], fmt: str, project) -> StreamingHttpResponse:
    """``events`` streamed as ``fmt`` (``jsonl`` or ``csv``) in a download response.
    Raises ``ValueError`` for another format."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    rows = iter_jsonl(events) if fmt == "jsonl" else iter_csv(events)
    response = StreamingHttpResponse(rows, content_type=FORMATS[fmt])
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{project.slug}-{stamp}.{fmt}"'
    return response
