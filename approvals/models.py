"""Approvals data: approval requests raised when a policy decides require_approval, the
approvers' decisions on them, and each project's approval settings."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from controlplane.models import Role


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class SubjectKind(models.TextChoices):
    TOOL_CALL = "tool_call", "Tool call"
    FLOW_STEP = "flow_step", "Flow approval step"
    BUDGET_OVERRIDE = "budget_override", "Budget override"


class Verdict(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class WebhookFormat(models.TextChoices):
    JSON = "json", "JSON"
    SLACK = "slack", 'Slack-compatible ({"text": ...})'


class ApprovalRequest(models.Model):
    """A risky action held for a human decision (the governed call path, step 6).

    ``summary`` says what is asked in one line; ``payload`` holds the action as proposed
    (see ``governance.approval_port``). The proposed call: ``tool``, ``arguments`` (as the
    model proposed them after the ``tool_input`` PII scan; the inbox shows a redacted
    copy, ``display_arguments``), ``args_hash`` (SHA-256 of the arguments as proposed),
    ``rule`` and ``policy_version`` that required approval, ``risk``. Where it came from:
    ``run_id`` / ``step_id``, ``turn_id`` / ``tool_call_id``, ``agent`` (slug) and
    ``agent_version``, ``requested_by`` (the user the run acts for: never its approver,
    see ``ApprovalSettings.allow_admin_self_approval``). Who decides: members with at
    least ``approver_role``, ``quorum`` distinct approvers; one rejection rejects.
    ``expires_at``: still pending then -> expired (reason ``expired``);
    ``escalation_at``: still pending then -> ``escalated_at`` set and the next role up
    (``escalated_to_role``) notified. A final status sets ``decided_at``, ``decided_by``
    (the approver whose decision made it final; none for expiry), ``final_arguments``
    (edited arguments approved, ``None`` for the proposed ones) and ``reason`` (the
    deciding comment, or ``expired`` / the cancel reason).
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="approval_requests"
    )
    status = models.CharField(
        max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING, db_index=True
    )
    summary = models.CharField(max_length=300)
    payload = models.JSONField(default=dict, blank=True)
    subject_kind = models.CharField(
        max_length=20, choices=SubjectKind.choices, default=SubjectKind.TOOL_CALL
    )
    tool = models.CharField(max_length=200, blank=True)
    arguments = models.JSONField(null=True, blank=True)
    display_arguments = models.JSONField(null=True, blank=True)
    args_hash = models.CharField(max_length=64, blank=True)
    rule = models.CharField(max_length=200, blank=True)
    policy_version = models.ForeignKey(
        "governance.PolicyVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    risk = models.CharField(max_length=16, blank=True, db_index=True)
    run_id = models.CharField(max_length=64, blank=True, db_index=True)
    step_id = models.CharField(max_length=64, blank=True)
    turn_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    agent = models.CharField(max_length=50, blank=True, db_index=True)
    agent_version = models.ForeignKey(
        "agents.AgentVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    approver_role = models.CharField(max_length=16, choices=Role.choices, default=Role.APPROVER)
    quorum = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    escalation_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_to_role = models.CharField(max_length=16, choices=Role.choices, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    final_arguments = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        indexes = [
            models.Index(fields=["project", "status"], name="approval_project_status"),
            models.Index(fields=["status", "expires_at"], name="approval_status_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(quorum__gte=1), name="approval_quorum_gte_1"),
        ]

    def __str__(self) -> str:
        return self.summary

    @property
    def is_final(self) -> bool:
        return self.status != ApprovalStatus.PENDING

    @property
    def input_schema(self) -> dict | None:
        """The tool's JSON Schema as it was when the call parked (``payload["input_schema"]``),
        or ``None`` when the requester did not send one (editing is then refused)."""
        schema = (self.payload or {}).get("input_schema")
        return schema if isinstance(schema, dict) else None


class ApprovalDecision(models.Model):
    """One approver's verdict on one request: ``approve`` (optionally with edited
    ``arguments``) or ``reject`` with a ``comment``. Unique per (request, approver): an
    approver decides a request once. ``self_approval`` marks the audited exception of an
    admin deciding a run they started (``ApprovalSettings.allow_admin_self_approval``)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    approver_name = models.CharField(max_length=150)
    approver_role = models.CharField(max_length=16, choices=Role.choices)
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    arguments = models.JSONField(null=True, blank=True)
    self_approval = models.BooleanField(default=False)
    via_token = models.BooleanField(default=False)
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["decided_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver"], name="approval_decision_one_per_approver"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.approver_name} {self.verdict} #{self.request_id}"


class ApprovalSettings(models.Model):
    """A project's approval settings (one row per project, created with defaults on first
    use by ``approvals.selectors.approval_settings_for``).

    ``default_expiry_minutes``: a new request expires this long after it was raised
    (0: never). ``escalation_sla_minutes``: still pending this long -> escalated to the
    next role up (0: never). ``allow_admin_self_approval``: an admin may decide requests of
    runs they started themselves (each such decision is audited as a self-approval).
    Notifications on new request, escalation and decision: ``notify_emails``
    (comma-separated addresses) and a webhook (``webhook_url_encrypted``: Fernet, since
    Slack-style URLs carry a secret; ``webhook_format`` JSON or Slack-compatible).
    """

    project = models.OneToOneField(
        "controlplane.Project", on_delete=models.CASCADE, related_name="approval_settings"
    )
    default_expiry_minutes = models.PositiveIntegerField(
        default=24 * 60, validators=[MaxValueValidator(60 * 24 * 90)]
    )
    escalation_sla_minutes = models.PositiveIntegerField(
        default=60, validators=[MaxValueValidator(60 * 24 * 90)]
    )
    allow_admin_self_approval = models.BooleanField(default=False)
    notify_emails = models.TextField(blank=True)
    webhook_url_encrypted = models.TextField(blank=True, editable=False)
    webhook_format = models.CharField(
        max_length=8, choices=WebhookFormat.choices, default=WebhookFormat.JSON
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "approval settings"

    def __str__(self) -> str:
        return f"approval settings of {self.project}"

    @property
    def email_list(self) -> list[str]:
        return [e.strip() for e in self.notify_emails.replace("\n", ",").split(",") if e.strip()]

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook_url_encrypted)

    def clean(self) -> None:
        from django.core.validators import validate_email

        bad = []
        for address in self.email_list:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        if bad:
            raise ValidationError({"notify_emails": f"Not an email address: {', '.join(bad)}."})
