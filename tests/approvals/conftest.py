"""Fixtures for the approvals tests: a project with members of every role and a way to
raise approval requests through the approval port."""

from __future__ import annotations

import pytest

from controlplane.models import Membership, Role
from governance.approval_port import approval_request
from tests.factories import UserFactory

AMOUNT_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "integer", "minimum": 0, "maximum": 1000},
        "to": {"type": "string"},
    },
    "required": ["amount", "to"],
    "additionalProperties": False,
}


def member(project, role: Role, username: str | None = None):
    user = UserFactory(username=username) if username else UserFactory()
    Membership.objects.update_or_create(user=user, project=project, defaults={"role": role})
    return user


def raise_request(project, *, requested_by=None, quorum=1, approver_role=None, **payload_extra):
    payload = {
        "tool": "pay",
        "arguments": {"amount": 40, "to": "bob"},
        "args_hash": "h" * 64,
        "policy_version_id": None,
        "rule": "grant.rule.0",
        "turn_id": None,
        "tool_call_id": "call-1",
        "agent": "helper",
        "agent_version": 1,
        "run_id": "run-1",
        "step_id": "",
        "input_schema": AMOUNT_SCHEMA,
        **payload_extra,
    }
    return approval_request(
        project_id=project.pk,
        summary="helper wants to call pay",
        payload=payload,
        approver_role=approver_role,
        quorum=quorum,
        risk="financial",
        requested_by_user_id=getattr(requested_by, "pk", None),
    )


@pytest.fixture
def approver(project):
    return member(project, Role.APPROVER, "approver1")


@pytest.fixture
def approver2(project):
    return member(project, Role.APPROVER, "approver2")


@pytest.fixture
def operator(project):
    return member(project, Role.OPERATOR, "operator1")
