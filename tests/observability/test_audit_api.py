"""The audit log over REST: filters, cursor pages that stay stable while events are appended,
JSON Lines and CSV exports (streamed, never holding PII), the chain verification, RBAC on
every endpoint and isolation between projects."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest

from controlplane.context import Actor, acting_as
from controlplane.models import Role
from controlplane.services import project_create
from governance.models import AuditEvent
from governance.services import audit_record, policy_create, policy_version_create
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def url(project, suffix=""):
    return f"/api/v1/projects/{project.slug}/audit-events/{suffix}"


@pytest.fixture
def events(project):
    """A few events of the project: two runs, an agent version, a user action."""
    alice = Actor(kind="user", name="alice")
    bot = Actor(kind="agent_version", name="agent:triage@v2", ref="7")
    with acting_as(bot):
        audit_record(
            action="tool.decision",
            project=project,
            object_type="agents.agentversion",
            object_id="7",
            object_repr="triage@v2",
            data={"run_id": "run-a", "tool": "echo", "effect": "allow", "rule": "grant"},
        )
        audit_record(
            action="tool.executed",
            project=project,
            object_type="agents.agentversion",
            object_id="7",
            object_repr="triage@v2",
            data={"run_id": "run-b", "tool": "echo", "ok": True},
        )
    with acting_as(alice):
        audit_record(
            action="budget.created",
            project=project,
            object_type="governance.budget",
            object_id="3",
            object_repr="monthly",
            data={"note": f"ask {EMAIL}"},
        )
    return project


def _sequences(response):
    assert response.status_code == 200, response.content
    return [e["sequence"] for e in response.json()["results"]]


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        ("action_prefix=tool.", ["tool.executed", "tool.decision"]),
        ("action=budget.created", ["budget.created"]),
        ("actor=alice", ["budget.created"]),
        ("agent=triage", ["tool.executed", "tool.decision"]),
        ("agent=tri", []),
        ("run=run-a", ["tool.decision"]),
        ("object=governance.budget:3", ["budget.created"]),
        ("actor_kind=agent_version&run=run-b", ["tool.executed"]),
    ],
)
def test_it_filters_events(admin_client_api, events, query, actions):
    response = admin_client_api.get(url(events) + "?" + query)
    assert response.status_code == 200, response.content
    found = [
        e["action"]
        for e in response.json()["results"]
        if not e["action"].startswith(("project.", "membership."))
    ]
    assert found == actions


def test_time_range_and_trace_filters(admin_client_api, events):
    event = AuditEvent.objects.filter(project=events, action="tool.executed").get()
    after = (event.occurred_at - timedelta(microseconds=1)).isoformat()
    before = (event.occurred_at + timedelta(microseconds=1)).isoformat()
    response = admin_client_api.get(url(events), {"from": after, "to": before})
    assert _sequences(response) == [event.sequence]
    response = admin_client_api.get(url(events), {"trace_id": event.trace_id or "none"})
    assert event.sequence in _sequences(response) or not event.trace_id


def test_a_malformed_object_filter_is_a_400_by_field(admin_client_api, events):
    response = admin_client_api.get(url(events), {"object": "no-colon"})
    assert response.status_code == 400
    assert "object" in response.json()
    response = admin_client_api.get(url(events), {"from": "yesterday"})
    assert response.status_code == 400 and "from" in response.json()


def test_cursor_pages_are_stable_while_events_are_appended(admin_client_api, project):
    for i in range(7):
        audit_record(action="test.page", project=project, data={"i": i})
    first = admin_client_api.get(url(project), {"page_size": 3, "action": "test.page"}).json()
    seen = [e["data"]["i"] for e in first["results"]]
    for i in range(7, 10):  # newer events arrive between page loads
        audit_record(action="test.page", project=project, data={"i": i})
    next_url = first["next"]
    while next_url:
        page = admin_client_api.get(next_url).json()
        seen += [e["data"]["i"] for e in page["results"]]
        next_url = page["next"]
    assert seen == [6, 5, 4, 3, 2, 1, 0]


def _streamed(response) -> str:
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def test_jsonl_export_streams_every_matching_event_oldest_first(admin_client_api, events):
    body = _streamed(admin_client_api.get(url(events, "export/jsonl/"), {"action_prefix": "tool."}))
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["action"] for line in lines] == ["tool.decision", "tool.executed"]
    assert lines[0]["data"]["run_id"] == "run-a"
    assert set(lines[0]) >= {"sequence", "occurred_at", "actor_name", "hash", "prev_hash"}


def test_csv_export_has_a_header_and_one_row_per_event(admin_client_api, events):
    response = admin_client_api.get(url(events, "export/csv/"), {"agent": "triage"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_streamed(response))))
    assert [r["action"] for r in rows] == ["tool.decision", "tool.executed"]
    assert json.loads(rows[1]["data"])["run_id"] == "run-b"


def test_exports_never_hold_pii(admin_client_api, admin_user, project):
    policy = policy_create(project=project, slug="default", actor=admin_user)
    policy_version_create(
        policy=policy,
        document="pii:\n  audit:\n    EMAIL_ADDRESS: {action: redact}\n"
        "    CREDIT_CARD: {action: mask}\n",
        actor=admin_user,
    )
    audit_record(
        action="test.pii",
        project=project,
        data={"to": EMAIL, "card": CARD, "nested": {"note": f"call {EMAIL}"}},
    )
    for suffix in ("export/jsonl/", "export/csv/"):
        body = _streamed(admin_client_api.get(url(project, suffix), {"action": "test.pii"}))
        assert "test.pii" in body
        # Not in the hex digests either way: a hash may contain "4111" by chance.
        for digest in re.findall(r"[0-9a-f]{64}", body):
            body = body.replace(digest, "")
        assert EMAIL not in body and CARD not in body and "4111" not in body
    listed = json.dumps(admin_client_api.get(url(project), {"action": "test.pii"}).json())
    assert EMAIL not in listed


def test_verify_reports_the_chain_status(admin_client_api, events):
    response = admin_client_api.get(url(events, "verify/"))
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["first_broken_sequence"] is None
    assert body["checked"] == AuditEvent.objects.count()


@pytest.mark.parametrize(
    ("suffix", "min_role"),
    [
        ("", Role.VIEWER),
        ("export/jsonl/", Role.VIEWER),
        ("export/csv/", Role.VIEWER),
        ("verify/", Role.ADMIN),
    ],
)
def test_rbac_on_every_audit_endpoint(events, suffix, min_role):
    check_rbac(method="get", url=url(events, suffix), project=events, min_role=min_role)


def test_projects_never_see_each_others_events(admin_client_api, admin_user, events):
    other = project_create(creator=admin_user, slug="elsewhere", name="Elsewhere")
    audit_record(action="test.secret", project=other, data={"run_id": "run-a"})
    response = admin_client_api.get(url(events), {"run": "run-a"})
    assert [e["action"] for e in response.json()["results"]] == ["tool.decision"]
    body = _streamed(admin_client_api.get(url(events, "export/jsonl/")))
    assert "test.secret" not in body
    seq = AuditEvent.objects.get(action="test.secret").sequence
    assert admin_client_api.get(url(events, f"{seq}/")).status_code == 404
