"""The observability pages: cost reports (chart, top table, CSV, burn-down), the audit page's
new filters, exports and verification, the decision log of a run, the performance view and
the dashboard panels; RBAC on each and isolation between projects."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from controlplane.models import Role
from controlplane.services import project_create
from governance.models import CircuitBreaker
from governance.pricing import fixed_price
from governance.services import audit_record, budget_create, cost_record
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def client(admin_user, project):
    c = Client()
    c.force_login(admin_user)
    return c


@pytest.fixture
def spend(project, admin_user):
    agent = Agent.objects.create(project=project, slug="triage")
    now = timezone.now()
    for i in range(3):
        cost_record(
            call_id=f"p{i}",
            kind="model",
            project=project,
            priced=fixed_price(D("1.25")),
            agent=agent,
            model="gpt-4o",
            occurred_at=now - timedelta(days=i),
        )
    budget_create(project=project, name="monthly", scope="project", period="month", limit_usd=D(50))
    return project


@pytest.fixture
def run_events(project):
    base = {"run_id": "run-42", "turn_id": 1}
    audit_record(
        action="tool.decision",
        project=project,
        object_type="agents.agentversion",
        object_id="1",
        object_repr="triage@v1",
        data={
            **base,
            "tool": "refund",
            "effect": "deny",
            "rule": "grant.rules.0",
            "policy": "default v3",
            "policy_version_id": 3,
        },
    )
    audit_record(
        action="model.call",
        project=project,
        object_repr="triage@v1",
        data={
            **base,
            "endpoint": "main",
            "model": "m",
            "latency_ms": 812.4,
            "reason": "The customer asked for a refund.",
            "pii_in_counts": {"EMAIL_ADDRESS": 2},
        },
    )
    audit_record(
        action="tool.executed",
        project=project,
        object_repr="triage@v1",
        data={**base, "tool": "lookup", "ok": False, "error": "timeout", "duration_ms": 3000},
    )
    audit_record(
        action="tool.pii_blocked",
        project=project,
        object_repr="triage@v1",
        data={
            **base,
            "tool": "mail",
            "direction": "tool_input",
            "entities": ["US_SSN"],
            "pii_counts": {"US_SSN": 1},
        },
    )
    return project


def test_cost_report_page_shows_chart_top_and_burndown(client, spend):
    response = client.get(reverse("cost-report"), {"group_by": "agent", "interval": "day"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in html and "triage" in html
    assert "3.75" in html  # the total
    assert "Burn-down" in html and "monthly" in html


def test_cost_report_csv_matches_the_page(client, spend):
    response = client.get(reverse("cost-report-csv"), {"group_by": "model", "interval": ""})
    body = b"".join(response.streaming_content).decode().splitlines()
    assert body[0].startswith("period,model,cost_usd")
    assert body[1].split(",")[1:3] == ["gpt-4o", "3.75000000"]


def test_cost_report_errors_show_in_place(client, spend):
    response = client.get(
        reverse("cost-report"), {"date_from": "2026-05-02", "date_to": "2026-05-01"}
    )
    assert response.status_code == 200
    assert "The end date is before the start date." in response.content.decode()
    bad = client.get(reverse("cost-report-csv"), {"interval": "hour"})
    assert bad.status_code == 400


def test_audit_page_new_filters_and_export_links(client, run_events):
    response = client.get(reverse("audit-list"), {"run": "run-42", "action": "tool."})
    html = response.content.decode()
    assert html.count('class="audit-event"') == 3
    assert "export/jsonl/?action_prefix=tool.&amp;run=run-42" in html
    assert reverse("decision-log", args=["run-42"]) in html
    assert reverse("audit-verify") in html  # admin


def test_audit_page_object_filter_error_is_in_place(client, run_events):
    response = client.get(reverse("audit-list"), {"object": "nocolon"})
    assert "Give &lt;object_type&gt;:&lt;object_id&gt;." in response.content.decode()


def test_verify_page_shows_the_chain_status(client, run_events):
    response = client.get(reverse("audit-verify"))
    assert "Chain intact" in response.content.decode()


def test_decision_log_lists_every_decision_in_order(client, run_events):
    response = client.get(reverse("decision-log", args=["run-42"]))
    html = response.content.decode()
    assert response.status_code == 200
    positions = [
        html.index(s) for s in ("refund", "The customer asked for a refund.", "lookup", "mail")
    ]
    assert positions == sorted(positions)
    assert "grant.rules.0" in html and "default v3" in html
    assert "EMAIL_ADDRESS × 2" in html and "US_SSN × 1" in html
    assert client.get(reverse("decision-log", args=["nope"])).status_code == 404


def test_decision_log_api(admin_client_api, run_events):
    body = admin_client_api.get(f"/api/v1/projects/{run_events.slug}/decision-logs/run-42/").json()
    assert [d["outcome"] for d in body["decisions"]] == ["deny", "called", "failed", "blocked"]
    assert body["decisions"][0]["policy_version_id"] == 3
    assert body["decisions"][1]["reason"] == "The customer asked for a refund."
    assert body["decisions"][1]["pii"] == {"EMAIL_ADDRESS": 2}
    assert body["summary"]["deny"] == 1


def test_performance_page(client, run_events, project):
    CircuitBreaker.objects.create(
        key="tool:9", project=project, label="lookup", state="open", opened_at=timezone.now()
    )
    response = client.get(reverse("performance"))
    html = response.content.decode()
    assert response.status_code == 200
    assert "lookup" in html and "100%" in html  # the failed execution
    assert "812" in html and reverse("decision-log", args=["run-42"]) in html
    assert client.get(reverse("performance"), {"hours": "5"}).status_code == 400


def test_dashboard_shows_spend_and_denials(client, spend, run_events):
    html = client.get(reverse("home")).content.decode()
    assert "Spend today" in html
    assert "Recent denials and PII blocks" in html
    assert reverse("decision-log", args=["run-42"]) in html


@pytest.mark.parametrize(
    ("name", "args", "min_role"),
    [
        ("cost-report", [], Role.VIEWER),
        ("cost-report-csv", [], Role.VIEWER),
        ("performance", [], Role.VIEWER),
        ("audit-list", [], Role.VIEWER),
        ("decision-log", ["run-42"], Role.VIEWER),
        ("audit-verify", [], Role.ADMIN),
    ],
)
def test_rbac_on_every_page(run_events, name, args, min_role):
    project = run_events
    check_rbac(
        method="get",
        url=f"{reverse(name, args=args)}?project={project.slug}",
        project=project,
        min_role=min_role,
        api=False,
    )


def test_decision_log_of_another_projects_run_is_404(admin_user, run_events):
    other = project_create(creator=admin_user, slug="other-p", name="Other")
    c = Client()
    c.force_login(admin_user)
    url = reverse("decision-log", args=["run-42"])
    assert c.get(f"{url}?project={other.slug}").status_code == 404
    api = f"/api/v1/projects/{other.slug}/decision-logs/run-42/"
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(admin_user)
    assert client.get(api).status_code == 404


def test_rbac_on_the_decision_log_api(run_events):
    check_rbac(
        method="get",
        url=f"/api/v1/projects/{run_events.slug}/decision-logs/run-42/",
        project=run_events,
        min_role=Role.VIEWER,
    )
