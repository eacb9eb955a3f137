"""The read-only history endpoints (agent turns and activations, policy activations,
budget periods and alerts, circuit breakers): content, filters, RBAC, isolation."""

from __future__ import annotations

import pytest

from controlplane.models import Role
from tests.rbac import check_rbac
from tests.seed import seed_project

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    "agent-turns",
    "agent-activations",
    "policy-activations",
    "budget-periods",
    "budget-alerts",
    "circuit-breakers",
]


@pytest.fixture
def seeded(project, admin_user):
    return seed_project(project, admin_user)


def base(project) -> str:
    return f"/api/v1/projects/{project.slug}"


@pytest.mark.parametrize("name", ENDPOINTS)
def test_history_lists_need_viewer(project, seeded, name):
    check_rbac(method="get", url=f"{base(project)}/{name}/", project=project, min_role=Role.VIEWER)


def test_agent_turns_list_and_detail(admin_client_api, project, seeded):
    body = admin_client_api.get(f"{base(project)}/agent-turns/?agent=helper&status=parked").json()
    [turn] = body["results"]
    assert (turn["agent"], turn["agent_version"], turn["run_id"]) == ("helper", 1, "run-1")
    assert "messages" not in turn
    detail = admin_client_api.get(f"{base(project)}/agent-turns/{turn['id']}/").json()
    assert detail["messages"] and detail["pending"][0]["tool_name"] == "notify"
    none = admin_client_api.get(f"{base(project)}/agent-turns/?status=completed").json()
    assert none["results"] == []


def test_activation_histories(admin_client_api, project, seeded):
    agents = admin_client_api.get(f"{base(project)}/agent-activations/?agent=helper").json()
    assert [(a["agent"], a["version"]) for a in agents["results"]] == [("helper", 1)]
    policies = admin_client_api.get(f"{base(project)}/policy-activations/").json()
    assert [(a["policy"], a["version"]) for a in policies["results"]] == [
        ("default", 2),
        ("default", 1),
    ]


def test_budget_periods_alerts_and_breakers(admin_client_api, project, seeded):
    periods = admin_client_api.get(f"{base(project)}/budget-periods/?budget=tiny").json()
    [period] = periods["results"]
    assert period["budget"] == "tiny" and period["spent_usd"] != "0.00000000"
    alerts = admin_client_api.get(f"{base(project)}/budget-alerts/?ordering=threshold").json()
    assert [a["threshold"] for a in alerts["results"]] == [50, 80, 100]
    breakers = admin_client_api.get(f"{base(project)}/circuit-breakers/?state=open").json()
    assert [b["label"] for b in breakers["results"]] == ["echo"]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_another_projects_history_is_not_listed(admin_client_api, admin_user, seeded, name):
    from controlplane.services import project_create

    other = project_create(slug="other", name="Other", creator=admin_user)
    assert admin_client_api.get(f"{base(other)}/{name}/").json()["results"] == []


def test_a_turn_never_shows_a_token_shaped_secret(admin_client_api, project, admin_user):
    from agents.runtime import run_agent_turn
    from tests.seed import seed_registry

    agent = seed_registry(project, admin_user)
    agent.refresh_from_db()
    secret = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0" * 2
    run_agent_turn(agent_version=agent.active_version, input=f"Use {secret}", user=admin_user)
    listed = admin_client_api.get(f"{base(project)}/agent-turns/").json()["results"]
    detail = admin_client_api.get(f"{base(project)}/agent-turns/{listed[0]['id']}/")
    assert secret not in str(listed) and secret not in detail.content.decode()
    assert "********" in listed[0]["input"]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("0777-01-28T04:03:08-17:32", 200),  # PostgreSQL refuses this offset as given
        ("0001-01-01T00:00:00+01:00", 400),  # before year 1 in UTC
        ("not a time", 400),
    ],
)
def test_date_time_filters_take_any_offset_and_refuse_what_is_out_of_range(
    admin_client_api, project, value, status
):
    for name in ("budget-reservations", "agent-turns", "policy-activations"):
        response = admin_client_api.get(f"{base(project)}/{name}/", {"created_after": value})
        if name == "policy-activations":
            response = admin_client_api.get(f"{base(project)}/{name}/", {"activated_after": value})
        assert response.status_code == status, (name, response.content)


def test_policy_active_at_takes_any_offset(admin_client_api, project, admin_user):
    from governance.services import policy_create

    policy_create(project=project, slug="default", actor=admin_user)
    url = f"{base(project)}/policies/default/active-at/"
    assert admin_client_api.get(url, {"at": "0777-01-28T04:03:08-17:32"}).status_code == 404
    assert admin_client_api.get(url, {"at": "0001-01-01T00:00:00+01:00"}).status_code == 400
