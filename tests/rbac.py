"""Reusable RBAC checks for any endpoint or page: anonymous, wrong project, each role.

Usage (API)::

    check_rbac(
        method="post",
        url=lambda: f"/api/v1/projects/{project.slug}/members/",
        data=lambda: {"username": UserFactory().username, "role": "viewer"},
        project=project,
        min_role=Role.ADMIN,
        audit_action="membership.created",
    )

For every principal it sends one request and asserts the status:
- anonymous: 401 for the API, a redirect to the login page for UI pages;
- a signed-in user of another project (an admin there): 404, never 403;
- each role below ``min_role``: 403; ``min_role`` and above: a success status.
``url`` and ``data`` may be callables, called once per request, so each successful
write gets a fresh object. With ``audit_action``, every success must append exactly one
event with that action (and at least one per success overall), and every refusal none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.test import Client
from rest_framework.test import APIClient

from controlplane.models import Membership, Project, Role
from governance.models import AuditEvent
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

ROLES_IN_ORDER = [Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN]
SUCCESS = (200, 201, 204, 302)


@dataclass
class RbacResult:
    statuses: dict[str, int] = field(default_factory=dict)


def _value(v: Any) -> Any:
    return v() if callable(v) else v


def member_client(project: Project, role: Role, *, api: bool = True, username: str | None = None):
    """A client signed in as a fresh user holding ``role`` in ``project``."""
    user = UserFactory(username=username) if username else UserFactory()
    Membership.objects.update_or_create(user=user, project=project, defaults={"role": role})
    client = APIClient() if api else Client()
    client.force_login(user)
    return client, user


def check_rbac(
    *,
    method: str,
    url: str | Callable[[], str],
    project: Project,
    min_role: Role,
    data: Any = None,
    api: bool = True,
    success: tuple[int, ...] = SUCCESS,
    audit_action: str | None = None,
) -> RbacResult:
    result = RbacResult()

    def send(client, label: str, expect_success: bool) -> tuple[int, Any]:
        before = (
            AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
        )
        kwargs = {}
        payload = _value(data)
        if payload is not None:
            kwargs["data"] = payload
        if api and payload is not None:
            kwargs["format"] = "json"
        response = getattr(client, method.lower())(_value(url), **kwargs)
        result.statuses[label] = response.status_code
        after_events = AuditEvent.objects.filter(sequence__gt=before).values_list(
            "action", flat=True
        )
        succeeded = expect_success and response.status_code in success
        if audit_action and succeeded:
            assert audit_action in list(after_events), (
                f"{label}: {method.upper()} succeeded ({response.status_code}) but wrote no "
                f"'{audit_action}' audit event (wrote {list(after_events)})"
            )
        if not succeeded:
            written = [a for a in after_events if not a.startswith("auth.")]
            assert not written, f"{label}: refused request still wrote audit events {written}"
        return response.status_code, response

    # Anonymous.
    anon = APIClient() if api else Client()
    status, response = send(anon, "anonymous", expect_success=False)
    if api:
        assert status == 401, f"anonymous: expected 401, got {status}"
    else:
        assert status == 302 and "/login/" in response["Location"], (
            f"anonymous: expected a redirect to the login page, got {status}"
        )

    # A user who is an admin of another project only.
    other = ProjectFactory()
    outsider = UserFactory()
    MembershipFactory(user=outsider, project=other, role=Role.ADMIN)
    client = APIClient() if api else Client()
    client.force_login(outsider)
    status, _ = send(client, "other-project admin", expect_success=False)
    assert status == 404, f"other-project admin: expected 404, got {status}"

    # Each role in the project.
    for role in ROLES_IN_ORDER:
        client, _user = member_client(project, role, api=api)
        status, response = send(client, role.value, expect_success=role.includes(min_role))
        if role.includes(min_role):
            assert status in success, (
                f"{role.value}: expected success {success}, got {status}: "
                f"{getattr(response, 'content', b'')[:300]!r}"
            )
        else:
            assert status == 403, f"{role.value}: expected 403, got {status}"
    return result
