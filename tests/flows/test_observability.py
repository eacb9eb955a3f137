"""The flows app's part of observability: the ``flow`` cost dimension (isolated by project),
runs in flight on the dashboard, slowest steps in the performance view, the run / step
counters, the run page's link to the decision log, and cancelling a run cancelling its
pending approval requests."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client import REGISTRY

from approvals.models import ApprovalRequest
from controlplane.models import Role
from controlplane.services import project_create
from flows.models import Run, StepRun
from flows.services import flow_create, run_cancel, run_start
from governance.pricing import fixed_price
from governance.reports import cost_report
from governance.services import cost_record
from tests.factories import ProjectFactory
from tests.flows.test_engine import APPROVAL, PIPELINE, start, steps_of
from tests.rbac import check_rbac, member_client

pytestmark = pytest.mark.django_db

D = Decimal
GATE = """
steps:
  - id: gate
    kind: approval
    message: "Go?"
"""


def gate_run(project, user, slug="gate"):
    flow = flow_create(project=project, slug=slug, source=GATE, actor=user)
    return run_start(flow=flow, input={}, user=user, trigger="api")


def charge(project, call_id, usd, run_id=""):
    cost_record(
        call_id=call_id,
        kind="model",
        project=project,
        priced=fixed_price(D(usd)),
        model="m",
        run_id=run_id,
    )


def report(project, group_by=("flow",)):
    now = timezone.now()
    return {
        row.group: row.cost_usd
        for row in cost_report(
            projects=[project],
            zone=ZoneInfo("UTC"),
            start=now - timedelta(days=1),
            end=now + timedelta(minutes=1),
            group_by=group_by,
        ).rows
    }


def test_cost_report_groups_by_flow(project, admin_user):
    a1 = gate_run(project, admin_user, "alpha")
    a2 = run_start(flow=a1.flow, input={}, user=admin_user, trigger="api")
    b = gate_run(project, admin_user, "beta")
    charge(project, "c1", "1.5", str(a1.pk))
    charge(project, "c2", "0.25", str(a2.pk))
    charge(project, "c3", "2", str(b.pk))
    charge(project, "c4", "0.125")  # outside any run
    charge(project, "c5", "3", "not-a-run")
    assert report(project) == {
        ("alpha",): D("1.75"),
        ("beta",): D("2"),
        ("(none)",): D("3.125"),
    }
    two = report(project, ("flow", "model"))
    assert two[("alpha", "m")] == D("1.75")


def test_the_flow_dimension_never_crosses_projects(project, admin_user):
    """An entry of another project naming this project's run id is not that run's flow."""
    run = gate_run(project, admin_user, "alpha")
    other = project_create(creator=admin_user, slug="other", name="Other")
    charge(project, "mine", "1", str(run.pk))
    charge(other, "theirs", "5", str(run.pk))
    assert report(project) == {("alpha",): D("1")}
    assert report(other) == {("(none)",): D("5")}


def test_cost_report_api_and_page_offer_the_flow_dimension(project, admin_user):
    run = gate_run(project, admin_user, "alpha")
    charge(project, "c1", "1.5", str(run.pk))
    client = Client()
    client.force_login(admin_user)
    now = timezone.now()
    params = {
        "group_by": "flow",
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
    }
    response = client.get(f"/api/v1/projects/{project.slug}/cost-entries/report/", params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(r["group"], r["cost_usd"]) for r in body["rows"]] == [
        ({"flow": "alpha"}, "1.50000000")
    ]
    page = client.get(reverse("cost-report"), {"group_by": "flow"})
    assert page.status_code == 200
    assert '<option value="flow"' in page.content.decode()


def test_dashboard_lists_runs_in_flight_with_links(project, admin_user):
    waiting = gate_run(project, admin_user, "alpha")
    done = gate_run(project, admin_user, "beta")
    Run.objects.filter(pk=done.pk).update(status="succeeded", finished_at=timezone.now())
    other = project_create(creator=admin_user, slug="other", name="Other")
    foreign = gate_run(other, admin_user, "gamma")
    client = Client()
    client.force_login(admin_user)
    html = client.get(reverse("home"), {"project": project.slug}).content.decode()
    assert "Runs in flight" in html
    assert reverse("run-detail", args=[waiting.pk]) in html
    assert reverse("run-detail", args=[done.pk]) not in html
    assert "gamma" not in html and reverse("run-detail", args=[foreign.pk]) not in html


def test_performance_view_lists_the_slowest_steps(project, admin_user):
    fast = gate_run(project, admin_user, "alpha")
    slow = gate_run(project, admin_user, "beta")
    now = timezone.now()
    StepRun.objects.filter(run=fast).update(
        status="succeeded", started_at=now - timedelta(seconds=2), finished_at=now
    )
    StepRun.objects.filter(run=slow).update(
        status="failed", started_at=now - timedelta(seconds=90), finished_at=now
    )
    client = Client()
    client.force_login(admin_user)
    html = client.get(reverse("performance"), {"project": project.slug}).content.decode()
    assert "Slowest flow steps" in html
    assert html.index(reverse("run-detail", args=[slow.pk])) < html.index(
        reverse("run-detail", args=[fast.pk])
    )
    assert "90000" in html


def test_run_page_links_to_the_decision_log(project, admin_user):
    run = gate_run(project, admin_user)
    client = Client()
    client.force_login(admin_user)
    html = client.get(reverse("run-detail", args=[run.pk]), {"project": project.slug})
    html = html.content.decode()
    assert reverse("decision-log", args=[run.pk]) in html
    assert f"/api/v1/projects/{project.slug}/decision-logs/{run.pk}/" in html


def test_rbac_on_the_performance_page_with_flow_steps(project, admin_user):
    gate_run(project, admin_user)
    check_rbac(
        method="get",
        url=f"{reverse('performance')}?project={project.slug}",
        project=project,
        min_role=Role.VIEWER,
        api=False,
    )


def test_an_outsider_never_sees_this_projects_runs_on_the_dashboard(project, admin_user):
    run = gate_run(project, admin_user)
    outsider_client, outsider = member_client(ProjectFactory(), Role.ADMIN, api=False)
    html = outsider_client.get(reverse("home"), {"project": project.slug}).content.decode()
    assert reverse("run-detail", args=[run.pk]) not in html


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_run_and_step_counters_follow_final_statuses(
    project, admin_user, world, pump, django_capture_on_commit_callbacks
):
    slug = project.slug
    runs = value("controlplane_runs_total", project=slug, status="succeeded")
    agent_steps = value("controlplane_steps_total", project=slug, kind="agent", status="succeeded")
    tool_steps = value("controlplane_steps_total", project=slug, kind="tool", status="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        run = start(project, admin_user, PIPELINE, topic="owls")
        pump.run()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert value("controlplane_runs_total", project=slug, status="succeeded") == runs + 1
    assert (
        value("controlplane_steps_total", project=slug, kind="agent", status="succeeded")
        == agent_steps + 1
    )
    assert (
        value("controlplane_steps_total", project=slug, kind="tool", status="succeeded")
        == tool_steps + 2
    )


def test_a_rolled_back_finish_is_not_counted(project, admin_user):
    from django.db import transaction

    from flows import observability

    run = gate_run(project, admin_user)
    run.status = "failed"
    before = value("controlplane_runs_total", project=project.slug, status="failed")
    try:
        with transaction.atomic():
            observability.count_run_final(run)
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    assert value("controlplane_runs_total", project=project.slug, status="failed") == before


def test_cancelling_a_run_cancels_its_pending_approval_requests(
    project, admin_user, world, pump, tool_server, django_capture_on_commit_callbacks
):
    cancelled = value(
        "controlplane_steps_total", project=project.slug, kind="approval", status="cancelled"
    )
    run = start(project, admin_user, APPROVAL, title="Q3 report")
    pump.run()
    gate = steps_of(run)["gate"]
    assert gate.status == "waiting_approval"
    [request_id] = gate.approval_request_ids
    with django_capture_on_commit_callbacks(execute=True):
        run_cancel(run=run, actor=admin_user)
    request = ApprovalRequest.objects.get(pk=request_id)
    assert request.status == "cancelled"
    assert request.reason == "the run was cancelled"
    pump.run()
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert steps_of(run)["gate"].status == "cancelled"
    assert not tool_server.effects
    assert (
        value("controlplane_steps_total", project=project.slug, kind="approval", status="cancelled")
        == cancelled + 1
    )


def test_cancel_leaves_decided_requests_alone(project, admin_user):
    from approvals.services import approval_cancel

    run = gate_run(project, admin_user)
    assert run.pk  # the request is raised when the step runs; make one directly
    from governance.approval_port import approval_request

    pk = approval_request(project_id=project.pk, summary="x", payload={"run_id": run.pk})
    ApprovalRequest.objects.filter(pk=pk).update(status="approved")
    assert approval_cancel(request_ids=[pk, 10**9], reason="x") == []
    assert ApprovalRequest.objects.get(pk=pk).status == "approved"
