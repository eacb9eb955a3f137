"""Approval notifications: email (Django's email backend) and webhook (JSON, or a
Slack-compatible ``{"text": ...}``) on a new request, an escalation and a decision.

Called by the Celery tasks in ``approvals.tasks``, which retry ``NotificationTransientError``
with backoff; anything else (a 4xx answer, a missing secret) is logged and audited as
failed, never retried.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Any

import httpx
from django.conf import settings as django_settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from approvals.models import ApprovalRequest, WebhookFormat
from approvals.selectors import approval_settings_for
from controlplane.models import Membership
from controlplane.secrets import SecretUnavailableError, decrypt_secret
from governance.services import audit_record

logger = logging.getLogger(__name__)

EVENTS = ("requested", "escalated", "decided")
WEBHOOK_TIMEOUT_SECONDS = 10.0


class NotificationTransientError(Exception):
    """A failure worth retrying: the mail server or the webhook could not be reached, or
    the webhook answered 429 / 5xx."""


def _inbox_url(request: ApprovalRequest) -> str:
    base = getattr(django_settings, "PUBLIC_BASE_URL", "") or ""
    return f"{base.rstrip('/')}{reverse('approval-detail', args=[request.pk])}"


def notification_text(request: ApprovalRequest, event: str) -> str:
    """One human line for ``event`` on ``request``."""
    where = f"[{request.project.slug}] #{request.pk} {request.summary}"
    if event == "requested":
        risk = request.risk or "unset"
        return (
            f"Approval needed {where} (risk {risk}, needs {request.approver_role}, "
            f"quorum {request.quorum})"
        )
    if event == "escalated":
        return f"Escalated to {request.escalated_to_role}: still pending {where}"
    by = f" by {request.decided_by.get_username()}" if request.decided_by else ""
    reason = f": {request.reason}" if request.reason else ""
    return f"Approval {request.status}{by} {where}{reason}"


def notification_payload(request: ApprovalRequest, event: str) -> dict[str, Any]:
    """The JSON webhook body: ``event``, ``text`` and the request's fields (the
    arguments as displayed, i.e. PII-redacted)."""
    return {
        "event": f"approval.{event}",
        "text": notification_text(request, event),
        "approval": {
            "id": request.pk,
            "project": request.project.slug,
            "status": request.status,
            "summary": request.summary,
            "subject_kind": request.subject_kind,
            "tool": request.tool,
            "arguments": request.display_arguments,
            "risk": request.risk,
            "agent": request.agent,
            "run_id": request.run_id,
            "approver_role": request.approver_role,
            "quorum": request.quorum,
            "escalated_to_role": request.escalated_to_role,
            "reason": request.reason,
            "requested_at": request.requested_at.isoformat(),
            "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            "decided_at": request.decided_at.isoformat() if request.decided_at else None,
            "url": _inbox_url(request),
        },
    }


def _record(request: ApprovalRequest, channel: str, event: str, ok: bool, detail: str) -> None:
    with transaction.atomic():
        audit_record(
            action="approval.notified" if ok else "approval.notify_failed",
            obj=request,
            data={"channel": channel, "event": event, "detail": detail[:300]},
        )


def approval_notify_email_send(*, request_id: int, event: str) -> int:
    """Email ``event`` on the request to the project's ``notify_emails`` (and, for an
    escalation, to the members holding the role escalated to). Returns the number of
    recipients (0: nothing to send). Raises ``NotificationTransientError`` when the mail
    server cannot be reached."""
    request = (
        ApprovalRequest.objects.select_related("project", "decided_by")
        .filter(pk=request_id)
        .first()
    )
    if request is None or event not in EVENTS:
        return 0
    recipients = set(approval_settings_for(request.project).email_list)
    if event == "escalated" and request.escalated_to_role:
        recipients.update(
            Membership.objects.filter(project=request.project, role=request.escalated_to_role)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    if not recipients:
        return 0
    text = notification_text(request, event)
    body = f"{text}\n\nOpen it in the inbox: {_inbox_url(request)}\n"
    try:
        send_mail(
            subject=text[:150],
            message=body,
            from_email=None,
            recipient_list=sorted(recipients),
        )
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise NotificationTransientError(str(exc)) from exc
    _record(request, "email", event, True, f"{len(recipients)} recipient(s)")
    return len(recipients)


def approval_notify_webhook_send(*, request_id: int, event: str) -> int | None:
    """POST ``event`` on the request to the project's webhook (JSON body, or
    ``{"text": ...}`` for Slack). Returns the HTTP status, ``None`` when no webhook is set.
    Raises ``NotificationTransientError`` for connection errors, 429 and 5xx; a 4xx or an
    undecryptable URL is audited ``approval.notify_failed`` and not retried."""
    request = (
        ApprovalRequest.objects.select_related("project", "decided_by")
        .filter(pk=request_id)
        .first()
    )
    if request is None or event not in EVENTS:
        return None
    settings = approval_settings_for(request.project)
    if not settings.has_webhook:
        return None
    try:
        url = decrypt_secret(settings.webhook_url_encrypted)
    except SecretUnavailableError as exc:
        _record(request, "webhook", event, False, str(exc))
        return None
    if settings.webhook_format == WebhookFormat.SLACK:
        body: dict[str, Any] = {"text": notification_text(request, event)}
    else:
        body = notification_payload(request, event)
    try:
        response = httpx.post(url, json=body, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except httpx.TransportError as exc:
        raise NotificationTransientError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise NotificationTransientError(f"webhook answered {response.status_code}")
    ok = response.status_code < 400
    _record(request, "webhook", event, ok, f"HTTP {response.status_code}")
    return response.status_code
