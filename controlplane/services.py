"""Tenancy writes: projects, memberships, API tokens, worker heartbeats. Each one is audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.audit import audit
from controlplane.models import ApiToken, Membership, Project, Role, TokenScope, WorkerHeartbeat

TOKEN_PREFIX = "cpt"  # noqa: S105 - a label, not a secret
# last_used_at is written at most this often per token, to keep reads read-only.
TOKEN_LAST_USED_RESOLUTION_SECONDS = 60


# --- Projects ---------------------------------------------------------------------------


@transaction.atomic
def project_create(
    *, slug: str, name: str, description: str = "", time_zone: str = "UTC", creator: Any
) -> Project:
    """Create a project and make ``creator`` its admin. ``time_zone`` is an IANA name.
    Raises ``ValidationError``."""
    project = Project(slug=slug, name=name, description=description, time_zone=time_zone)
    project.full_clean()
    project.save()
    Membership.objects.create(user=creator, project=project, role=Role.ADMIN)
    audit(action="project.created", obj=project, data={"slug": slug, "name": name})
    audit(
        action="membership.created",
        project=project,
        object_type="controlplane.membership",
        object_repr=f"{creator} as admin",
        data={"user": creator.get_username(), "role": Role.ADMIN.value},
    )
    return project


@transaction.atomic
def project_update(*, project: Project, **changes: Any) -> Project:
    """Change ``name``, ``description`` and/or ``time_zone`` (IANA name); the slug is
    permanent. Raises ``ValidationError``."""
    allowed = {"name", "description", "time_zone"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "This field cannot be changed."))
    before = {k: getattr(project, k) for k in changes}
    for key, value in changes.items():
        setattr(project, key, value)
    project.full_clean()
    project.save()
    audit(
        action="project.updated",
        obj=project,
        data={"before": before, "after": {k: getattr(project, k) for k in changes}},
    )
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Delete a project and everything in it; its audit events stay (project link nulled)."""
    audit(action="project.deleted", obj=project, data={"slug": project.slug})
    project.delete()


# --- Memberships ------------------------------------------------------------------------


def _admins_left(project: Project, excluding: Membership) -> int:
    return (
        Membership.objects.filter(project=project, role=Role.ADMIN).exclude(pk=excluding.pk).count()
    )


@transaction.atomic
def membership_create(*, project: Project, user: Any, role: Role | str) -> Membership:
    """Add ``user`` to ``project`` with ``role``. Raises ``ValidationError`` if already a member."""
    if Membership.objects.filter(project=project, user=user).exists():
        raise ValidationError({"user": f"{user} is already a member of {project.slug}."})
    membership = Membership(project=project, user=user, role=role)
    membership.full_clean()
    membership.save()
    audit(
        action="membership.created",
        obj=membership,
        data={"user": user.get_username(), "role": membership.role},
    )
    return membership


@transaction.atomic
def membership_update(*, membership: Membership, role: Role | str) -> Membership:
    """Change a member's role. Raises ``ValidationError`` when it would leave no admin."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    before = membership.role
    if (
        before == Role.ADMIN
        and role != Role.ADMIN
        and _admins_left(membership.project, membership) == 0
    ):
        raise ValidationError({"role": "A project needs at least one admin."})
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role"])
    audit(
        action="membership.updated",
        obj=membership,
        data={"user": membership.user.get_username(), "before": before, "after": membership.role},
    )
    return membership


@transaction.atomic
def membership_delete(*, membership: Membership) -> None:
    """Remove a member. Raises ``ValidationError`` when it would leave no admin."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.ADMIN and _admins_left(membership.project, membership) == 0:
        raise ValidationError({"role": "A project needs at least one admin."})
    audit(
        action="membership.deleted",
        obj=membership,
        data={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


# --- API tokens -------------------------------------------------------------------------


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def api_token_create(
    *,
    project: Project,
    user: Any,
    name: str,
    scopes: list[str],
    expires_at: datetime | None | str = "default",
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` in ``project``; return it and its plaintext (shown once).

    ``scopes`` is a non-empty subset of read/write/approve. ``expires_at`` defaults to
    ``API_TOKEN_DEFAULT_TTL_DAYS`` days from now; pass ``None`` for a token that never
    expires. The 'approve' scope needs the approver role. Raises ``ValidationError``.
    """
    if expires_at == "default":
        expires_at = timezone.now() + timedelta(days=settings.API_TOKEN_DEFAULT_TTL_DAYS)
    role = (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )
    if role is None:
        raise ValidationError({"user": f"{user} is not a member of {project.slug}."})
    if TokenScope.APPROVE in (scopes or []) and not Role(role).includes(Role.APPROVER):
        raise ValidationError({"scopes": "The 'approve' scope needs the approver role."})
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        project=project,
        user=user,
        name=name,
        prefix=prefix,
        digest=_digest(raw),
        scopes=list(scopes or []),
        expires_at=expires_at,
    )
    token.full_clean()
    token.save()
    audit(
        action="api_token.created",
        obj=token,
        data={
            "name": name,
            "prefix": prefix,
            "scopes": token.scopes,
            "expires_at": expires_at,
            "for_user": user.get_username(),
        },
    )
    return token, raw


@transaction.atomic
def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke a token now (idempotent: revoking twice keeps the first time)."""
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(action="api_token.revoked", obj=token, data={"prefix": token.prefix})
    return token


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The active token matching ``raw`` whose creator is still a project member, else None.

    Compares SHA-256 digests in constant time; records ``last_used_at`` at most once a
    minute per token.
    """
    parts = raw.split("_")
    if len(parts) < 3 or parts[0] != TOKEN_PREFIX:
        return None
    prefix = parts[1]
    token = ApiToken.objects.select_related("user", "project").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(raw)):
        return None
    if not token.is_active or not token.user.is_active:
        return None
    if not Membership.objects.filter(project_id=token.project_id, user_id=token.user_id).exists():
        return None
    now = timezone.now()
    stale = now - timedelta(seconds=TOKEN_LAST_USED_RESOLUTION_SECONDS)
    if token.last_used_at is None or token.last_used_at < stale:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# --- Workers ----------------------------------------------------------------------------


def worker_heartbeat_record(*, hostname: str) -> WorkerHeartbeat:
    """Upsert the heartbeat row of ``hostname`` (called by the periodic heartbeat task)."""
    now = timezone.now()
    beat, created = WorkerHeartbeat.objects.get_or_create(
        hostname=hostname[:255], defaults={"seen_at": now, "beats": 1}
    )
    if not created:
        WorkerHeartbeat.objects.filter(pk=beat.pk).update(seen_at=now, beats=F("beats") + 1)
        beat.refresh_from_db()
    return beat
