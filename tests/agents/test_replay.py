"""Policy replay: recorded calls re-decided under stricter and looser drafts give exactly
the expected changes, with no side effects; REST (RBAC, 400 with paths) and the task."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import ReplayJob
from agents.replay import replay, replay_draft_validate, replay_job_create, replay_job_run
from controlplane.models import Role
from governance.budgets import budget_create
from governance.models import (
    AuditEvent,
    BudgetPeriod,
    BudgetReservation,
    CircuitBreaker,
    CostEntry,
    UsageCounter,
)
from tests.rbac import check_rbac
from tests.seed import GRANTS, seed_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(project, admin_user):
    return seed_project(project, admin_user)


def window():
    now = timezone.now()
    return now - timedelta(hours=1), now + timedelta(hours=1)


def run(project, kind, target, draft):
    starts_at, ends_at = window()
    parsed = replay_draft_validate(project=project, kind=kind, target=target, draft=draft)
    return replay(project=project, draft=parsed, starts_at=starts_at, ends_at=ends_at).as_data()


def changed(result):
    return sorted(
        (c["kind"], c.get("tool") or c.get("call_id"), tuple(c["changes"]))
        for c in result["changes"]
    )


def test_replay_reproduces_the_record_under_its_own_config(project, seeded):
    result = run(project, "grants", "helper", {"grants": GRANTS})
    summary = result["summary"]
    assert summary["tool_calls"] == 7
    assert summary["model_calls"] == 0  # a grant set changes no model call
    assert summary["changed_calls"] == 0 and result["changes"] == []
    assert summary["baseline_mismatches"] == 0
    assert result["limitations"]


def test_a_stricter_grant_set_denies_and_asks_for_approval(project, seeded):
    stricter = [
        {"tool": "echo", "rules": [{"when": 'args.text == "hi"', "then": "deny"}]},
        GRANTS[1],
        {
            "tool": "ping",
            "effect": "require_approval",
            "rate_limit_calls": 1,
            "rate_limit_window_seconds": 3600,
        },
    ]
    result = run(project, "grants", "helper", {"grants": stricter})
    assert changed(result) == [
        ("tool_call", "echo", ("newly_denied",)),
        ("tool_call", "ping", ("newly_requiring_approval",)),
    ]
    summary = result["summary"]
    assert (summary["newly_denied"], summary["newly_requiring_approval"]) == (1, 1)
    echo = next(c for c in result["changes"] if c["tool"] == "echo")
    assert echo["recorded"] == {"effect": "allow", "rule": "grant.effect"}
    assert echo["after"]["rule"] == "grant.rule.1"


def test_a_looser_grant_set_allows_what_was_refused(project, seeded):
    looser = [{"tool": "echo"}, {"tool": "notify"}, {"tool": "ping"}, {"tool": "secret"}]
    result = run(project, "grants", "helper", {"grants": looser})
    assert changed(result) == [
        ("tool_call", "notify", ("newly_allowed",)),
        ("tool_call", "notify", ("newly_allowed",)),
        ("tool_call", "ping", ("newly_allowed",)),
        ("tool_call", "secret", ("newly_allowed",)),
    ]
    assert result["summary"]["newly_allowed"] == 4


def test_a_stricter_policy_caps_the_run_and_refuses_the_model_endpoint(project, seeded):
    document = "caps:\n  max_tool_calls_per_run: 1\nallowed_model_endpoints: [other]\n"
    result = run(project, "policy", "default", {"document": document})
    tools = [c for c in changed(result) if c[0] == "tool_call"]
    assert tools == [
        ("tool_call", "notify", ("newly_denied",)),
        ("tool_call", "ping", ("newly_denied",)),
    ]
    summary = result["summary"]
    # The turn parked after its 5th model call (approval), so 5 were recorded.
    assert summary["model_calls"] == 5 and summary["tool_calls"] == 7
    models = [c for c in result["changes"] if c["kind"] == "model_call"]
    assert len(models) == 5
    assert {c["after"]["rule"] for c in models} == {"model.endpoint_not_allowed"}
    assert summary["newly_denied"] == 7


def test_an_agent_version_draft_with_a_tight_budget_hits_it(project, admin_user, seeded):
    budget_create(
        project=project,
        name="agentcap",
        scope="agent",
        period="day",
        limit_usd=Decimal("0.0001"),
    )
    config = {
        "model_endpoint": "scripted",
        "model_name": "scripted-1",
        "instructions": "You help.",
        "max_output_tokens": 256,
        "grants": GRANTS,
        "budget": "agentcap",
    }
    result = run(project, "agent_version", "helper", {"config": config})
    summary = result["summary"]
    assert summary["model_calls"] == 5
    assert summary["budget_hit"] == 5 and summary["newly_denied"] == 5
    assert {c["after"]["rule"] for c in result["changes"]} == {"budget.exceeded"}
    # The soft budget "tiny" was over on both sides: not a change.
    assert all(c["after"]["budgets"] == ["agentcap", "tiny"] for c in result["changes"])
    assert all(c["before"]["budgets"] == ["tiny"] for c in result["changes"])


# --- PII, side effects, the job ---------------------------------------------------------------


def test_a_policy_that_blocks_emails_toward_models_changes_the_pii_action(project, admin_user):
    from agents.runtime import run_agent_turn
    from tests.seed import seed_registry

    agent = seed_registry(project, admin_user)
    agent.refresh_from_db()
    run_agent_turn(
        agent_version=agent.active_version, input="Write to bob@example.com", user=admin_user
    )
    document = "pii:\n  model_input:\n    EMAIL_ADDRESS: {action: block}\n"
    result = run(project, "policy", "default", {"document": document})
    first = next(c for c in result["changes"] if c.get("call_id", "").endswith(":0"))
    assert first["before"]["pii_in"] == "allow" and first["after"]["pii_in"] == "block"
    assert first["changes"] == ["newly_denied", "pii_changed"]


def _state():
    return {
        "audit": AuditEvent.objects.count(),
        "counters": sorted(UsageCounter.objects.values_list("key", "window_start", "count")),
        "breakers": sorted(CircuitBreaker.objects.values_list("key", "state", "calls")),
        "reservations": BudgetReservation.objects.count(),
        "periods": sorted(BudgetPeriod.objects.values_list("pk", "spent_usd", "reserved_usd")),
        "costs": CostEntry.objects.count(),
    }


def test_a_replay_job_has_no_side_effects_but_its_own_audit_event(
    project, admin_user, seeded, django_capture_on_commit_callbacks
):
    before = _state()
    starts_at, ends_at = window()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        job = replay_job_create(
            project=project,
            kind="policy",
            target="default",
            draft={"document": "caps:\n  max_tool_calls_per_run: 1\n"},
            starts_at=starts_at,
            ends_at=ends_at,
            actor=admin_user,
        )
    assert len(queued) == 1  # the task is queued after commit, with the id only
    job = replay_job_run(job_id=job.pk)
    assert job.status == "completed", job.error
    assert (job.done, job.total) == (job.total, 12) and job.progress_percent == 100
    assert job.result["summary"]["newly_denied"] == 2
    after = _state()
    assert after.pop("audit") == before.pop("audit") + 1
    assert after == before
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor_name) == ("replay.completed", admin_user.username)
    assert event.data["summary"]["newly_denied"] == 2
    # A job runs once: a second claim finds it taken.
    assert replay_job_run(job_id=job.pk) is None


# --- REST -------------------------------------------------------------------------------------


def replays_url(project):
    return f"/api/v1/projects/{project.slug}/replays/"


def body(**overrides):
    starts_at, ends_at = window()
    return {
        "kind": "policy",
        "target": "default",
        "draft": {"document": "caps:\n  max_tool_calls_per_run: 1\n"},
        "starts_at": starts_at.isoformat(),
        "ends_at": ends_at.isoformat(),
        **overrides,
    }


def test_starting_a_replay_needs_operator_and_reading_viewer(project, seeded):
    check_rbac(
        method="post",
        url=replays_url(project),
        data=body(),
        project=project,
        min_role=Role.OPERATOR,
        success=(202,),
    )
    check_rbac(method="get", url=replays_url(project), project=project, min_role=Role.VIEWER)
    job = ReplayJob.objects.filter(project=project).first()
    check_rbac(
        method="get", url=f"{replays_url(project)}{job.pk}/", project=project, min_role=Role.VIEWER
    )


def test_the_api_runs_a_replay_and_shows_the_result(admin_client_api, project, seeded):
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=False):
        response = admin_client_api.post(replays_url(project), body(), format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "queued" and job["result"] == {}
    replay_job_run(job_id=job["id"])
    done = admin_client_api.get(f"{replays_url(project)}{job['id']}/").json()
    assert done["status"] == "completed" and done["progress_percent"] == 100
    assert done["result"]["summary"]["newly_denied"] == 2
    listed = admin_client_api.get(f"{replays_url(project)}?status=completed").json()
    assert [j["id"] for j in listed["results"]] == [job["id"]]


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        (
            {"draft": {"document": "caps:\n  max_tool_calls_per_run: -1\n"}},
            "draft.document.caps.max_tool_calls_per_run",
        ),
        (
            {
                "kind": "grants",
                "target": "helper",
                "draft": {
                    "grants": [{"tool": "echo", "rules": [{"when": "args.(", "then": "deny"}]}]
                },
            },
            "draft.grants.0.rules.0.when",
        ),
        (
            {"kind": "grants", "target": "helper", "draft": {"grants": [{"tool": "nope"}]}},
            "draft.grants.0.tool",
        ),
        (
            {"kind": "agent_version", "target": "helper", "draft": {"config": {"model_name": 5}}},
            "draft.config.model_endpoint",
        ),
        ({"kind": "agent_version", "target": "ghost", "draft": {"config": {}}}, "target"),
        ({"target": "nope"}, "target"),
        ({"ends_at": "2000-01-01T00:00:00Z"}, "ends_at"),
    ],
)
def test_a_bad_draft_answers_400_at_its_path(admin_client_api, project, seeded, overrides, path):
    response = admin_client_api.post(replays_url(project), body(**overrides), format="json")
    assert response.status_code == 400, response.content
    assert path in response.json(), response.json()
    assert not ReplayJob.objects.exists()


# --- UI ---------------------------------------------------------------------------------------


def test_the_replay_page_starts_a_replay_and_shows_errors_in_place(project, admin_user, seeded):
    from django.test import Client, TestCase

    client = Client()
    client.force_login(admin_user)
    page = client.get("/replays/")
    assert page.status_code == 200 and b"New replay" in page.content
    starts_at, ends_at = window()
    form = {
        "project": project.slug,
        "kind": "policy",
        "target": "default",
        "starts_at": starts_at.strftime("%Y-%m-%d %H:%M"),
        "ends_at": ends_at.strftime("%Y-%m-%d %H:%M"),
    }
    bad = client.post("/replays/", {**form, "draft": "caps:\n  max_tool_calls_per_run: -1\n"})
    assert bad.status_code == 400
    assert b"caps.max_tool_calls_per_run" in bad.content and not ReplayJob.objects.exists()
    with TestCase.captureOnCommitCallbacks(execute=False):
        good = client.post("/replays/", {**form, "draft": "caps:\n  max_tool_calls_per_run: 1\n"})
    job = ReplayJob.objects.get()
    assert good.status_code == 302 and good["Location"] == f"/replays/{job.pk}/"
    running = client.get(good["Location"])
    assert b'hx-trigger="every 2s"' in running.content
    replay_job_run(job_id=job.pk)
    shown = client.get(good["Location"]).content.decode()
    assert "What would have changed" in shown and "newly denied" in shown
    assert 'hx-trigger="every 2s"' not in shown
