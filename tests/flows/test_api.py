"""REST API of flows: flows and versions (400 with every error by path, 405 on immutable
versions), runs (start, list filters, cancel, retry), step runs and spans, schedules and
the webhook token; RBAC on every endpoint; token scopes; cursor pagination."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from controlplane.models import Role
from controlplane.services import api_token_create
from flows.models import Flow, FlowVersion, Run, Span, StepRun
from flows.services import run_start
from governance.models import AuditEvent
from tests.rbac import check_rbac

from .helpers import BROKEN, ECHO, INVALID, echo_flow, echo_world

pytestmark = pytest.mark.django_db

API = "/api/v1/projects/acme"


@pytest.fixture
def flow(project, admin_user):
    echo_world(project, admin_user)
    return echo_flow(project, admin_user)


@pytest.fixture
def run(flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": "owls"}, user=admin_user)
    pump.run()
    return Run.objects.get(pk=run.pk)


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


# --- RBAC: every endpoint ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "flows/",
        "flows/echo/",
        "flows/echo/versions/",
        "flows/echo/versions/1/",
        "flows/echo/schedules/",
        "runs/",
        "runs/{run}/",
        "runs/{run}/steps/",
        "runs/{run}/steps/{step}/",
        "runs/{run}/spans/",
        "runs/{run}/spans/{span}/",
    ],
)
def test_reads_need_viewer(project, run, path):
    step = StepRun.objects.filter(run=run).first()
    span = Span.objects.filter(run=run).first()
    url = f"{API}/{path}".format(run=run.pk, step=step.pk, span=span.pk)
    check_rbac(method="get", url=url, project=project, min_role=Role.VIEWER)


def test_validate_needs_only_a_viewer_and_writes_nothing(project, flow):
    before = FlowVersion.objects.count()
    check_rbac(
        method="post",
        url=f"{API}/flows/validate/",
        data={"source": ECHO},
        project=project,
        min_role=Role.VIEWER,
    )
    assert FlowVersion.objects.count() == before


_slugs = iter(range(1000))


@pytest.mark.parametrize(
    ("method", "path", "data", "audit_action", "min_role"),
    [
        pytest.param(
            "post",
            "flows/",
            lambda: {"slug": f"f-{next(_slugs)}", "source": ECHO},
            "flow.created",
            Role.OPERATOR,
            id="flow-create",
        ),
        pytest.param(
            "patch", "flows/echo/", {"name": "Echo"}, "flow.updated", Role.OPERATOR, id="flow-edit"
        ),
        pytest.param(
            "post",
            "flows/echo/versions/",
            {"source": ECHO, "change_note": "again"},
            "flow.version.created",
            Role.OPERATOR,
            id="version-create",
        ),
        pytest.param(
            "post",
            "flows/echo/versions/1/activate/",
            None,
            "flow.version.activated",
            Role.OPERATOR,
            id="version-activate",
        ),
        pytest.param(
            "post",
            "flows/echo/runs/",
            {"input": {"topic": "x"}},
            "flow.run.started",
            Role.OPERATOR,
            id="run-start",
        ),
        pytest.param(
            "post",
            "flows/echo/schedules/",
            lambda: {"name": f"s-{next(_slugs)}", "kind": "interval", "interval_seconds": 60},
            "flow.schedule.created",
            Role.OPERATOR,
            id="schedule-create",
        ),
        pytest.param("post", "flows/echo/webhook/", None, None, Role.ADMIN, id="webhook-rotate"),
        pytest.param("delete", "flows/echo/webhook/", None, None, Role.ADMIN, id="webhook-disable"),
    ],
)
def test_writes_need_their_role_and_are_audited(
    project, flow, pump, method, path, data, audit_action, min_role
):
    check_rbac(
        method=method,
        url=f"{API}/{path}",
        data=data,
        project=project,
        min_role=min_role,
        audit_action=audit_action,
    )


def test_cancel_and_retry_need_an_operator(project, flow, admin_user, pump):
    runs = iter([run_start(flow=flow, input={"topic": "t"}, user=admin_user) for _ in range(6)])
    check_rbac(
        method="post",
        url=lambda: f"{API}/runs/{next(runs).pk}/cancel/",
        project=project,
        min_role=Role.OPERATOR,
        audit_action="flow.run.cancel_requested",
    )
    from flows.services import flow_create

    bad = flow_create(project=project, slug="bad", source=BROKEN, actor=admin_user)
    failed = []
    for _ in range(6):
        failed.append(run_start(flow=bad, input={}, user=admin_user))
    pump.run()
    assert {Run.objects.get(pk=r.pk).status for r in failed} == {"failed"}
    failed_runs = iter(failed)
    check_rbac(
        method="post",
        url=lambda: f"{API}/runs/{next(failed_runs).pk}/retry/",
        project=project,
        min_role=Role.OPERATOR,
        audit_action="flow.run.retried",
    )


def test_schedule_edit_and_delete_need_an_operator(project, flow, admin_user):
    from flows.services import flow_schedule_create

    schedules = iter(
        [
            flow_schedule_create(
                flow=flow, name=f"s{i}", kind="cron", cron="0 * * * *", actor=admin_user
            )
            for i in range(6)
        ]
    )
    check_rbac(
        method="patch",
        url=lambda: f"{API}/flows/echo/schedules/{next(schedules).pk}/",
        data={"enabled": False},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="flow.schedule.updated",
    )
    left = iter(list(flow.schedules.all()))
    check_rbac(
        method="delete",
        url=lambda: f"{API}/flows/echo/schedules/{next(left).pk}/",
        project=project,
        min_role=Role.OPERATOR,
        audit_action="flow.schedule.deleted",
    )


# --- Flows and versions --------------------------------------------------------------------


def test_create_a_flow_with_its_first_version(project, admin_client_api, admin_user):
    echo_world(project, admin_user)
    response = admin_client_api.post(
        f"{API}/flows/", {"slug": "greet", "name": "Greet", "source": ECHO}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["slug"], body["name"], body["active_version"]) == ("greet", "Greet", 1)
    version = admin_client_api.get(f"{API}/flows/greet/versions/1/").json()
    assert version["is_active"] and version["source"] == ECHO
    assert [s["id"] for s in version["definition"]["steps"]] == ["first", "second"]


def test_a_flow_can_be_created_from_a_json_object(project, admin_client_api, admin_user):
    echo_world(project, admin_user)
    source = {
        "steps": [
            {
                "id": "one",
                "kind": "tool",
                "tool": "echo",
                "agent": "operator",
                "arguments": {"text": "hi"},
            }
        ]
    }
    response = admin_client_api.post(
        f"{API}/flows/", {"slug": "j", "source": source}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert FlowVersion.objects.get(flow__slug="j").source_format == "json"


def test_an_invalid_flow_answers_400_with_every_error_by_path(
    project, admin_client_api, admin_user
):
    echo_world(project, admin_user)
    response = admin_client_api.post(
        f"{API}/flows/", {"slug": "Bad Slug!", "source": INVALID}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()
    assert "slug" in errors
    assert "definition.steps.1.id" in errors  # duplicate id
    assert "definition.steps.0.depends_on.0" in errors  # unknown step
    assert "definition.steps.1.message" in errors  # approval without a message
    assert not Flow.objects.exists()


def test_yaml_that_does_not_parse_answers_400_under_definition(project, admin_client_api, flow):
    response = admin_client_api.post(
        f"{API}/flows/echo/versions/", {"source": "steps: [unclosed"}, format="json"
    )
    assert response.status_code == 400
    assert "does not parse" in response.json()["definition"][0]


def test_an_invalid_version_is_refused_and_the_previous_one_stays_active(
    project, admin_client_api, flow
):
    response = admin_client_api.post(
        f"{API}/flows/echo/versions/", {"source": INVALID}, format="json"
    )
    assert response.status_code == 400
    assert "definition.steps.0.depends_on.0" in response.json()
    flow.refresh_from_db()
    assert flow.active_version.number == 1
    assert FlowVersion.objects.filter(flow=flow).count() == 1


def test_unknown_tools_and_agents_are_named_by_path(project, admin_client_api, flow):
    source = ECHO.replace(
        "tool: echo\n    agent: operator\n    depends_on",
        "tool: ghost\n    agent: nobody\n    depends_on",
    )
    response = admin_client_api.post(
        f"{API}/flows/echo/versions/", {"source": source}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()
    assert "no tool 'ghost'" in errors["definition.steps.1.tool"][0]
    assert "no agent 'nobody'" in errors["definition.steps.1.agent"][0]


def test_validate_reports_errors_without_storing(project, admin_client_api, flow):
    bad = admin_client_api.post(f"{API}/flows/validate/", {"source": INVALID}, format="json").json()
    good = admin_client_api.post(f"{API}/flows/validate/", {"source": ECHO}, format="json").json()
    assert bad["valid"] is False and "definition.steps.1.id" in bad["errors"]
    assert good == {"valid": True, "errors": {}}


def test_versions_are_immutable_over_http(project, admin_client_api, flow):
    url = f"{API}/flows/echo/versions/1/"
    for method in ("put", "patch", "delete"):
        response = getattr(admin_client_api, method)(url, {"source": ECHO}, format="json")
        assert response.status_code == 405, (method, response.status_code)
    assert admin_client_api.delete(f"{API}/flows/echo/").status_code == 405
    assert (
        admin_client_api.put(f"{API}/flows/echo/", {"name": "x"}, format="json").status_code == 405
    )


def test_a_new_version_can_wait_and_activate_later(project, admin_client_api, flow):
    response = admin_client_api.post(
        f"{API}/flows/echo/versions/",
        {"source": ECHO, "activate": False, "change_note": "later"},
        format="json",
    )
    assert response.status_code == 201 and response.json()["is_active"] is False
    assert admin_client_api.get(f"{API}/flows/echo/").json()["active_version"] == 1
    activated = admin_client_api.post(f"{API}/flows/echo/versions/2/activate/")
    assert activated.json()["active_version"] == 2
    numbers = [
        v["number"] for v in admin_client_api.get(f"{API}/flows/echo/versions/").json()["results"]
    ]
    assert numbers == [2, 1]


# --- Runs -----------------------------------------------------------------------------------


def test_start_a_run_over_rest_and_read_its_steps_and_spans(project, admin_client_api, flow, pump):
    response = admin_client_api.post(
        f"{API}/flows/echo/runs/", {"input": {"topic": "owls"}}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["flow"], body["version"], body["trigger"], body["started_by"]) == (
        "echo",
        1,
        "api",
        "alice",
    )
    assert len(body["trace_id"]) == 32
    pump.run()
    run = admin_client_api.get(f"{API}/runs/{body['id']}/").json()
    assert run["status"] == "succeeded"
    steps = admin_client_api.get(f"{API}/runs/{body['id']}/steps/").json()["results"]
    assert [(s["step_id"], s["status"]) for s in steps] == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    assert steps[1]["output"] == {"text": "again owls"}
    spans = admin_client_api.get(f"{API}/runs/{body['id']}/spans/").json()["results"]
    assert {s["kind"] for s in spans} >= {"run", "step"}
    assert {s["trace_id"] for s in spans} == {run["trace_id"]}
    only_steps = admin_client_api.get(f"{API}/runs/{body['id']}/spans/?kind=step").json()
    assert {s["kind"] for s in only_steps["results"]} == {"step"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": [1, 2]}, "input"),
        ({"input": "text"}, "input"),
        ({"version": 9}, "version"),
        ({"version": "x"}, "version"),
    ],
)
def test_a_bad_start_answers_400_by_field(project, admin_client_api, flow, data, field):
    response = admin_client_api.post(f"{API}/flows/echo/runs/", data, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Run.objects.exists()


def test_runs_list_filters_and_orders(project, admin_client_api, flow, admin_user, pump):
    other = echo_flow(project, admin_user, slug="other")
    ok = run_start(flow=flow, input={"topic": "a"}, user=admin_user)
    pump.run()
    running = run_start(flow=other, input={"topic": "b"}, user=None, trigger="webhook")

    def ids(query: str) -> list[int]:
        response = admin_client_api.get(f"{API}/runs/?{query}")
        assert response.status_code == 200, response.json()
        return [r["id"] for r in response.json()["results"]]

    assert ids("") == [running.pk, ok.pk]
    assert ids("ordering=id") == [ok.pk, running.pk]
    assert ids("status=succeeded") == [ok.pk]
    assert ids("status=succeeded&status=running") == [running.pk, ok.pk]
    assert ids("flow=other") == [running.pk]
    assert ids("started_by=alice") == [ok.pk]
    assert ids("trigger=webhook") == [running.pk]
    assert ids("started_after=2000-01-01T00:00:00Z&started_before=2000-01-02T00:00:00Z") == []
    assert ids("started_after=2000-01-01T00:00:00Z") == [running.pk, ok.pk]
    assert admin_client_api.get(f"{API}/runs/?started_after=yesterday").status_code == 400


def test_runs_are_cursor_paginated(project, admin_client_api, flow, admin_user):
    for i in range(5):
        run_start(flow=flow, input={"topic": str(i)}, user=admin_user)
    first = admin_client_api.get(f"{API}/runs/?page_size=2").json()
    second = admin_client_api.get(first["next"]).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert first["results"][-1]["id"] > second["results"][0]["id"]


def test_cancel_a_run_and_retry_a_failed_one(project, admin_client_api, flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": "x"}, user=admin_user)
    response = admin_client_api.post(f"{API}/runs/{run.pk}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    pump.run()
    assert admin_client_api.get(f"{API}/runs/{run.pk}/").json()["status"] == "cancelled"
    # Retrying a run that did not fail is a 400 that says why.
    refused = admin_client_api.post(f"{API}/runs/{run.pk}/retry/")
    assert refused.status_code == 400 and "status" in refused.json()


def test_a_read_token_reads_but_cannot_start(project, admin_user, flow):
    _, read = api_token_create(project=project, user=admin_user, name="r", scopes=["read"])
    _, write = api_token_create(project=project, user=admin_user, name="w", scopes=["write"])
    assert bearer(read).get(f"{API}/runs/").status_code == 200
    assert bearer(read).post(f"{API}/flows/echo/runs/", {}, format="json").status_code == 403
    assert (
        bearer(read).post(f"{API}/flows/validate/", {"source": ECHO}, format="json").status_code
        == 200
    )
    assert bearer(write).post(f"{API}/flows/echo/runs/", {}, format="json").status_code == 201


def test_other_projects_runs_are_404(project, admin_client_api, flow, admin_user):
    from controlplane.services import project_create

    other = project_create(slug="other", name="Other", creator=admin_user)
    run = run_start(flow=flow, input={"topic": "x"}, user=admin_user)
    assert admin_client_api.get(f"/api/v1/projects/{other.slug}/runs/{run.pk}/").status_code == 404
    assert (
        admin_client_api.get(f"/api/v1/projects/{other.slug}/runs/{run.pk}/steps/").status_code
        == 404
    )


# --- Schedules and webhook over REST ---------------------------------------------------------


def test_schedules_validate_their_timer(project, admin_client_api, flow):
    url = f"{API}/flows/echo/schedules/"
    bad_cron = admin_client_api.post(
        url, {"name": "a", "kind": "cron", "cron": "61 * * * *"}, format="json"
    )
    assert bad_cron.status_code == 400 and "cron" in bad_cron.json()
    short = admin_client_api.post(
        url, {"name": "b", "kind": "interval", "interval_seconds": 1}, format="json"
    )
    assert short.status_code == 400 and "interval_seconds" in short.json()
    bad_input = admin_client_api.post(
        url, {"name": "c", "kind": "cron", "cron": "0 6 * * 1-5", "input": [1]}, format="json"
    )
    assert bad_input.status_code == 400 and "input" in bad_input.json()
    ok = admin_client_api.post(
        url,
        {"name": "d", "kind": "cron", "cron": "0 6 * * 1-5", "input": {"topic": "x"}},
        format="json",
    )
    assert ok.status_code == 201, ok.json()
    paused = admin_client_api.patch(f"{url}{ok.json()['id']}/", {"enabled": False}, format="json")
    assert paused.json()["enabled"] is False


def test_the_webhook_token_is_shown_once_and_stored_as_a_digest(project, admin_client_api, flow):
    response = admin_client_api.post(f"{API}/flows/echo/webhook/")
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("fwh_") and body["url"].endswith(
        f"/hooks/flows/{flow.pk}/{body['token']}"
    )
    assert admin_client_api.get(f"{API}/flows/echo/").json()["has_webhook"] is True
    assert body["token"] not in str(admin_client_api.get(f"{API}/flows/echo/").json())
    events = AuditEvent.objects.filter(action__startswith="flow.webhook")
    assert events.count() == 1 and body["token"] not in str(events.get().data)


@pytest.mark.parametrize("slug", ["new", "validate"])
def test_slugs_of_fixed_paths_are_reserved(project, admin_client_api, flow, slug):
    response = admin_client_api.post(f"{API}/flows/", {"slug": slug, "source": ECHO}, format="json")
    assert response.status_code == 400 and "reserved" in response.json()["slug"][0]
