"""Middleware binding the request id, trace id and actor for the audit log and logs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from controlplane.context import bind_request, clean_request_id, trace_id_from_traceparent


class RequestContextMiddleware:
    """Binds ``X-Request-ID`` (or a new one) and the W3C trace id; echoes the request id back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = clean_request_id(request.headers.get("X-Request-ID"))
        trace_id = trace_id_from_traceparent(request.headers.get("traceparent"))
        request.request_id = request_id
        request.trace_id = trace_id
        with bind_request(request, request_id=request_id, trace_id=trace_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
