"""The cost report over REST: one aggregation endpoint (group_by, interval, from, to,
filters) and its CSV export; numbers equal the ledger; 400 by field; RBAC; isolation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.models import Agent
from controlplane.models import Role
from controlplane.services import project_create
from governance.pricing import fixed_price
from governance.services import cost_record
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db

D = Decimal
DAY = datetime(2026, 5, 4, 10, tzinfo=UTC)
RANGE = {"from": "2026-05-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}


def url(project, suffix="report/"):
    return f"/api/v1/projects/{project.slug}/cost-entries/{suffix}"


@pytest.fixture
def ledger(project, admin_user):
    agents = [Agent.objects.create(project=project, slug=s) for s in ("triage", "writer")]
    amounts = [("triage", 0, "1.5"), ("triage", 1, "0.25"), ("writer", 1, "2"), ("writer", 9, "4")]
    for i, (slug, day, usd) in enumerate(amounts):
        cost_record(
            call_id=f"c{i}",
            kind="model",
            project=project,
            priced=fixed_price(D(usd)),
            agent=next(a for a in agents if a.slug == slug),
            user=admin_user,
            model="gpt-4o",
            occurred_at=DAY + timedelta(days=day),
        )
    other = project_create(creator=admin_user, slug="other", name="Other")
    cost_record(
        call_id="other-1", kind="model", project=other, priced=fixed_price(D(100)), occurred_at=DAY
    )
    return project


def test_report_by_agent_and_day(admin_client_api, ledger):
    response = admin_client_api.get(url(ledger), {**RANGE, "group_by": "agent", "interval": "day"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total_usd"] == "7.75000000" and body["total_entries"] == 4
    cells = [(r["period"], r["group"]["agent"], r["cost_usd"]) for r in body["rows"]]
    assert cells == [
        ("2026-05-04", "triage", "1.50000000"),
        ("2026-05-05", "writer", "2.00000000"),
        ("2026-05-05", "triage", "0.25000000"),
        ("2026-05-13", "writer", "4.00000000"),
    ]
    assert [(t["group"]["agent"], t["cost_usd"]) for t in body["top"]] == [
        ("writer", "6.00000000"),
        ("triage", "1.75000000"),
    ]


def test_report_filters_and_weeks(admin_client_api, ledger):
    body = admin_client_api.get(
        url(ledger), {**RANGE, "interval": "week", "agent": "writer"}
    ).json()
    assert [(r["period"], r["cost_usd"]) for r in body["rows"]] == [
        ("2026-05-04", "2.00000000"),
        ("2026-05-11", "4.00000000"),
    ]


def test_csv_export_of_a_report(admin_client_api, ledger):
    response = admin_client_api.get(
        url(ledger, "report/csv/"), {**RANGE, "group_by": "agent,model"}
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "period",
        "agent",
        "model",
        "cost_usd",
        "entries",
        "input_tokens",
        "output_tokens",
    ]
    assert sorted((r[1], r[3]) for r in rows[1:]) == [
        ("triage", "1.75000000"),
        ("writer", "6.00000000"),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"interval": "hour"}, "interval"),
        ({"from": "soon"}, "from"),
        ({"from": "2026-06-01T00:00:00Z", "to": "2026-05-01T00:00:00Z"}, "to"),
        ({"top": "0"}, "top"),
        ({"agent_version": "x"}, "agent_version"),
    ],
)
def test_bad_parameters_are_400_by_field(admin_client_api, ledger, params, field):
    for suffix in ("report/", "report/csv/"):
        response = admin_client_api.get(url(ledger, suffix), params)
        assert response.status_code == 400, (suffix, params)
        assert field in response.json()


def test_other_projects_spend_never_shows(admin_client_api, ledger):
    body = admin_client_api.get(url(ledger), {**RANGE, "group_by": "project"}).json()
    assert [r["group"]["project"] for r in body["rows"]] == [ledger.slug]


@pytest.mark.parametrize("suffix", ["report/", "report/csv/"])
def test_rbac_on_the_report_endpoints(ledger, suffix):
    check_rbac(method="get", url=url(ledger, suffix), project=ledger, min_role=Role.VIEWER)


def test_csv_cells_never_start_a_formula(admin_client_api, project):
    cost_record(
        call_id="evil",
        kind="model",
        project=project,
        priced=fixed_price(D(1)),
        model='=HYPERLINK("http://x","y")',
        occurred_at=DAY,
    )
    response = admin_client_api.get(url(project, "report/csv/"), {**RANGE, "group_by": "model"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][1] == '\'=HYPERLINK("http://x","y")'
