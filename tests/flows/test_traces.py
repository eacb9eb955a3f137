"""Traces: spans stored per run (root, steps, model and tool calls) and exported over
OTLP/HTTP (protobuf) with the OpenTelemetry SDK when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from flows.models import Span

from .test_engine import PIPELINE, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def collector():
    """A tiny OTLP/HTTP collector: keeps every ExportTraceServiceRequest posted to it."""
    received: list[tuple[str, str, ExportTraceServiceRequest]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append((self.path, self.headers.get("Content-Type"), request))
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.received = received
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_spans_are_exported_over_otlp_http_when_an_endpoint_is_set(
    project, admin_user, world, pump, collector, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    with django_capture_on_commit_callbacks(execute=True):
        run = start(project, admin_user, PIPELINE, topic="owls")
    with django_capture_on_commit_callbacks(execute=True):
        pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded"
    exported = {}
    for path, content_type, request in collector.received:
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    exported[span.span_id.hex()] = span
    stored = {s.span_id: s for s in Span.objects.filter(run=run)}
    assert set(exported) == set(stored)
    for span_id, span in exported.items():
        assert span.trace_id.hex() == run.trace_id
        assert span.parent_span_id.hex() == stored[span_id].parent_span_id
        assert span.name == stored[span_id].name
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    assert not Span.objects.filter(run=run, exported_at__isnull=True).exists()


def test_nothing_is_exported_without_an_endpoint(
    project, admin_user, world, pump, collector, monkeypatch
):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    run = start(project, admin_user, PIPELINE, topic="owls")
    pump.run()
    assert Span.objects.filter(run=run).count() == 7
    assert not collector.received
    assert not Span.objects.filter(run=run, exported_at__isnull=False).exists()
