"""Cost reports: every report equals the ledger's sums (property-based), from the rollup and
from the ledger alike; the rollup follows ``cost_record``; burn-down and projection; bad
requests are refused by field."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import Agent
from controlplane.services import project_create
from governance.models import CostEntry, CostRollup
from governance.pricing import fixed_price
from governance.reports import (
    CostFilters,
    ReportError,
    budget_burndown,
    cost_report,
    cost_rollup_rebuild,
    period_start,
)
from governance.services import budget_create, cost_record
from tests.factories import UserFactory

D = Decimal
BASE = datetime(2026, 3, 20, tzinfo=UTC)  # spans the European DST change (29 March)
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]


@pytest.fixture
def ledger_setup(db, admin_user):
    project = project_create(creator=admin_user, slug="rep", name="Rep", time_zone="Europe/Paris")
    agents = [Agent.objects.create(project=project, slug=f"a{i}") for i in range(3)]
    users = [UserFactory(username=f"u{i}") for i in range(2)]
    return project, agents, users


entry_strategy = st.tuples(
    st.integers(min_value=0, max_value=20 * 24 * 60 - 1),  # minutes after BASE
    st.integers(min_value=0, max_value=3),  # agent index (3 = none)
    st.integers(min_value=0, max_value=2),  # user index (2 = none)
    st.sampled_from(["gpt-4o", "claude", ""]),
    st.integers(min_value=0, max_value=10**9),  # cost in 1e-8 USD
)


def _expected(rows, *, start, end, zone, group_by, interval, only_agent=""):
    sums: dict = defaultdict(lambda: [D(0), 0])
    for at, agent, user, model, cost in rows:
        if not start <= at < end or (only_agent and agent != only_agent):
            continue
        labels = {
            "agent": agent or "(none)",
            "user": user or "(none)",
            "model": model or "(none)",
        }
        period = period_start(at.astimezone(zone).date(), interval) if interval else None
        key = (period, tuple(labels[g] for g in group_by))
        sums[key][0] += cost
        sums[key][1] += 1
    return {k: (v[0], v[1]) for k, v in sums.items()}


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entries=st.lists(entry_strategy, max_size=40),
    zone_name=st.sampled_from(ZONES),
    group_by=st.sampled_from([(), ("agent",), ("user",), ("model",), ("agent", "model")]),
    interval=st.sampled_from([None, "day", "week", "month"]),
    start_min=st.integers(min_value=-600, max_value=10 * 24 * 60),
    length_min=st.integers(min_value=1, max_value=25 * 24 * 60),
    only_agent=st.sampled_from(["", "a1"]),
)
def test_report_numbers_equal_the_ledger_sums(
    ledger_setup, entries, zone_name, group_by, interval, start_min, length_min, only_agent
):
    project, agents, users = ledger_setup
    CostEntry.objects.all().delete()
    project.time_zone = zone_name
    project.save(update_fields=["time_zone"])
    zone = ZoneInfo(zone_name)
    rows = []
    objs = []
    for i, (minute, a, u, model, cents) in enumerate(entries):
        at = BASE + timedelta(minutes=minute)
        cost = D(cents) / D(100_000_000)
        agent = agents[a] if a < len(agents) else None
        user = users[u] if u < len(users) else None
        rows.append((at, agent.slug if agent else "", user.username if user else "", model, cost))
        objs.append(
            CostEntry(
                call_id=f"c{i}",
                kind="model",
                project=project,
                agent=agent,
                user=user,
                model=model,
                cost_usd=cost,
                price_source="override",
                occurred_at=at,
            )
        )
    CostEntry.objects.bulk_create(objs)
    cost_rollup_rebuild(projects=[project])
    start = BASE + timedelta(minutes=start_min)
    end = start + timedelta(minutes=length_min)
    expected = _expected(
        rows,
        start=start,
        end=end,
        zone=zone,
        group_by=group_by,
        interval=interval,
        only_agent=only_agent,
    )
    for use_rollups in (True, False):
        report = cost_report(
            projects=[project],
            zone=zone,
            start=start,
            end=end,
            group_by=group_by,
            interval=interval,
            filters=CostFilters(agent=only_agent),
            use_rollups=use_rollups,
        )
        got = {(r.period, r.group): (r.cost_usd, r.entries) for r in report.rows}
        assert got == expected, f"use_rollups={use_rollups}"
        assert report.total_usd == sum((v[0] for v in expected.values()), D(0))


def test_cost_record_keeps_the_rollup_equal_to_a_rebuild(ledger_setup):
    project, agents, users = ledger_setup
    for i in range(6):
        cost_record(
            call_id=f"call-{i}",
            kind="model",
            project=project,
            priced=fixed_price(D("0.125") * (i + 1)),
            input_tokens=10 * i,
            output_tokens=i,
            model="gpt-4o" if i % 2 else "claude",
            agent=agents[i % 2],
            user=users[0] if i % 3 else None,
            occurred_at=BASE + timedelta(hours=7 * i),
        )
    cost_record(  # a retry of the same call charges nothing more, in the rollup too
        call_id="call-0", kind="model", project=project, priced=fixed_price(D("9"))
    )
    key = ("day", "agent_pk", "user_pk", "model", "cost_usd", "entries", "input_tokens")
    live = sorted(CostRollup.objects.values_list(*key))
    cost_rollup_rebuild(projects=[project])
    assert sorted(CostRollup.objects.values_list(*key)) == live
    assert sum(row[4] for row in live) == D("0.125") * 21


def test_a_changed_time_zone_falls_back_to_the_ledger_until_rebuilt(ledger_setup):
    project, agents, _ = ledger_setup
    cost_record(
        call_id="late",
        kind="model",
        project=project,
        priced=fixed_price(D("1")),
        agent=agents[0],
        occurred_at=datetime(2026, 3, 10, 23, 30, tzinfo=UTC),  # 11 March in Paris
    )
    project.time_zone = "UTC"
    project.save(update_fields=["time_zone"])
    report = cost_report(
        projects=[project],
        zone=project.zone,
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 4, 1, tzinfo=UTC),
        interval="day",
    )
    assert [(r.period.isoformat(), r.cost_usd) for r in report.rows] == [("2026-03-10", D("1"))]


def test_filters_narrow_the_report(ledger_setup):
    project, agents, users = ledger_setup
    for i, (agent, user) in enumerate([(0, 0), (0, 1), (1, 0)]):
        cost_record(
            call_id=f"f{i}",
            kind="model",
            project=project,
            priced=fixed_price(D(i + 1)),
            agent=agents[agent],
            user=users[user],
            run_id=f"run-{i}",
            occurred_at=BASE + timedelta(days=2),
        )
    args = {
        "projects": [project],
        "zone": project.zone,
        "start": BASE,
        "end": BASE + timedelta(days=5),
        "group_by": ["agent"],
    }
    report = cost_report(**args, filters=CostFilters(user="u0"))
    assert {r.group: r.cost_usd for r in report.rows} == {("a0",): D(1), ("a1",): D(3)}
    report = cost_report(**args, filters=CostFilters(run_id="run-1"))
    assert {r.group: r.cost_usd for r in report.rows} == {("a0",): D(2)}


def test_reports_read_only_the_projects_given(ledger_setup, admin_user):
    project, agents, _ = ledger_setup
    other = project_create(creator=admin_user, slug="other", name="Other")
    for p, cost in ((project, D(1)), (other, D(5))):
        cost_record(
            call_id=f"iso-{p.slug}",
            kind="model",
            project=p,
            priced=fixed_price(cost),
            occurred_at=BASE,
        )
    report = cost_report(
        projects=[project],
        zone=project.zone,
        start=BASE - timedelta(days=3),
        end=BASE + timedelta(days=3),
    )
    assert report.total_usd == D(1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group_by": ["nope"]}, "group_by"),
        ({"group_by": ["agent", "user", "model"]}, "group_by"),
        ({"interval": "hour"}, "interval"),
        ({"end": BASE - timedelta(days=1)}, "to"),
        ({"interval": "day", "start": BASE - timedelta(days=5000)}, "interval"),
    ],
)
def test_bad_requests_name_the_field(ledger_setup, kwargs, field):
    project, _, _ = ledger_setup
    args = {"projects": [project], "zone": project.zone, "start": BASE, "end": BASE + timedelta(1)}
    args.update(kwargs)
    with pytest.raises(ReportError) as caught:
        cost_report(**args)
    assert field in caught.value.errors


def test_burndown_projects_the_period_end(ledger_setup):
    project, _, _ = ledger_setup
    budget = budget_create(
        project=project, name="monthly", scope="project", period="month", limit_usd=D("30")
    )
    now = datetime(2026, 4, 11, 10, tzinfo=UTC)  # 10 days + 12 h into April (Paris)
    for day in range(10):
        cost_record(
            call_id=f"b{day}",
            kind="model",
            project=project,
            priced=fixed_price(D("2")),
            occurred_at=datetime(2026, 4, 1 + day, 12, tzinfo=UTC),
        )
    burn = budget_burndown(budget, at=now)
    assert burn.spent_usd == D("20")
    assert [p[1] for p in burn.points] == [D(2 * (i + 1)) for i in range(10)]
    elapsed = now - burn.period_begins
    length = burn.period_ends - burn.period_begins
    expected = D("20") / D(elapsed.total_seconds()) * D(length.total_seconds())
    assert abs(burn.projected_usd - expected) < D("0.0001")
    assert burn.projected_over
    assert burn.period_begins < burn.exhausted_at < burn.period_ends
