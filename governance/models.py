"""Governance data: the append-only, hash-chained audit log and its chain head."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from governance.audit_chain import GENESIS_HASH_VALUE as GENESIS_HASH


class AuditLogImmutableError(Exception):
    """Raised when code tries to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogImmutableError("audit events are append-only")

    def delete(self):
        raise AuditLogImmutableError("audit events are append-only")


class AuditEvent(models.Model):
    """One audit event: who did what to which object, when, in which project and request.

    Append-only: the model refuses updates and deletes, and on PostgreSQL a trigger
    (migration 0002) rejects UPDATE, DELETE and TRUNCATE, except the ``SET NULL`` of the
    ``actor``/``project`` foreign keys when a user or project is deleted. Those two
    columns are not hashed; their frozen counterparts (``actor_name``, ``actor_ref``,
    ``project_ref``) are. ``hash`` is SHA-256 over the canonical encoding of the event
    including ``prev_hash`` (see ``governance.audit_chain``), so any change to a stored
    event, or a removed one, breaks the chain that ``manage.py audit_verify`` walks.
    """

    sequence = models.PositiveBigIntegerField(primary_key=True)
    occurred_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_kind = models.CharField(max_length=20)
    actor_name = models.CharField(max_length=200)
    actor_ref = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(
        "controlplane.Project",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    project_ref = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=128, blank=True, db_index=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        indexes = [
            models.Index(fields=["project", "sequence"], name="audit_project_seq"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutableError("audit events are append-only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutableError("audit events are append-only")


class AuditChainHead(models.Model):
    """The single row holding the last sequence number and hash of the audit chain.

    Appending locks this row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite takes its
    database write lock at BEGIN IMMEDIATE), so concurrent writers form one chain.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_head_single")]

    def __str__(self) -> str:
        return f"audit head #{self.sequence}"
