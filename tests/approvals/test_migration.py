"""The inbox migration keeps existing approval requests and fills the new columns from
their payload."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

OLD = [("approvals", "0001_initial")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_existing_requests_survive_and_gain_their_columns(project):
    latest = [("approvals", "0002_inbox")]
    old_apps = migrate(OLD)
    try:
        Old = old_apps.get_model("approvals", "ApprovalRequest")
        row = Old.objects.create(
            project_id=project.pk,
            summary="helper wants to call notify",
            payload={
                "tool": "notify",
                "arguments": {"text": "big"},
                "args_hash": "a" * 64,
                "policy_version_id": None,
                "rule": "grant.rule.1",
                "turn_id": 7,
                "tool_call_id": "call-9",
                "agent": "helper",
                "run_id": "turn-7",
                "step_id": "",
                "approver_role": "admin",
            },
        )
    finally:
        new_apps = migrate(latest)
    New = new_apps.get_model("approvals", "ApprovalRequest")
    migrated = New.objects.get(pk=row.pk)
    assert migrated.status == "pending" and migrated.summary == "helper wants to call notify"
    assert (migrated.tool, migrated.arguments, migrated.args_hash) == (
        "notify",
        {"text": "big"},
        "a" * 64,
    )
    assert (migrated.turn_id, migrated.tool_call_id, migrated.agent) == (7, "call-9", "helper")
    assert (migrated.rule, migrated.run_id, migrated.approver_role) == (
        "grant.rule.1",
        "turn-7",
        "admin",
    )
    assert migrated.quorum == 1 and migrated.subject_kind == "tool_call"
