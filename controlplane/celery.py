"""The Celery app: configured from Django settings (``CELERY_*``), JSON only, tasks found in every app."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_configure.connect
def _configure_embedded_broker(sender: Celery, **_kwargs) -> None:
    """Tune kombu's SQLAlchemy transport (the embedded broker) before it is used.

    The polling interval (``CELERY_BROKER_POLLING_INTERVAL_SECONDS``, kombu's default 1 s) is
    a class attribute: passing it in ``broker_transport_options`` would hand it to
    ``sqlalchemy.create_engine``, which rejects unknown keywords. Only this transport reads
    it; Redis and AMQP are not polled.
    """
    from django.conf import settings

    kombu_sqlalchemy.Transport.polling_interval = settings.CELERY_BROKER_POLLING_INTERVAL_SECONDS


@event.listens_for(Engine, "connect")
def _sqlite_wal(dbapi_connection, _record) -> None:
    """Put SQLite broker databases in WAL mode so web and worker processes do not block each other."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


@task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_kwargs) -> None:
    """Every task starts with a fresh audit context: system actor, request id from the message."""
    from controlplane.context import begin_task_context

    headers = getattr(task.request, "headers", None) or {}
    begin_task_context(
        task_id=task_id,
        request_id=(headers.get("request_id") if isinstance(headers, dict) else None)
        or getattr(task.request, "request_id", None),
    )


@task_postrun.connect
def _clear_task_context(**_kwargs) -> None:
    from controlplane.context import end_task_context

    end_task_context()


@before_task_publish.connect
def _propagate_request_id(headers=None, **_kwargs) -> None:
    """Carry the publishing request's id to the worker so its audit events share it."""
    from controlplane.context import current_request_id

    request_id = current_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id
