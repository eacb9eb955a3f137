"""Project policies: versioned YAML documents (writes and reads).

Re-exported by ``governance.services`` (writes) and ``governance.selectors`` (reads).
A project's policy with slug ``default`` applies to all its agents; an agent version may
name another policy of the project. A document that does not validate never becomes a
version, so the active version stays the last good one.
"""

from __future__ import annotations

import difflib
import time
from datetime import datetime
from functools import cache
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max, QuerySet

from controlplane.context import signed_in_user
from governance.engine import PolicySnapshot
from governance.models import Policy, PolicyActivation, PolicyVersion
from governance.policy import (
    PolicyDocument,
    PolicyDocumentError,
    document_from_spec,
    parse_policy_text,
)

DEFAULT_POLICY_SLUG = "default"


def policy_validation_error(
    exc: PolicyDocumentError, *, field: str = "document"
) -> ValidationError:
    """A ``ValidationError`` keyed by field path: ``document.caps.max_steps_per_run``
    (``document`` for problems of the whole text), each with its messages."""
    errors: dict[str, list[str]] = {}
    for issue in exc.issues:
        key = f"{field}.{issue.path}" if issue.path else field
        errors.setdefault(key, []).append(issue.message)
    return ValidationError(errors)


def validate_policy_text(text: str):
    """Parse ``text``; raise ``ValidationError`` keyed by path (see above) when invalid."""
    try:
        return parse_policy_text(text)
    except PolicyDocumentError as exc:
        raise policy_validation_error(exc) from exc


# --- writes -----------------------------------------------------------------------------


@transaction.atomic
def policy_create(*, project, slug: str, description: str = "", actor=None) -> Policy:
    """Create an empty policy (no version yet: the built-in defaults apply until one is
    saved). Raises ``ValidationError`` for a bad or taken slug."""
    from governance.services import audit_record

    policy = Policy(project=project, slug=slug, description=description)
    policy.full_clean()
    policy.save()
    audit_record(action="policy.created", obj=policy, data={"slug": slug})
    return policy


@transaction.atomic
def policy_version_create(
    *, policy: Policy, document: str, change_note: str = "", activate: bool = True, actor=None
) -> PolicyVersion:
    """Validate ``document`` (YAML) and store it as the next version; activate it unless
    ``activate`` is false.

    Raises ``ValidationError`` keyed by ``document.<path>`` listing every problem; then
    nothing is written and the active version is unchanged. Numbers are assigned under a
    row lock on the policy, so concurrent saves get consecutive numbers.
    """
    from governance.services import audit_record

    parsed = validate_policy_text(document)
    if len(change_note) > 500:
        raise ValidationError({"change_note": "At most 500 characters."})
    locked = Policy.objects.select_for_update().get(pk=policy.pk)
    number = (locked.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = PolicyVersion.objects.create(
        policy=locked,
        number=number,
        document=document,
        spec=parsed.spec,
        change_note=change_note,
        created_by=signed_in_user(actor),
    )
    audit_record(
        action="policy.version.created",
        obj=locked,
        data={"version": number, "change_note": change_note, "spec": parsed.spec},
    )
    if activate:
        _activate(policy=locked, version=version, actor=actor)
    policy.active_version = locked.active_version
    return version


def _activate(*, policy: Policy, version: PolicyVersion, actor) -> None:
    from governance.services import audit_record

    previous = policy.active_version
    policy.active_version = version
    policy.save(update_fields=["active_version", "updated_at"])
    forget_cached_policies(policy.project_id)
    transaction.on_commit(lambda: forget_cached_policies(policy.project_id))
    PolicyActivation.objects.create(
        policy=policy, version=version, activated_by=signed_in_user(actor)
    )
    audit_record(
        action="policy.activated",
        obj=policy,
        data={
            "version": version.number,
            "previous_version": previous.number if previous else None,
            "rollback": bool(previous and version.number < previous.number),
        },
    )


@transaction.atomic
def policy_activate(*, version: PolicyVersion, actor=None) -> Policy:
    """Make ``version`` its policy's active version (rollback = activating an older one).
    Activating the active version changes nothing."""
    policy = Policy.objects.select_for_update().get(pk=version.policy_id)
    if policy.active_version_id != version.pk:
        _activate(policy=policy, version=version, actor=actor)
    return policy


# --- reads ------------------------------------------------------------------------------


def policies_for_project(project) -> QuerySet[Policy]:
    return Policy.objects.filter(project=project).select_related("active_version")


def policy_snapshot(version: PolicyVersion | None) -> PolicySnapshot:
    """The engine's view of a stored version (``None``: the built-in defaults)."""
    if version is None:
        return PolicySnapshot.defaults()
    return PolicySnapshot(
        version_id=version.pk,
        label=f"{version.policy.slug} v{version.number}",
        document=document_from_spec(version.spec),
    )


# Parsed documents of policy versions (immutable) by (database, version id, created_at):
# parsing a spec is most of what reading the policy in force costs. The timestamp guards
# against an id used again after a rolled-back insert (SQLite tests).
_DOCUMENTS_KEPT = 256
_documents: dict[tuple[str, int, Any], PolicyDocument] = {}


def _policy_document(version_id: int, created_at: Any) -> PolicyDocument:
    key = (connection.settings_dict["NAME"], version_id, created_at)
    document = _documents.get(key)
    if document is None:
        spec = PolicyVersion.objects.values_list("spec", flat=True).get(pk=version_id)
        document = document_from_spec(spec)
        if len(_documents) >= _DOCUMENTS_KEPT:
            _documents.pop(next(iter(_documents)))
        _documents[key] = document
    return document


@cache
def _pointer_sql(vendor: str, by_id: bool) -> str:
    qn = connection.ops.quote_name
    where = "p.id = %s AND p.project_id = %s" if by_id else "p.project_id = %s AND p.slug = %s"
    return (
        f"SELECT p.{qn('slug')}, v.{qn('id')}, v.{qn('number')}, v.{qn('created_at')} "  # noqa: S608 - names are ours
        f"FROM {qn(Policy._meta.db_table)} p LEFT JOIN {qn(PolicyVersion._meta.db_table)} v "
        f"ON v.{qn('id')} = p.{qn('active_version_id')} WHERE {where}"
    )


def effective_policy(*, project_id: int, policy_id: int | None = None) -> PolicySnapshot:
    """The policy in force for a call: the active version of ``policy_id`` when given
    (an agent version's own policy), else of the project's ``default`` policy; the
    built-in defaults when there is none or it has no version yet.

    One hand-written query reads which version is active (every call: an activation
    applies to the next call); the parsed document of a version is kept per process
    (versions are immutable).

    Raises ``Policy.DoesNotExist`` when ``policy_id`` is not a policy of the project
    (callers fail closed).
    """
    if policy_id is not None:
        sql, params = _pointer_sql(connection.vendor, True), [policy_id, project_id]
    else:
        sql, params = _pointer_sql(connection.vendor, False), [project_id, DEFAULT_POLICY_SLUG]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        if policy_id is not None:
            raise Policy.DoesNotExist(f"policy {policy_id} is not a policy of project {project_id}")
        return PolicySnapshot.defaults()
    slug, version_id, number, created_at = row
    if version_id is None:
        return PolicySnapshot.defaults()
    return PolicySnapshot(
        version_id=version_id,
        label=f"{slug} v{number}",
        document=_policy_document(version_id, created_at),
    )


AUDIT_POLICY_CACHE_SECONDS = 1.0
_audit_policies: dict[int, tuple[float, PolicySnapshot]] = {}


def audit_policy(*, project_id: int) -> PolicySnapshot:
    """``effective_policy(project_id=...)`` for the audit log's PII scan, kept per process
    for at most ``AUDIT_POLICY_CACHE_SECONDS``: every audit event needs it, and reading it
    each time was about a quarter of a governed call's cost. Activating a version in
    this process forgets the project's entry at once (and again at commit); another
    process sees the change within the TTL."""
    cached = _audit_policies.get(project_id)
    now = time.monotonic()
    if cached is not None and now - cached[0] < AUDIT_POLICY_CACHE_SECONDS:
        return cached[1]
    snapshot = effective_policy(project_id=project_id)
    _audit_policies[project_id] = (now, snapshot)
    return snapshot


def forget_cached_policies(project_id: int | None = None) -> None:
    """Drop the cached audit policy of ``project_id`` (all projects when None, and the
    parsed policy documents too)."""
    if project_id is None:
        _audit_policies.clear()
        _documents.clear()
    else:
        _audit_policies.pop(project_id, None)


def policy_version_active_at(*, policy: Policy, at: datetime) -> PolicyVersion | None:
    """The version of ``policy`` that was active at ``at`` (None before the first)."""
    activation = (
        PolicyActivation.objects.filter(policy=policy, activated_at__lte=at)
        .select_related("version")
        .order_by("-activated_at", "-id")
        .first()
    )
    return activation.version if activation else None


def policy_diff(old: PolicyVersion, new: PolicyVersion) -> dict[str, Any]:
    """How two versions differ: ``document`` is a unified diff of the YAML texts (lines),
    ``changes`` lists ``{"path", "old", "new"}`` for every differing leaf of the specs."""
    document = list(
        difflib.unified_diff(
            old.document.splitlines(),
            new.document.splitlines(),
            fromfile=f"v{old.number}",
            tofile=f"v{new.number}",
            lineterm="",
        )
    )
    changes: list[dict[str, Any]] = []
    _spec_changes(old.spec, new.spec, "", changes)
    return {"old": old.number, "new": new.number, "document": document, "changes": changes}


_MISSING = object()


def _spec_changes(old: Any, new: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _spec_changes(
                old.get(key, _MISSING),
                new.get(key, _MISSING),
                f"{path}.{key}" if path else key,
                out,
            )
        return
    if old != new:
        out.append(
            {
                "path": path,
                "old": None if old is _MISSING else old,
                "new": None if new is _MISSING else new,
            }
        )
