"""Flows pages: RBAC on every page and form, the DAG drawn as SVG, the definition editor
(inline validation, errors by path in place, the text kept, the active version kept), the
start-run form, the runs list filters and the run page's live partial (polls until final,
PII-redacted data, decisions, costs, cancel and retry)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from controlplane.models import Role
from flows.models import Flow, FlowVersion, Run
from flows.services import flow_create, flow_schedule_create, flow_webhook_rotate, run_start
from tests.rbac import check_rbac, member_client

from .helpers import BROKEN, ECHO, INVALID, echo_flow, echo_world

pytestmark = pytest.mark.django_db

GITHUB_TOKEN = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"


@pytest.fixture
def flow(project, admin_user):
    echo_world(project, admin_user)
    return echo_flow(project, admin_user)


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def done_run(flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": "owls"}, user=admin_user)
    pump.run()
    return Run.objects.get(pk=run.pk)


def htmx(client, method, url, data=None):
    return getattr(client, method)(url, data or {}, HTTP_HX_REQUEST="true")


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/flows/", "/flows/new/", "/runs/"])
def test_list_pages_need_sign_in_and_show_the_current_project(project, done_run, path):
    assert "/login/" in Client().get(path)["Location"]
    for role in Role:
        member, _ = member_client(project, role, api=False)
        response = member.get(path)
        assert response.status_code == 200 and b"Acme" in response.content


@pytest.mark.parametrize("path", ["/flows/echo/", "/runs/{run}/", "/runs/{run}/live/"])
def test_object_pages_need_a_member(project, done_run, path):
    check_rbac(
        method="get",
        url=path.format(run=done_run.pk),
        project=project,
        min_role=Role.VIEWER,
        api=False,
    )


def test_validation_needs_only_a_viewer(project, flow):
    check_rbac(
        method="post",
        url="/flows/echo/validate/",
        data={"source": ECHO, "source_format": "yaml"},
        project=project,
        min_role=Role.VIEWER,
        api=False,
    )


_n = iter(range(1000))
P = {"project": "acme"}  # forms carry the project they were rendered for


@pytest.mark.parametrize(
    ("path", "data", "audit_action", "min_role"),
    [
        (
            "/flows/new/",
            lambda: {"slug": f"p-{next(_n)}", "source": ECHO, "source_format": "yaml", **P},
            "flow.created",
            Role.OPERATOR,
        ),
        (
            "/flows/echo/versions/",
            {"source": ECHO, "source_format": "yaml", "activate": "on", **P},
            "flow.version.created",
            Role.OPERATOR,
        ),
        ("/flows/echo/versions/1/activate/", P, "flow.version.activated", Role.OPERATOR),
        ("/flows/echo/start/", {"input": '{"topic": "x"}', **P}, "flow.run.started", Role.OPERATOR),
        ("/flows/echo/webhook/", P, "flow.webhook.created", Role.ADMIN),
        ("/flows/echo/webhook/disable/", P, None, Role.ADMIN),
        (
            "/flows/echo/schedules/",
            lambda: {"name": f"s{next(_n)}", "kind": "interval", "interval_seconds": "60", **P},
            "flow.schedule.created",
            Role.OPERATOR,
        ),
    ],
    ids=["create", "version", "activate", "start", "webhook", "webhook-off", "schedule"],
)
def test_forms_need_their_role(project, flow, pump, path, data, audit_action, min_role):
    if path == "/flows/echo/webhook/":
        audit_action = None  # created once, then rotated
    check_rbac(
        method="post",
        url=path,
        data=data,
        project=project,
        min_role=min_role,
        api=False,
        audit_action=audit_action,
    )


def test_schedule_toggle_cancel_and_retry_need_an_operator(project, flow, admin_user, pump):
    schedule = flow_schedule_create(flow=flow, name="s", kind="interval", interval_seconds=60)
    check_rbac(
        method="post",
        url=f"/flows/echo/schedules/{schedule.pk}/toggle/",
        data=P,
        project=project,
        min_role=Role.OPERATOR,
        api=False,
        audit_action="flow.schedule.updated",
    )
    runs = iter([run_start(flow=flow, input={"topic": "t"}, user=admin_user) for _ in range(6)])
    check_rbac(
        method="post",
        url=lambda: f"/runs/{next(runs).pk}/cancel/",
        data=P,
        project=project,
        min_role=Role.OPERATOR,
        api=False,
        audit_action="flow.run.cancel_requested",
    )
    bad = flow_create(project=project, slug="bad", source=BROKEN, actor=admin_user)
    failed = [run_start(flow=bad, input={}, user=admin_user) for _ in range(6)]
    pump.run()
    failed_runs = iter(failed)
    check_rbac(
        method="post",
        url=lambda: f"/runs/{next(failed_runs).pk}/retry/",
        data=P,
        project=project,
        min_role=Role.OPERATOR,
        api=False,
        audit_action="flow.run.retried",
    )


def test_a_viewer_sees_no_write_buttons(project, flow, done_run):
    viewer, _ = member_client(project, Role.VIEWER, api=False)
    page = viewer.get("/flows/echo/").content.decode()
    assert "Start run" not in page and "Save as new version" not in page
    assert "Check" in page  # validating changes nothing
    run_page = viewer.get(f"/runs/{done_run.pk}/").content.decode()
    assert "Cancel run" not in run_page and "Retry" not in run_page


# --- Flows list and page ---------------------------------------------------------------------


def test_the_flow_list_shows_flows_and_their_last_run(client, flow, done_run):
    page = client.get("/flows/").content.decode()
    assert 'href="/flows/echo/"' in page and "v1" in page and "succeeded" in page
    empty = htmx(client, "get", "/flows/?q=zzz").content.decode()
    assert "No flows match" in empty and "<html" not in empty


def test_the_flow_page_draws_the_dag_as_svg(client, project, admin_user):
    echo_world(project, admin_user)
    flow_create(
        project=project,
        slug="routed",
        actor=admin_user,
        source="""
steps:
  - id: route
    kind: router
    rules: [{when: "input.size > 100", then: big}]
    default: small
    branches: {big: [heavy], small: [light]}
  - {id: heavy, kind: tool, tool: echo, agent: operator, arguments: {text: heavy}}
  - {id: light, kind: tool, tool: echo, agent: operator, arguments: {text: light}}
  - {id: join, kind: tool, tool: echo, agent: operator, depends_on: [heavy, light], arguments: {text: j}}
""",
    )
    page = client.get("/flows/routed/").content.decode()
    assert "<svg" in page
    nodes = re.findall(r'class="dag-node kind-(\w+)[^"]*" data-step="([\w-]+)"', page)
    assert sorted(nodes) == [
        ("router", "route"),
        ("tool", "heavy"),
        ("tool", "join"),
        ("tool", "light"),
    ]
    edges = set(re.findall(r'data-source="([\w-]+)" data-target="([\w-]+)"', page))
    assert edges == {("route", "heavy"), ("route", "light"), ("heavy", "join"), ("light", "join")}
    assert ">big</text>" in page and ">small</text>" in page  # branch labels
    # Layers left to right: route, then heavy/light, then join.
    xs = {
        step: int(x)
        for step, x in re.findall(
            r'data-step="([\w-]+)"[^>]*>\s*<title>[^<]*</title>\s*<rect x="(\d+)"', page
        )
    }
    assert xs["route"] < xs["heavy"] == xs["light"] < xs["join"]


def test_inline_validation_shows_errors_by_path_or_ok(client, flow):
    bad = htmx(
        client, "post", "/flows/echo/validate/", {"source": INVALID, "source_format": "yaml"}
    )
    text = bad.content.decode()
    assert bad.status_code == 200 and 'id="definition-errors"' in text
    assert 'data-path="definition.steps.1.id"' in text
    assert 'data-path="definition.steps.0.depends_on.0"' in text
    assert "version 1 stays active" in text
    good = htmx(client, "post", "/flows/echo/validate/", {"source": ECHO, "source_format": "yaml"})
    assert "The definition is valid." in good.content.decode() and "<svg" in good.content.decode()
    assert FlowVersion.objects.count() == 1


def test_saving_an_invalid_version_keeps_the_text_and_the_active_version(client, flow):
    response = htmx(
        client, "post", "/flows/echo/versions/", {"source": INVALID, "source_format": "yaml"}
    )
    text = response.content.decode()
    assert response.status_code == 200 and 'id="editor-box"' in text
    assert 'data-path="definition.steps.0.depends_on.0"' in text
    assert "tool: nope" in text  # the text as typed
    flow.refresh_from_db()
    assert flow.active_version.number == 1 and flow.versions.count() == 1
    # Without htmx: the whole page, 400.
    assert (
        client.post(
            "/flows/echo/versions/", {"source": INVALID, "source_format": "yaml"}
        ).status_code
        == 400
    )


def test_saving_a_valid_version_activates_it(client, flow):
    response = htmx(
        client,
        "post",
        "/flows/echo/versions/",
        {"source": ECHO, "source_format": "yaml", "change_note": "v2", "activate": "on"},
    )
    assert response.headers["HX-Redirect"] == "/flows/echo/"
    flow.refresh_from_db()
    assert flow.active_version.number == 2
    page = client.get("/flows/echo/").content.decode()
    assert "Saved version 2 of echo; it is now active." in page
    assert "Roll back to" in page


def test_creating_a_flow_shows_every_error_in_place(client, project, admin_user):
    echo_world(project, admin_user)
    response = client.post(
        "/flows/new/", {"slug": "Bad!", "source": INVALID, "source_format": "yaml"}
    )
    text = response.content.decode()
    assert response.status_code == 400
    assert "field-error" in text  # the slug
    assert 'data-path="definition.steps.1.id"' in text and "tool: nope" in text
    assert not Flow.objects.exists()
    ok = client.post("/flows/new/", {"slug": "new-one", "source": ECHO, "source_format": "yaml"})
    assert ok.status_code == 302 and ok["Location"] == "/flows/new-one/"


def test_the_start_form_shows_input_errors_in_place(client, flow, pump):
    bad = htmx(client, "post", "/flows/echo/start/", {"input": '{"topic": '})
    text = bad.content.decode()
    assert bad.status_code == 200 and 'id="start-box"' in text
    assert "Not JSON" in text and "{&quot;topic&quot;: " in text
    assert (
        htmx(client, "post", "/flows/echo/start/", {"input": "[1]"})
        .content.decode()
        .count("Give a JSON object")
    )
    assert not Run.objects.exists()
    ok = htmx(client, "post", "/flows/echo/start/", {"input": '{"topic": "bats"}'})
    run = Run.objects.get()
    assert ok.headers["HX-Redirect"] == f"/runs/{run.pk}/"
    assert (run.trigger, run.input) == ("manual", {"topic": "bats"})


def test_the_webhook_token_is_shown_once_on_the_page(client, flow):
    response = htmx(client, "post", "/flows/echo/webhook/")
    token = re.search(
        r'id="webhook-token" type="text" readonly value="([^"]+)"', response.content.decode()
    )
    assert token and token.group(1).startswith("fwh_")
    page = client.get("/flows/echo/").content.decode()
    assert token.group(1) not in page and "Webhook on" in page


# --- Runs --------------------------------------------------------------------------------------


def test_the_runs_list_filters(client, project, flow, admin_user, pump):
    ok = run_start(flow=flow, input={"topic": "a"}, user=admin_user)
    pump.run()
    other = echo_flow(project, admin_user, slug="other")
    waiting = run_start(flow=other, input={"topic": "b"}, user=None, trigger="webhook")

    def shown(query: str) -> set[int]:
        text = htmx(client, "get", f"/runs/?{query}").content.decode()
        return {int(pk) for pk in re.findall(r'<tr id="run-(\d+)"', text)}

    assert shown("") == {ok.pk, waiting.pk}
    assert shown("status=succeeded") == {ok.pk}
    assert shown("flow=other") == {waiting.pk}
    assert shown("trigger=webhook") == {waiting.pk}
    assert shown("started_by=alice") == {ok.pk}
    assert shown("since=2000-01-01T00:00&until=2000-01-02T00:00") == set()
    assert shown("since=2000-01-01T00:00") == {ok.pk, waiting.pk}
    page = client.get("/runs/?status=bogus").content.decode()
    assert "field-error" in page  # an invalid filter is shown, not applied silently


def test_the_live_partial_polls_until_the_run_is_final(client, flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": "owls"}, user=admin_user)
    live = client.get(f"/runs/{run.pk}/live/").content.decode()
    assert 'hx-trigger="every 1s"' in live and 'data-status="running"' in live
    assert re.findall(r'<tr id="step-\d+" data-step="(\w+)" data-status="(\w+)"', live) == [
        ("first", "pending"),
        ("second", "pending"),
    ]
    pump.run()
    live = client.get(f"/runs/{run.pk}/live/").content.decode()
    assert "hx-trigger" not in live and 'data-status="succeeded"' in live
    assert re.findall(r'<tr id="step-\d+" data-step="(\w+)" data-status="(\w+)"', live) == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    assert 'class="waterfall-row" data-kind="run"' in live
    assert 'data-step="second" data-status="succeeded"' in live  # the DAG node too
    assert "again owls" in live  # step output
    assert 'data-action="tool.decision"' in live and 'data-action="flow.run.started"' in live


def test_step_data_is_pii_redacted_on_the_run_page(client, flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": f"use {GITHUB_TOKEN}"}, user=admin_user)
    pump.run()
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert GITHUB_TOKEN not in page
    assert "GITHUB_TOKEN × 1" in page


def test_costs_and_approvals_are_listed(client, project, admin_user, pump):
    echo_world(project, admin_user)
    from .conftest import make_agent

    make_agent(project, admin_user, "writer", script={"responses": [{"text": "written"}]})
    flow = flow_create(
        project=project,
        slug="write",
        actor=admin_user,
        source="""
steps:
  - {id: draft, kind: agent, agent: writer, input: "Write"}
  - {id: gate, kind: approval, message: "Ship it?", depends_on: [draft]}
""",
    )
    run = run_start(flow=flow, input={}, user=admin_user)
    pump.run()
    page = client.get(f"/runs/{run.pk}/").content.decode()
    costs = page.split('id="costs"')[1].split("</table>")[0]
    assert "scripted-1" in costs and "draft" in costs
    gate = run.steps.get(step_id="gate")
    [request_id] = gate.approval_request_ids
    assert f'href="/approvals/#approval-{request_id}"' in page
    assert 'hx-trigger="every 1s"' in page  # still waiting: still polling


def test_cancel_and_retry_from_the_run_page(client, project, flow, admin_user, pump):
    run = run_start(flow=flow, input={"topic": "x"}, user=admin_user)
    response = htmx(client, "post", f"/runs/{run.pk}/cancel/", {"project": project.slug})
    assert "Cancel requested" in response.content.decode()
    pump.run()
    assert Run.objects.get(pk=run.pk).status == "cancelled"

    bad = flow_create(project=project, slug="bad", source=BROKEN, actor=admin_user)
    failed = run_start(flow=bad, input={}, user=admin_user)
    pump.run()
    page = client.get(f"/runs/{failed.pk}/").content.decode()
    assert "Retry from failed step" in page
    response = htmx(client, "post", f"/runs/{failed.pk}/retry/")
    assert (
        "Retrying run" in response.content.decode()
        and 'hx-trigger="every 1s"' in response.content.decode()
    )
    # A run that did not fail cannot be retried: said in place.
    again = htmx(client, "post", f"/runs/{run.pk}/retry/").content.decode()
    assert "Only a failed run can be retried" in again


def test_webhook_schedule_sections_render(client, flow, admin_user):
    flow_webhook_rotate(flow=flow, actor=admin_user)
    flow_schedule_create(flow=flow, name="daily", kind="cron", cron="0 6 * * *")
    page = client.get("/flows/echo/").content.decode()
    assert "cron 0 6 * * *" in page and "Pause" in page and "Rotate token" in page
