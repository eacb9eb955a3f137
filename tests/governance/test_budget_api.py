"""REST for budgets, reservations and the cost ledger: RBAC on every endpoint, Decimal strings,
400s keyed by field path, filters, ordering and cursor pages."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agents.services import agent_create, model_endpoint_create
from controlplane.models import Role
from controlplane.services import membership_create, project_create
from governance.models import Budget
from governance.pricing import fixed_price, price_usage
from governance.services import budget_create, budget_reserve, budget_settle, cost_record
from tests.factories import UserFactory
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db

D = Decimal
_names = itertools.count(1)


def api(project, path: str = "") -> str:
    return f"/api/v1/projects/{project.slug}/{path}"


@pytest.fixture
def budget(project):
    return budget_create(
        project=project, name="monthly", scope="project", period="month", limit_usd=D("10")
    )


@pytest.fixture
def ledger(project, admin_user):
    """Three ledger entries: two gpt-4o calls of agent triage (one by alice), one tool call."""
    endpoint = model_endpoint_create(project=project, name="scripted", kind="scripted")
    agent = agent_create(
        project=project,
        slug="triage",
        config={"model_endpoint": endpoint.name, "model_name": "scripted-1", "instructions": "x"},
    )
    base = datetime(2026, 4, 1, 12, tzinfo=UTC)
    entries = [
        cost_record(
            call_id="run-1:s1:0",
            kind="model",
            project=project,
            priced=price_usage("openai", "gpt-4o", input_tokens=1000, output_tokens=100),
            input_tokens=1000,
            output_tokens=100,
            agent=agent,
            agent_version=agent.active_version,
            user=admin_user,
            run_id="run-1",
            occurred_at=base,
        ),
        cost_record(
            call_id="run-1:s2:0",
            kind="model",
            project=project,
            priced=price_usage("openai", "gpt-4o", input_tokens=2000, output_tokens=0),
            input_tokens=2000,
            agent=agent,
            run_id="run-1",
            occurred_at=base + timedelta(hours=1),
        ),
        cost_record(
            call_id="run-2:s1:0",
            kind="tool",
            project=project,
            priced=fixed_price(D("0.25")),
            run_id="run-2",
            occurred_at=base + timedelta(days=1),
        ),
    ]
    return agent, entries


# --- RBAC ---------------------------------------------------------------------------------------


class TestRbac:
    def test_reading_budgets_needs_viewer(self, project, budget):
        check_rbac(
            method="get", url=api(project, "budgets/"), project=project, min_role=Role.VIEWER
        )
        check_rbac(
            method="get",
            url=api(project, "budgets/monthly/"),
            project=project,
            min_role=Role.VIEWER,
        )

    def test_creating_a_budget_needs_admin(self, project):
        check_rbac(
            method="post",
            url=api(project, "budgets/"),
            data=lambda: {
                "name": f"b{next(_names)}",
                "scope": "project",
                "period": "day",
                "limit_usd": "5.00",
            },
            project=project,
            min_role=Role.ADMIN,
            audit_action="budget.created",
        )

    def test_changing_a_budget_needs_admin(self, project, budget):
        limits = iter(["11", "12", "13", "14", "15", "16"])
        check_rbac(
            method="patch",
            url=api(project, "budgets/monthly/"),
            data=lambda: {"limit_usd": next(limits)},
            project=project,
            min_role=Role.ADMIN,
            audit_action="budget.updated",
        )

    def test_deleting_a_budget_needs_admin(self, project):
        names = [f"gone{i}" for i in range(6)]  # one per principal check_rbac tries
        for name in names:
            budget_create(project=project, name=name, scope="project", period="day", limit_usd=D(1))
        urls = iter(api(project, f"budgets/{name}/") for name in names)
        check_rbac(
            method="delete",
            url=lambda: next(urls),
            project=project,
            min_role=Role.ADMIN,
            audit_action="budget.deleted",
        )
        assert list(Budget.objects.values_list("name", flat=True)) == names[:-1]

    def test_reading_reservations_and_the_ledger_needs_viewer(self, project, budget, ledger):
        budget_reserve(call_id="c1", project=project, budgets=[budget], amount_usd=D("0.5"))
        for path in (
            "budget-reservations/",
            "budget-reservations/c1/",
            "cost-entries/",
            "cost-entries/run-1:s1:0/",
            "cost-entries/totals/",
        ):
            check_rbac(method="get", url=api(project, path), project=project, min_role=Role.VIEWER)

    def test_reservations_and_the_ledger_are_read_only(self, admin_client_api, project, ledger):
        assert admin_client_api.post(api(project, "cost-entries/"), {}).status_code == 405
        assert admin_client_api.delete(api(project, "cost-entries/run-1:s1:0/")).status_code == 405
        assert admin_client_api.post(api(project, "budget-reservations/"), {}).status_code == 405

    def test_another_projects_budget_is_not_found(self, admin_client_api, project):
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        budget_create(project=other, name="theirs", scope="project", period="day", limit_usd=D(1))
        assert admin_client_api.get(api(project, "budgets/theirs/")).status_code == 404


# --- budgets ------------------------------------------------------------------------------------


class TestBudgets:
    def test_amounts_are_decimal_strings_with_current_usage(
        self, admin_client_api, project, budget
    ):
        budget_reserve(call_id="a", project=project, budgets=[budget], amount_usd=D("0.3"))
        budget_settle(call_id="a", actual_usd=D("0.12345678"))
        budget_reserve(call_id="b", project=project, budgets=[budget], amount_usd=D("0.5"))
        body = admin_client_api.get(api(project, "budgets/monthly/")).json()
        assert body["limit_usd"] == "10.00000000"
        usage = body["current_usage"]
        assert usage["spent_usd"] == "0.12345678"
        assert usage["reserved_usd"] == "0.50000000"
        assert usage["available_usd"] == "9.37654322"
        assert usage["period_start"].endswith("-01")
        listed = admin_client_api.get(api(project, "budgets/")).json()["results"]
        assert listed[0]["current_usage"] == usage

    def test_create_a_user_budget(self, admin_client_api, project, admin_user):
        response = admin_client_api.post(
            api(project, "budgets/"),
            {
                "name": "alice-daily",
                "scope": "user",
                "user": admin_user.username,
                "period": "day",
                "limit_usd": "2.5",
                "hard": False,
                "alert_thresholds": [90, 25],
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["limit_usd"] == "2.50000000"
        assert body["alert_thresholds"] == [25, 90]
        assert body["user"] == "alice" and body["hard"] is False

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({"limit_usd": "lots"}, "limit_usd"),
            ({"limit_usd": "0"}, "limit_usd"),
            ({"limit_usd": "0.123456789"}, "limit_usd"),
            ({"scope": "user"}, "user"),
            ({"scope": "team"}, "scope"),
            ({"period": "fortnight"}, "period"),
            ({"name": "Has Spaces"}, "name"),
            ({"name": "monthly"}, "name"),
            ({"user": "nobody-here"}, "user"),
        ],
    )
    def test_bad_input_is_a_400_keyed_by_field(self, admin_client_api, project, budget, data, path):
        payload = {"name": "new", "scope": "project", "period": "day", "limit_usd": "1", **data}
        response = admin_client_api.post(api(project, "budgets/"), payload, format="json")
        assert response.status_code == 400, response.content
        assert path in response.json(), response.json()
        assert not Budget.objects.filter(name="new").exists()

    def test_threshold_errors_name_the_item(self, admin_client_api, project):
        payload = {
            "name": "new",
            "scope": "project",
            "period": "day",
            "limit_usd": "1",
            "alert_thresholds": [50, 0],
        }
        response = admin_client_api.post(api(project, "budgets/"), payload, format="json")
        assert response.status_code == 400
        assert "1" in response.json()["alert_thresholds"]
        payload["alert_thresholds"] = [50, 50]
        response = admin_client_api.post(api(project, "budgets/"), payload, format="json")
        assert response.status_code == 400 and "alert_thresholds" in response.json()

    def test_a_non_member_cannot_get_a_user_budget(self, admin_client_api, project):
        UserFactory(username="outsider")
        payload = {
            "name": "x",
            "scope": "user",
            "user": "outsider",
            "period": "day",
            "limit_usd": "1",
        }
        response = admin_client_api.post(api(project, "budgets/"), payload, format="json")
        assert response.status_code == 400
        assert "not a member" in response.json()["user"][0]

    def test_scope_and_period_cannot_change(self, admin_client_api, project, budget):
        response = admin_client_api.patch(
            api(project, "budgets/monthly/"), {"period": "day", "scope": "agent"}, format="json"
        )
        assert response.status_code == 400
        assert set(response.json()) == {"period", "scope"}

    def test_deactivate_and_a_used_budget_cannot_be_deleted(
        self, admin_client_api, project, budget
    ):
        budget_reserve(call_id="a", project=project, budgets=[budget], amount_usd=D("0.3"))
        response = admin_client_api.delete(api(project, "budgets/monthly/"))
        assert response.status_code == 400 and "deactivate" in response.json()["budget"][0]
        response = admin_client_api.patch(
            api(project, "budgets/monthly/"), {"active": False}, format="json"
        )
        assert response.status_code == 200 and response.json()["active"] is False
        active = admin_client_api.get(api(project, "budgets/?active=true")).json()["results"]
        assert active == []

    def test_filter_by_scope_and_user(self, admin_client_api, project, budget, admin_user):
        bob = UserFactory(username="bob")
        membership_create(project=project, user=bob, role=Role.VIEWER)
        for user in (admin_user, bob):
            budget_create(
                project=project,
                name=f"u-{user.username}",
                scope="user",
                user=user,
                period="day",
                limit_usd=D(1),
            )
        names = lambda query: [  # noqa: E731
            b["name"]
            for b in admin_client_api.get(api(project, f"budgets/?{query}")).json()["results"]
        ]
        assert names("scope=user") == ["u-alice", "u-bob"]
        assert names("user=bob") == ["u-bob"]
        assert names("ordering=-limit_usd") == ["monthly", "u-alice", "u-bob"]


# --- reservations -------------------------------------------------------------------------------


def test_reservations_in_flight_by_budget(admin_client_api, project, budget):
    other = budget_create(
        project=project, name="other", scope="project", period="day", limit_usd=D(5)
    )
    budget_reserve(call_id="both", project=project, budgets=[budget, other], amount_usd=D("0.5"))
    budget_reserve(call_id="one", project=project, budgets=[other], amount_usd=D("0.25"))
    budget_settle(call_id="one", actual_usd=D("0.1"))
    body = admin_client_api.get(
        api(project, "budget-reservations/?status=reserved&budget=monthly")
    ).json()
    assert [r["call_id"] for r in body["results"]] == ["both"]
    detail = admin_client_api.get(api(project, "budget-reservations/one/")).json()
    assert detail["settled_usd"] == "0.10000000" and detail["amount_usd"] == "0.25000000"
    assert detail["lines"] == [
        {
            "budget": "other",
            "period_start": detail["lines"][0]["period_start"],
            "amount_usd": "0.25000000",
        }
    ]


# --- the ledger ---------------------------------------------------------------------------------


class TestLedger:
    def calls(self, client, project, query: str = "") -> list[str]:
        response = client.get(api(project, f"cost-entries/?{query}"))
        assert response.status_code == 200, response.content
        return [e["call_id"] for e in response.json()["results"]]

    def test_entries_show_the_price_used(self, admin_client_api, project, ledger):
        entry = admin_client_api.get(api(project, "cost-entries/run-1:s1:0/")).json()
        assert entry["cost_usd"] == "0.00350000"
        assert entry["input_usd_per_mtok"] == "2.50000000"
        assert entry["output_usd_per_mtok"] == "10.00000000"
        assert entry["price_source"] == "genai-prices"
        assert (entry["agent"], entry["agent_version"], entry["user"]) == ("triage", 1, "alice")

    def test_filters(self, admin_client_api, project, ledger):
        assert self.calls(admin_client_api, project) == ["run-2:s1:0", "run-1:s2:0", "run-1:s1:0"]
        assert self.calls(admin_client_api, project, "agent=triage") == ["run-1:s2:0", "run-1:s1:0"]
        assert self.calls(admin_client_api, project, "agent=triage&agent_version=1") == [
            "run-1:s1:0"
        ]
        assert self.calls(admin_client_api, project, "user=alice") == ["run-1:s1:0"]
        assert self.calls(admin_client_api, project, "model=gpt-4o&provider=openai") == [
            "run-1:s2:0",
            "run-1:s1:0",
        ]
        assert self.calls(admin_client_api, project, "run_id=run-2") == ["run-2:s1:0"]
        assert self.calls(admin_client_api, project, "kind=tool") == ["run-2:s1:0"]
        window = "from=2026-04-01T12:30:00Z&to=2026-04-02T00:00:00Z"
        assert self.calls(admin_client_api, project, window) == ["run-1:s2:0"]
        assert self.calls(admin_client_api, project, "ordering=cost_usd") == [
            "run-1:s1:0",
            "run-1:s2:0",
            "run-2:s1:0",
        ]

    def test_bad_filters_are_a_400_naming_the_parameter(self, admin_client_api, project, ledger):
        response = admin_client_api.get(api(project, "cost-entries/?from=yesterday"))
        assert response.status_code == 400 and "from" in response.json()
        response = admin_client_api.get(api(project, "cost-entries/?kind=lunch"))
        assert response.status_code == 400 and "kind" in response.json()
        response = admin_client_api.get(api(project, "cost-entries/totals/?group_by=weather"))
        assert response.status_code == 400 and "group_by" in response.json()

    def test_cursor_pages(self, admin_client_api, project, ledger):
        first = admin_client_api.get(api(project, "cost-entries/?page_size=2")).json()
        assert [e["call_id"] for e in first["results"]] == ["run-2:s1:0", "run-1:s2:0"]
        second = admin_client_api.get(first["next"]).json()
        assert [e["call_id"] for e in second["results"]] == ["run-1:s1:0"]
        assert second["next"] is None

    def test_totals_with_groups(self, admin_client_api, project, ledger):
        body = admin_client_api.get(api(project, "cost-entries/totals/?group_by=agent")).json()
        assert body["cost_usd"] == "0.25850000"  # 0.0035 + 0.005 + 0.25
        assert body["entries"] == 3 and body["input_tokens"] == 3000
        assert body["groups"] == [
            {"key": None, "cost_usd": "0.25000000", "entries": 1},
            {"key": "triage", "cost_usd": "0.00850000", "entries": 2},
        ]
        body = admin_client_api.get(api(project, "cost-entries/totals/?agent=triage")).json()
        assert body["cost_usd"] == "0.00850000" and body["groups"] == []

    def test_another_projects_entries_are_invisible(self, admin_client_api, project, ledger):
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        cost_record(call_id="theirs", kind="tool", project=other, priced=fixed_price(D(9)))
        assert "theirs" not in self.calls(admin_client_api, project)
        assert admin_client_api.get(api(project, "cost-entries/theirs/")).status_code == 404
