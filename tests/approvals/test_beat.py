"""Expiry and escalation through the beat task functions; notifications by email and by
webhook to a real local HTTP server, with retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from django.core import mail
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.services import approval_decide, approval_settings_update
from approvals.tasks import (
    approval_notify_webhook,
    escalate_approvals,
    expire_approvals,
)
from controlplane.models import Role
from governance.approval_port import approval_decided
from governance.models import AuditEvent

from .conftest import member, raise_request
from .webhook_server import webhook_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    """Run tasks queued with ``.delay`` in this process (the real-worker path is covered
    by test_end_to_end.py)."""
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def signals():
    sent = []
    approval_decided.connect(
        lambda sender, **kw: sent.append(kw), dispatch_uid="t-beat", weak=False
    )
    yield sent
    approval_decided.disconnect(dispatch_uid="t-beat")


def past(pk, field, seconds=1):
    ApprovalRequest.objects.filter(pk=pk).update(
        **{field: timezone.now() - timedelta(seconds=seconds)}
    )


def test_the_expiry_task_rejects_with_reason_expired(
    project, signals, django_capture_on_commit_callbacks
):
    due, later = raise_request(project), raise_request(project)
    past(due, "expires_at")

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_approvals() == 1

    request = ApprovalRequest.objects.get(pk=due)
    assert (request.status, request.reason, request.decided_by) == ("expired", "expired", None)
    assert ApprovalRequest.objects.get(pk=later).status == "pending"
    [sent] = signals
    assert (sent["outcome"].status, sent["outcome"].comment) == ("expired", "expired")
    assert not sent["outcome"].approved
    event = AuditEvent.objects.get(project=project, action="approval.expired")
    assert event.data["reason"] == "expired"
    assert expire_approvals() == 0  # once


def test_the_escalation_task_notifies_the_next_role_up_once(
    project, admin_user, eager, django_capture_on_commit_callbacks
):
    member(project, Role.APPROVER, "appr")
    pk = raise_request(project)
    past(pk, "escalation_at")

    with django_capture_on_commit_callbacks(execute=True):
        assert escalate_approvals() == 1
        assert escalate_approvals() == 0

    request = ApprovalRequest.objects.get(pk=pk)
    assert request.status == "pending" and request.escalated_to_role == "admin"
    assert request.escalated_at is not None
    event = AuditEvent.objects.get(project=project, action="approval.escalated")
    assert (event.data["from_role"], event.data["to_role"]) == ("approver", "admin")
    # The admins (alice) are emailed; the approver is not.
    [message] = mail.outbox
    assert message.to == [admin_user.email] and "Escalated to admin" in message.subject
    assert AuditEvent.objects.filter(action="approval.notified").exists()


def test_decided_requests_are_neither_expired_nor_escalated(project):
    approver = member(project, Role.APPROVER)
    pk = raise_request(project)
    approval_decide(request_id=pk, user=approver, verdict="approve")
    past(pk, "expires_at")
    past(pk, "escalation_at")
    assert expire_approvals() == 0 and escalate_approvals() == 0
    assert ApprovalRequest.objects.get(pk=pk).status == "approved"


def test_email_on_new_request_and_decision(project, eager, django_capture_on_commit_callbacks):
    approval_settings_update(project=project, changes={"notify_emails": "ops@example.com"})
    approver = member(project, Role.APPROVER)
    with django_capture_on_commit_callbacks(execute=True):
        pk = raise_request(project)
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request_id=pk, user=approver, verdict="reject", comment="no")
    subjects = [m.subject for m in mail.outbox]
    assert subjects[0].startswith("Approval needed [acme]")
    assert subjects[1].startswith(f"Approval rejected by {approver.username}")
    assert all(m.to == ["ops@example.com"] for m in mail.outbox)
    assert f"/approvals/{pk}/" in mail.outbox[0].body


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_webhook_on_new_request_escalation_and_decision(
    project, eager, fmt, django_capture_on_commit_callbacks
):
    approver = member(project, Role.APPROVER)
    with webhook_server() as hook:
        approval_settings_update(
            project=project, changes={"webhook_format": fmt}, webhook_url=hook.url
        )
        with django_capture_on_commit_callbacks(execute=True):
            pk = raise_request(project)
        past(pk, "escalation_at")
        with django_capture_on_commit_callbacks(execute=True):
            escalate_approvals()
        with django_capture_on_commit_callbacks(execute=True):
            approval_decide(request_id=pk, user=approver, verdict="approve")
    assert len(hook.received) == 3
    if fmt == "slack":
        assert all(set(body) == {"text"} for body in hook.received)
        assert hook.received[0]["text"].startswith("Approval needed [acme]")
    else:
        events = [body["event"] for body in hook.received]
        assert events == ["approval.requested", "approval.escalated", "approval.decided"]
        assert hook.received[2]["approval"]["status"] == "approved"
        assert hook.received[0]["approval"]["arguments"] == {"amount": 40, "to": "bob"}


def test_webhook_retries_transient_failures(project, eager):
    with webhook_server(statuses=[503, 500]) as hook:
        approval_settings_update(project=project, changes={}, webhook_url=hook.url)
        pk = raise_request(project)
        hook.received.clear()
        hook.statuses[:] = [503, 502]
        result = approval_notify_webhook.apply(args=[pk, "requested"])
    assert result.successful() and result.result == 200
    assert len(hook.received) == 3


def test_a_webhook_4xx_is_audited_not_retried(project, eager):
    with webhook_server() as hook:
        approval_settings_update(project=project, changes={}, webhook_url=hook.url)
        pk = raise_request(project)
        hook.received.clear()
        hook.statuses[:] = [404]
        result = approval_notify_webhook.apply(args=[pk, "requested"])
    assert result.result == 404 and len(hook.received) == 1
    failed = AuditEvent.objects.get(action="approval.notify_failed")
    assert failed.data["detail"] == "HTTP 404"
    assert "127.0.0.1" not in str(failed.data)
