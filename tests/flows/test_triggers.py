"""Triggers: the inbound webhook (token stored only as a digest, refusals that reveal
nothing, audited) and schedules (django-celery-beat rows kept in step; beat's task starts
a run)."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from flows.models import FlowSchedule, FlowWebhook, Run
from flows.services import (
    flow_schedule_create,
    flow_schedule_delete,
    flow_schedule_update,
    flow_webhook_disable,
    flow_webhook_rotate,
)
from flows.tasks import schedule_fire
from governance.models import AuditEvent

from .helpers import echo_flow, echo_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def flow(project, admin_user):
    echo_world(project, admin_user)
    return echo_flow(project, admin_user)


@pytest.fixture
def hook(flow, admin_user):
    _, token = flow_webhook_rotate(flow=flow, actor=admin_user)
    return token


def post(path: str, body=None, **headers) -> tuple[int, dict]:
    data = body if isinstance(body, str | bytes) else json.dumps(body or {})
    response = Client().post(path, data=data, content_type="application/json", **headers)
    return response.status_code, response.json()


# --- Webhook ---------------------------------------------------------------------------------


def test_a_good_token_starts_a_run_with_the_body_as_input(flow, hook, pump):
    status, body = post(f"/hooks/flows/{flow.pk}/{hook}", {"topic": "from outside"})
    assert status == 202, body
    run = Run.objects.get(pk=body["run"])
    assert (run.trigger, run.input, run.started_by) == ("webhook", {"topic": "from outside"}, None)
    assert body["trace_id"] == run.trace_id
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert FlowWebhook.objects.get(flow=flow).last_used_at is not None


def test_the_token_may_come_in_a_header(flow, hook):
    status, _ = post(f"/hooks/flows/{flow.pk}", {"topic": "a"}, HTTP_X_FLOW_TOKEN=hook)
    assert status == 202
    status, _ = post(f"/hooks/flows/{flow.pk}", {"topic": "b"}, HTTP_AUTHORIZATION=f"Bearer {hook}")
    assert status == 202
    assert Run.objects.filter(trigger="webhook").count() == 2


def test_bad_tokens_unknown_flows_and_flows_without_webhook_look_the_same(
    project, admin_user, flow, hook
):
    other = echo_flow(project, admin_user, slug="no-hook")
    answers = [
        post(f"/hooks/flows/{flow.pk}/{hook[:-1]}x", {}),  # wrong token
        post(f"/hooks/flows/{flow.pk + 999}/{hook}", {}),  # no such flow
        post(f"/hooks/flows/{other.pk}/{hook}", {}),  # a flow without a webhook
        post(f"/hooks/flows/{flow.slug}/{hook}", {}),  # not an id
        post(f"/hooks/flows/{'9' * 30}/{hook}", {}),  # beyond any id
    ]
    assert {(status, json.dumps(body)) for status, body in answers} == {
        (404, json.dumps({"detail": "Not found."}))
    }
    assert post(f"/hooks/flows/{flow.pk}", {})[0] == 401  # no token at all
    assert not Run.objects.exists()
    refused = AuditEvent.objects.filter(action="flow.webhook.refused")
    assert [e.data["reason"] for e in refused.order_by("sequence")] == [
        "the token does not match",
        "no such flow",
        "the flow has no enabled webhook",
        "no such flow",
        "no such flow",
    ]
    assert all(hook not in json.dumps(e.data) for e in refused)


def test_rotating_or_disabling_stops_the_old_token(flow, hook, admin_user):
    _, new = flow_webhook_rotate(flow=flow, actor=admin_user)
    assert post(f"/hooks/flows/{flow.pk}/{hook}", {})[0] == 404
    assert post(f"/hooks/flows/{flow.pk}/{new}", {})[0] == 202
    flow_webhook_disable(flow=flow, actor=admin_user)
    assert post(f"/hooks/flows/{flow.pk}/{new}", {})[0] == 404


def test_a_body_that_is_not_a_json_object_is_a_400_after_the_token_check(flow, hook):
    status, body = post(f"/hooks/flows/{flow.pk}/{hook}", "[1, 2]")
    assert status == 400 and "input" in body
    assert post(f"/hooks/flows/{flow.pk}/{hook}", "not json")[0] == 400
    # Without the right token the body is never looked at.
    assert post(f"/hooks/flows/{flow.pk}/wrong", "not json")[0] == 404
    assert not Run.objects.exists()


def test_the_token_is_never_stored_in_plain_text(flow, hook):
    row = FlowWebhook.objects.filter(flow=flow).values().get()
    assert hook not in json.dumps(row, default=str)
    assert row["digest"] != hook and len(row["digest"]) == 64
    secret_part = hook.split("_", 2)[2]
    for event in AuditEvent.objects.all():
        assert secret_part not in json.dumps(event.data) + event.object_repr


def test_refusals_do_not_log_the_presented_token(flow, hook, caplog):
    with caplog.at_level(logging.INFO):
        post(f"/hooks/flows/{flow.pk}/fwh_abcd_guessedsecret", {})
    assert "guessedsecret" not in caplog.text


def test_the_webhook_needs_no_session_or_csrf(flow, hook):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        f"/hooks/flows/{flow.pk}/{hook}", data="{}", content_type="application/json"
    )
    assert response.status_code == 202
    assert client.get(f"/hooks/flows/{flow.pk}/{hook}").status_code == 405


# --- Schedules -------------------------------------------------------------------------------


def test_a_cron_schedule_makes_its_beat_entry_and_the_task_starts_a_run(flow, admin_user, pump):
    schedule = flow_schedule_create(
        flow=flow,
        name="mornings",
        kind="cron",
        cron="0  6 * * 1-5",
        input={"topic": "news"},
        actor=admin_user,
    )
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (task.task, json.loads(task.args), task.enabled) == (
        "flows.tasks.schedule_fire",
        [schedule.pk],
        True,
    )
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "6", "1-5")
    assert schedule.cron == "0 6 * * 1-5"

    run_id = schedule_fire(schedule.pk)  # what beat calls
    run = Run.objects.get(pk=run_id)
    assert (run.trigger, run.input, run.flow_id) == ("schedule", {"topic": "news"}, flow.pk)
    pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded"
    schedule.refresh_from_db()
    assert schedule.last_run_id == run.pk


def test_an_interval_schedule_and_pausing_it(flow, admin_user):
    schedule = flow_schedule_create(
        flow=flow, name="often", kind="interval", interval_seconds=30, actor=admin_user
    )
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (task.interval.every, task.interval.period) == (30, "seconds")
    flow_schedule_update(schedule=schedule, enabled=False, actor=admin_user)
    task.refresh_from_db()
    assert task.enabled is False
    assert schedule_fire(schedule.pk) is None
    assert not Run.objects.exists()
    flow_schedule_update(schedule=schedule, kind="cron", cron="*/5 * * * *", enabled=True)
    task.refresh_from_db()
    assert (task.enabled, task.interval, task.crontab.minute) == (True, None, "*/5")


def test_deleting_a_schedule_removes_its_beat_entry(flow, admin_user):
    schedule = flow_schedule_create(flow=flow, name="x", kind="interval", interval_seconds=60)
    task_id = schedule.periodic_task_id
    flow_schedule_delete(schedule=schedule, actor=admin_user)
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert schedule_fire(schedule.pk) is None


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"kind": "cron", "cron": "every day"}, "cron"),
        ({"kind": "cron", "cron": "99 * * * *"}, "cron"),
        ({"kind": "interval", "interval_seconds": 5}, "interval_seconds"),
        ({"kind": "interval"}, "interval_seconds"),
        ({"kind": "weekly"}, "kind"),
        ({"kind": "cron", "cron": "0 * * * *", "input": [1]}, "input"),
    ],
)
def test_bad_schedules_are_refused_by_field(flow, fields, key):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        flow_schedule_create(flow=flow, name="bad", **fields)
    assert key in caught.value.message_dict
    assert (
        not FlowSchedule.objects.exists()
        and not PeriodicTask.objects.filter(task="flows.tasks.schedule_fire").exists()
    )


@pytest.mark.django_db(transaction=True)  # the scheduler closes and reopens connections
def test_beat_reads_flow_schedules_from_the_database(flow):
    """Beat runs django-celery-beat's DatabaseScheduler: enabled flow schedules are among
    its entries (a paused one is not), and the settings' beat schedule is synced in."""
    from django_celery_beat.schedulers import DatabaseScheduler

    from controlplane.celery import app

    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    on = flow_schedule_create(flow=flow, name="on", kind="interval", interval_seconds=60)
    off = flow_schedule_create(flow=flow, name="off", kind="cron", cron="0 0 * * *", enabled=False)
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()  # what beat does at start: syncs CELERY_BEAT_SCHEDULE in
    entries = scheduler.all_as_schedule()
    assert f"flows.schedule.{on.pk}" in entries
    assert f"flows.schedule.{off.pk}" not in entries
    assert entries[f"flows.schedule.{on.pk}"].task == "flows.tasks.schedule_fire"
    assert "flows-sweep" in entries
