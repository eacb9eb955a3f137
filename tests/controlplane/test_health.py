"""/healthz and /readyz."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_ready_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_naming_the_broker_when_it_is_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok" and "Error" in body["checks"]["broker"]


def test_probes_answer_on_hosts_outside_allowed_hosts(client):
    # Container probes hit 127.0.0.1 / the pod IP, which ALLOWED_HOSTS rightly excludes.
    response = client.get("/readyz", HTTP_HOST="10.9.8.7:8000")
    assert response.status_code == 200
    assert client.get("/healthz", HTTP_HOST="10.9.8.7:8000").status_code == 200


def test_readyz_lists_recent_worker_heartbeats(client):
    from controlplane.services import worker_heartbeat_record

    worker_heartbeat_record(hostname="worker@box")
    workers = client.get("/readyz").json()["workers"]
    assert workers[0]["hostname"] == "worker@box" and workers[0]["seen_seconds_ago"] >= 0
