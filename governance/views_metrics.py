"""``/metrics``: the Prometheus exposition (``governance.metrics`` and django-prometheus),
for a scraper holding ``METRICS_TOKEN`` (``Authorization: Bearer ...``) or a staff user."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView


def metrics(request: HttpRequest) -> HttpResponse:
    token = getattr(settings, "METRICS_TOKEN", "")
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return ExportToDjangoView(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return ExportToDjangoView(request)
    response = HttpResponse("metrics need a bearer token or a staff user\n", status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
