"""Approvals data: approval requests raised when a policy decides require_approval."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


class ApprovalRequest(models.Model):
    """A risky action held for a human decision (the governed call path, step 6).

    ``summary`` says what is asked in one line; ``payload`` holds the action as proposed.
    The binding to a policy version and arguments hash, quorum, expiry and escalation
    are added by the approvals inbox issue.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="approval_requests"
    )
    status = models.CharField(
        max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING, db_index=True
    )
    summary = models.CharField(max_length=300)
    payload = models.JSONField(default=dict, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["project", "status"], name="approval_project_status")]

    def __str__(self) -> str:
        return self.summary
