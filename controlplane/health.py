"""Liveness (/healthz) and readiness (/readyz) probes."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

from controlplane.selectors import worker_heartbeats

BROKER_TIMEOUT_SECONDS = 2


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the name is reported
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_broker() -> str | None:
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


class HealthCheckMiddleware:
    """Answers ``/healthz`` and ``/readyz`` before host validation and the SSL redirect.

    Container and load-balancer probes connect to the pod's own address (``127.0.0.1``),
    which is rightly not in ``ALLOWED_HOSTS``; the probes reveal nothing a host check
    protects. Must be the first middleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.path == "/healthz":
            return healthz(request)
        if request.path == "/readyz":
            return readyz(request)
        return self.get_response(request)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the process serves requests; checks nothing else."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer; 503 naming what failed otherwise.

    Body: ``{"status": "ready"|"not ready", "checks": {"database": "ok"|error,
    "broker": "ok"|error}, "workers": [{"hostname", "seen_seconds_ago"}]}``. Worker
    heartbeats are informative only: a web node is ready before any worker runs.
    """
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(v is None for v in checks.values())
    body: dict = {
        "status": "ready" if ready else "not ready",
        "checks": {k: (v or "ok") for k, v in checks.items()},
    }
    if checks["database"] is None:
        now = timezone.now()
        recent = worker_heartbeats().filter(seen_at__gte=now - timedelta(hours=1))[:20]
        body["workers"] = [
            {"hostname": b.hostname, "seen_seconds_ago": int((now - b.seen_at).total_seconds())}
            for b in recent
        ]
    return JsonResponse(body, status=200 if ready else 503)
