"""Approvals: writes (keyword-only, typed, audited).

Every rule of deciding lives in ``approval_decide``: the approver's role in the project,
no self-approval (unless the project lets admins, audited), one decision per approver
(unique constraint), quorum of distinct approvers, one rejection rejects, edited arguments
valid against the tool's JSON Schema. The request row is locked (``SELECT ... FOR
UPDATE``) before anything is read or written, so two approvers racing, or one deciding
twice, give one consistent outcome; only the transaction that moves the request to a
final status sends ``governance.approval_port.approval_decided``, after it commits, so a
parked call is resumed once.

Lock order (every service here): the approval request row, then the audit chain head
(taken by ``audit_record``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalSettings,
    ApprovalStatus,
    SubjectKind,
    Verdict,
)
from approvals.selectors import approval_settings_for, outcome_of
from controlplane.models import Role
from controlplane.permissions import membership_role
from controlplane.secrets import encrypt_secret
from governance.approval_port import approval_decided
from governance.models import PolicyVersion
from governance.services import audit_data_scan, audit_record

logger = logging.getLogger(__name__)

# Who is notified when a request is escalated: the next role up.
NEXT_ROLE_UP = {
    Role.VIEWER: Role.OPERATOR,
    Role.OPERATOR: Role.APPROVER,
    Role.APPROVER: Role.ADMIN,
    Role.ADMIN: Role.ADMIN,
}
REASON_EXPIRED = "expired"
MAX_COMMENT_CHARS = 4000


class ApprovalNotPending(ValidationError):
    """The request already reached a final status (someone else decided it first, or it
    expired / was cancelled). The API answers 409."""

    def __init__(self, request: ApprovalRequest):
        super().__init__(
            {"status": f"This request is already {request.status}; nothing was changed."},
        )
        self.status = request.status


# --- creating -------------------------------------------------------------------------------


def _display_arguments(arguments: Any, project) -> Any:
    """The arguments as the inbox shows them: PII-scanned in the ``audit`` direction
    under the project's policy (a block or a failed scan withholds them)."""
    if arguments is None:
        return None
    scanned = audit_data_scan({"arguments": arguments}, project=project)
    if "withheld" in scanned:
        return {"withheld": scanned["withheld"]}
    return scanned.get("arguments", arguments)


def approval_request_create(
    *,
    project_id: int,
    summary: str,
    payload: dict[str, Any],
    approver_role: str | None = None,
    quorum: int = 1,
    subject_kind: str = SubjectKind.TOOL_CALL,
    risk: str = "",
    requested_by_user_id: int | None = None,
    agent_version_id: int | None = None,
) -> int:
    """Create a pending ``ApprovalRequest`` and return its id (the runtime and the flow
    engine reach this through ``governance.approval_port.approval_request``; see its
    docstring for ``payload``). ``expires_at`` / ``escalation_at`` come from the project's
    ``ApprovalSettings`` (``payload["expires_in_seconds"]`` overrides the expiry).
    Audited ``approval.requested``; after commit the new-request notifications are queued.
    Raises ``ValidationError`` for an unknown role, subject kind or a quorum below 1.
    """
    from controlplane.models import Project

    role = approver_role or Role.APPROVER
    if role not in Role.values:
        raise ValidationError({"approver_role": f"Unknown role {role!r}."})
    if subject_kind not in SubjectKind.values:
        raise ValidationError({"subject_kind": f"Unknown subject kind {subject_kind!r}."})
    if not isinstance(quorum, int) or quorum < 1:
        raise ValidationError({"quorum": "The quorum is at least 1 approver."})
    project = Project.objects.get(pk=project_id)
    settings = approval_settings_for(project)
    now = timezone.now()
    expiry_seconds = payload.get("expires_in_seconds")
    if not isinstance(expiry_seconds, int) or expiry_seconds <= 0:
        expiry_seconds = settings.default_expiry_minutes * 60
    arguments = payload.get("arguments")
    arguments = arguments if isinstance(arguments, dict) else None
    version_id = payload.get("policy_version_id")
    if version_id and not PolicyVersion.objects.filter(pk=version_id).exists():
        version_id = None
    turn_id = payload.get("turn_id")
    with transaction.atomic():
        request = ApprovalRequest.objects.create(
            project=project,
            summary=summary[:300],
            payload=payload,
            subject_kind=subject_kind,
            tool=str(payload.get("tool") or "")[:200],
            arguments=arguments,
            display_arguments=_display_arguments(arguments, project),
            args_hash=str(payload.get("args_hash") or "")[:64],
            rule=str(payload.get("rule") or "")[:200],
            policy_version_id=version_id,
            risk=(risk or "")[:16],
            run_id=str(payload.get("run_id") or "")[:64],
            step_id=str(payload.get("step_id") or payload.get("step_run_id") or "")[:64],
            turn_id=turn_id if isinstance(turn_id, int) else None,
            tool_call_id=str(payload.get("tool_call_id") or "")[:200],
            agent=str(payload.get("agent") or "")[:50],
            agent_version_id=agent_version_id,
            requested_by_id=requested_by_user_id,
            approver_role=role,
            quorum=quorum,
            requested_at=now,
            expires_at=now + timedelta(seconds=expiry_seconds) if expiry_seconds else None,
            escalation_at=(
                now + timedelta(minutes=settings.escalation_sla_minutes)
                if settings.escalation_sla_minutes
                else None
            ),
        )
        audit_record(
            action="approval.requested",
            obj=request,
            data={
                "subject_kind": subject_kind,
                "tool": request.tool,
                "args_hash": request.args_hash,
                "policy_version_id": version_id,
                "rule": request.rule,
                "turn_id": request.turn_id,
                "tool_call_id": request.tool_call_id,
                "run_id": request.run_id,
                "approver_role": role,
                "quorum": quorum,
                "risk": request.risk,
                "expires_at": request.expires_at,
            },
        )
        _notify_on_commit(request, "requested")
    return request.pk


# --- deciding -------------------------------------------------------------------------------


def validate_edited_arguments(request: ApprovalRequest, arguments: Any) -> dict[str, Any]:
    """Check edited ``arguments`` against the tool's JSON Schema stored with the request
    and return them. Raises ``ValidationError`` under ``arguments`` with one message per
    schema error (``amount: -5 is less than the minimum of 0``); editing a request without
    a schema, or one that is not a tool call, is refused (fail closed)."""
    import jsonschema

    if request.subject_kind != SubjectKind.TOOL_CALL:
        raise ValidationError({"arguments": "Only a tool call's arguments can be edited."})
    if not isinstance(arguments, dict):
        raise ValidationError({"arguments": "Give the arguments as a JSON object."})
    schema = request.input_schema
    if schema is None:
        raise ValidationError(
            {"arguments": "The tool's schema is not known for this request; edits are refused."}
        )
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator = validator_cls(schema)
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            {"arguments": f"The tool's schema is invalid: {exc.message}"}
        ) from exc
    if errors:
        messages = []
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path)
            messages.append(f"{path}: {error.message}" if path else error.message)
        raise ValidationError({"arguments": messages})
    return arguments


def _refuse(request: ApprovalRequest, user, reason: str, message: str, *, rule: str) -> None:
    """Audit a refused decision (in its own transaction: the refusal must stay on record)
    and raise ``PermissionDenied``."""
    with transaction.atomic():
        audit_record(
            action="approval.decision.refused",
            obj=request,
            data={"rule": rule, "reason": reason, "user": user.get_username()},
        )
    raise PermissionDenied(message)


def approval_decide(
    *,
    request_id: int,
    user,
    verdict: str,
    comment: str = "",
    arguments: dict[str, Any] | None = None,
    via_token: bool = False,
) -> ApprovalRequest:
    """Record ``user``'s ``verdict`` (``approve`` / ``reject``) on a request and return it
    (refreshed). ``arguments``: edited arguments with an approval (validated against the
    tool's schema; the runtime decides them again before the call runs); ``comment``:
    shown to the model when rejected.

    Rules, in order: the request must be pending (else ``ApprovalNotPending``); ``user``
    needs at least the request's ``approver_role`` in its project (``PermissionDenied``,
    audited ``approval.decision.refused``); the user the run acts for may not decide it,
    unless they are an admin and the project allows admin self-approval (audited with
    ``self_approval``); one decision per approver (``ValidationError``); a reject rejects
    at once; ``quorum`` distinct approvals approve (the latest edited arguments win).
    Audited ``approval.decided`` per decision and ``approval.<status>`` when final; a final
    status sends ``approval_decided`` and the decision notifications after commit.
    """
    if verdict not in Verdict.values:
        raise ValidationError({"verdict": f"Use one of: {', '.join(Verdict.values)}."})
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise ValidationError({"comment": f"At most {MAX_COMMENT_CHARS} characters."})
    if arguments is not None and verdict != Verdict.APPROVE:
        raise ValidationError({"arguments": "Edited arguments go with an approval only."})

    request = ApprovalRequest.objects.select_related("project").get(pk=request_id)
    if request.status != ApprovalStatus.PENDING:
        raise ApprovalNotPending(request)
    role = membership_role(user, request.project)
    if role is None or not role.includes(request.approver_role):
        _refuse(
            request,
            user,
            "role",
            f"Deciding this request needs the {request.approver_role} role.",
            rule="approval.role",
        )
    self_approval = request.requested_by_id is not None and request.requested_by_id == user.pk
    if self_approval:
        settings = approval_settings_for(request.project)
        if not (role == Role.ADMIN and settings.allow_admin_self_approval):
            _refuse(
                request,
                user,
                "self_approval",
                "You started this run, so you cannot decide its approval requests.",
                rule="approval.self_approval",
            )
    if arguments is not None:
        arguments = validate_edited_arguments(request, arguments)

    try:
        with transaction.atomic():
            request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
            if request.status != ApprovalStatus.PENDING:
                raise ApprovalNotPending(request)
            if ApprovalDecision.objects.filter(request=request, approver=user).exists():
                raise ValidationError({"verdict": "You already decided this request."})
            decision = ApprovalDecision.objects.create(
                request=request,
                approver=user,
                approver_name=user.get_username(),
                approver_role=role,
                verdict=verdict,
                comment=comment,
                arguments=arguments,
                self_approval=self_approval,
                via_token=via_token,
            )
            audit_record(
                action="approval.decided",
                obj=request,
                data={
                    "verdict": verdict,
                    "comment": comment,
                    "edited": arguments is not None,
                    "self_approval": self_approval,
                    "approver_role": role,
                    "via_token": via_token,
                },
            )
            _settle(request, decision)
    except IntegrityError as exc:
        # The unique (request, approver) constraint: the same approver's second decision
        # raced the first one past the check above.
        raise ValidationError({"verdict": "You already decided this request."}) from exc
    request.refresh_from_db()
    return request


def _settle(request: ApprovalRequest, decision: ApprovalDecision) -> None:
    """Inside the decider's transaction (row locked): move the request to a final status
    when the decisions so far reach one."""
    if decision.verdict == Verdict.REJECT:
        _finish(request, ApprovalStatus.REJECTED, by=decision.approver, reason=decision.comment)
        return
    approvals = list(
        ApprovalDecision.objects.filter(request=request, verdict=Verdict.APPROVE).order_by(
            "decided_at", "pk"
        )
    )
    distinct = {d.approver_id for d in approvals}
    if len(distinct) < request.quorum:
        return
    edited = [d.arguments for d in approvals if d.arguments is not None]
    _finish(
        request,
        ApprovalStatus.APPROVED,
        by=decision.approver,
        reason=decision.comment,
        final_arguments=edited[-1] if edited else None,
    )


def _finish(
    request: ApprovalRequest,
    status: str,
    *,
    by=None,
    reason: str = "",
    final_arguments: dict[str, Any] | None = None,
) -> None:
    """Set the final status (caller holds the row lock), audit ``approval.<status>`` and,
    after commit, send ``approval_decided`` and queue the decision notifications."""
    request.status = status
    request.decided_at = timezone.now()
    request.decided_by = by
    request.reason = reason
    request.final_arguments = final_arguments
    request.save(update_fields=["status", "decided_at", "decided_by", "reason", "final_arguments"])
    audit_record(
        action=f"approval.{status}",
        obj=request,
        data={
            "reason": reason,
            "edited": final_arguments is not None,
            "turn_id": request.turn_id,
            "tool_call_id": request.tool_call_id,
            "run_id": request.run_id,
            "decisions": request.decisions.count(),
        },
    )
    outcome = outcome_of(request)
    payload = dict(request.payload or {})
    project_id = request.project_id

    def send() -> None:
        for receiver, response in approval_decided.send_robust(
            sender=ApprovalRequest, outcome=outcome, payload=payload, project_id=project_id
        ):
            if isinstance(response, Exception):
                logger.error(
                    "approval_decided receiver %r failed for request %s: %s",
                    receiver,
                    outcome.request_id,
                    response,
                    exc_info=response,
                )

    transaction.on_commit(send)
    _notify_on_commit(request, "decided")


def approval_cancel_one(*, request_id: int, reason: str = "cancelled") -> bool:
    """Cancel a pending request (its run was cancelled). Returns False when it was already
    final or does not exist. Audited ``approval.cancelled``; sends ``approval_decided``
    after commit."""
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.status != ApprovalStatus.PENDING:
            return False
        _finish(request, ApprovalStatus.CANCELLED, reason=reason[:300])
    return True


def approval_cancel(*, request_ids: list[int], reason: str = "cancelled") -> list[int]:
    """Cancel the still-pending requests of ``request_ids`` (one transaction and row lock
    each, so a request decided meanwhile keeps its decision). Registered as the approval
    port's canceller. Returns the ids cancelled."""
    return [pk for pk in request_ids if approval_cancel_one(request_id=pk, reason=reason)]


# --- expiry and escalation (beat) -------------------------------------------------------------


def approvals_expire(*, now=None, limit: int = 500) -> int:
    """Expire pending requests whose ``expires_at`` has passed: status ``expired``, reason
    ``expired``, audited ``approval.expired``, ``approval_decided`` sent after each commit
    (the waiting call receives a refusal). One transaction per request, so a request
    decided meanwhile is skipped (``SKIP LOCKED`` on PostgreSQL). Returns how many expired."""
    now = now or timezone.now()
    due = list(
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    expired = 0
    for pk in due:
        with transaction.atomic():
            request = (
                ApprovalRequest.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, status=ApprovalStatus.PENDING, expires_at__lte=now)
                .first()
            )
            if request is None:
                continue
            _finish(request, ApprovalStatus.EXPIRED, reason=REASON_EXPIRED)
            expired += 1
    return expired


def approvals_escalate(*, now=None, limit: int = 500) -> int:
    """Escalate pending requests past their ``escalation_at`` that were not escalated yet:
    ``escalated_at`` and ``escalated_to_role`` (the next role up from ``approver_role``)
    set by a conditional UPDATE (once per request), audited ``approval.escalated``, the
    escalation notifications queued after commit. Returns how many were escalated."""
    now = now or timezone.now()
    due = list(
        ApprovalRequest.objects.filter(
            status=ApprovalStatus.PENDING, escalation_at__lte=now, escalated_at__isnull=True
        )
        .order_by("escalation_at")
        .values_list("pk", "approver_role")[:limit]
    )
    escalated = 0
    for pk, role in due:
        target = NEXT_ROLE_UP[Role(role)]
        with transaction.atomic():
            claimed = ApprovalRequest.objects.filter(
                pk=pk, status=ApprovalStatus.PENDING, escalated_at__isnull=True
            ).update(escalated_at=now, escalated_to_role=target)
            if not claimed:
                continue
            request = ApprovalRequest.objects.get(pk=pk)
            audit_record(
                action="approval.escalated",
                obj=request,
                data={"from_role": role, "to_role": target, "escalation_at": request.escalation_at},
            )
            _notify_on_commit(request, "escalated")
            escalated += 1
    return escalated


# --- settings -------------------------------------------------------------------------------

SETTINGS_FIELDS = (
    "default_expiry_minutes",
    "escalation_sla_minutes",
    "allow_admin_self_approval",
    "notify_emails",
    "webhook_format",
)


def approval_settings_update(
    *, project, changes: dict[str, Any], webhook_url: str | None = None
) -> ApprovalSettings:
    """Change a project's approval settings (``changes``: any of ``SETTINGS_FIELDS``);
    ``webhook_url``: a new URL (stored encrypted), ``""`` removes it, ``None`` keeps it.
    Raises ``ValidationError`` keyed by field. Audited ``approval.settings.updated``
    (changed field names and values; never the webhook URL)."""
    from django.core.validators import URLValidator

    settings = approval_settings_for(project)
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "Not an approval setting."))
    before = {key: getattr(settings, key) for key in SETTINGS_FIELDS}
    for key, value in changes.items():
        setattr(settings, key, value)
    webhook_changed = False
    if webhook_url is not None:
        webhook_url = webhook_url.strip()
        if webhook_url:
            try:
                URLValidator(schemes=["http", "https"])(webhook_url)
            except ValidationError as exc:
                raise ValidationError({"webhook_url": "Give an http(s) URL."}) from exc
            settings.webhook_url_encrypted = encrypt_secret(webhook_url)
        else:
            settings.webhook_url_encrypted = ""
        webhook_changed = True
    settings.full_clean(exclude=["project"])
    changed = {
        k: getattr(settings, k) for k in SETTINGS_FIELDS if getattr(settings, k) != before[k]
    }
    with transaction.atomic():
        settings.save()
        audit_record(
            action="approval.settings.updated",
            obj=project,
            project=project,
            data={"changed": changed, "webhook_changed": webhook_changed},
        )
    return settings


# --- notifications --------------------------------------------------------------------------


def _notify_on_commit(request: ApprovalRequest, event: str) -> None:
    """Queue the email and webhook notifications of ``event`` (requested / escalated /
    decided) after the transaction commits, when the project configured any."""
    settings = approval_settings_for(request.project)
    pk = request.pk
    wants_email = bool(settings.email_list) or event == "escalated"
    wants_webhook = settings.has_webhook
    if not (wants_email or wants_webhook):
        return

    def queue() -> None:
        from approvals.tasks import approval_notify_email, approval_notify_webhook

        try:
            if wants_email:
                approval_notify_email.delay(pk, event)
            if wants_webhook:
                approval_notify_webhook.delay(pk, event)
        except Exception:  # noqa: BLE001 - a broker outage must not undo a decision
            logger.exception("could not queue the %s notifications of approval %s", event, pk)

    transaction.on_commit(queue)
