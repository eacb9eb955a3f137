"""OpenTelemetry export of stored spans: when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, the
spans of runs are sent with the OpenTelemetry SDK's OTLP/HTTP (protobuf) exporter.

Spans are stored first (``flows.models.Span``, the source of truth for the run page);
export happens after the commit that wrote them and marks them ``exported_at``. A failed
export is logged and left for the next one of the same run (unexported spans go along).
The exporter reads the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``...).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from django.utils import timezone

from flows.models import Span

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _exporter(endpoint: str):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The SDK appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT itself when it reads the
    # variable; given explicitly, the path must be complete.
    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)


def _ns(value) -> int | None:
    return int(value.timestamp() * 1_000_000_000) if value else None


def _attributes(data: dict) -> dict:
    result = {}
    for key, value in (data or {}).items():
        if isinstance(value, bool | int | float | str):
            result[key] = value
        elif isinstance(value, list) and all(
            isinstance(v, str | int | float | bool) for v in value
        ):
            result[key] = [str(v) for v in value]
        elif value is not None:
            result[key] = str(value)
    return result


def readable_span(span: Span):
    """The SDK's ``ReadableSpan`` of a stored span (same trace and span ids, times)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    trace_id = int(span.trace_id, 16)
    context = SpanContext(
        trace_id=trace_id,
        span_id=int(span.span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = (
        SpanContext(trace_id=trace_id, span_id=int(span.parent_span_id, 16), is_remote=False)
        if span.parent_span_id
        else None
    )
    service = os.environ.get("OTEL_SERVICE_NAME", "agent-control-plane")
    attributes = _attributes(span.attributes)
    attributes["span.kind"] = span.kind
    attributes["run.id"] = span.run_id
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=Resource.create({"service.name": service}),
        attributes=attributes,
        status=Status(StatusCode.ERROR if span.status == "error" else StatusCode.OK),
        start_time=_ns(span.start_time),
        end_time=_ns(span.end_time or span.start_time),
    )


def export_spans(*, trace_id: str, span_ids: list[str] | None = None) -> int:
    """Export the not yet exported spans of trace ``trace_id`` (at least ``span_ids``) to
    ``OTEL_EXPORTER_OTLP_ENDPOINT``; returns how many were sent (0 when the variable is
    unset or the export failed; never raises)."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if not endpoint:
        return 0
    try:
        from opentelemetry.sdk.trace.export import SpanExportResult

        spans = list(Span.objects.filter(trace_id=trace_id, exported_at__isnull=True))
        if not spans:
            return 0
        result = _exporter(endpoint).export([readable_span(s) for s in spans])
        if result != SpanExportResult.SUCCESS:
            logger.warning("flows: OTLP export of %d spans failed", len(spans))
            return 0
        Span.objects.filter(pk__in=[s.pk for s in spans]).update(exported_at=timezone.now())
        return len(spans)
    except Exception:  # noqa: BLE001 - tracing never breaks a run
        logger.exception("flows: OTLP export failed")
        return 0
