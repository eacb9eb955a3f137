"""The registry's side of the governed path: a version's proposed tool call decided by the
policy engine with the version's grants, the tool's schema and the project's policy."""

from __future__ import annotations

import pytest

from agents.governed import decide_for_version
from agents.services import agent_create, agent_version_create, tool_update
from governance.models import UsageCounter
from governance.services import policy_create, policy_version_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(project, config, admin_user):
    return agent_create(project=project, slug="triage", config=config, actor=admin_user)


def decide(agent, tool, arguments, **context):
    return decide_for_version(
        version=agent.active_version, tool_name=tool, arguments=arguments, **context
    )


@pytest.mark.parametrize(
    ("tool", "arguments", "effect", "rule"),
    [
        ("payments.send", {"to": "a", "amount": 5}, "allow", "grant.effect"),
        ("payments.send", {"to": "a", "amount": 500}, "require_approval", "grant.rule.1"),
        ("payments.send", {"amount": 5}, "deny", "schema"),
        ("echo", {"text": "hi"}, "allow", "grant.effect"),
        ("no.such.tool", {}, "deny", "grant.missing"),
    ],
)
def test_decisions_follow_the_versions_grants(agent, tool, arguments, effect, rule):
    decision = decide(agent, tool, arguments)
    assert (decision.effect, decision.rule) == (effect, rule)
    assert decision.policy_label == "built-in defaults"


def test_a_tool_granted_in_an_older_version_only_is_denied(agent, admin_user):
    agent_version_create(
        agent=agent, changes={"grants": [{"tool": "echo"}]}, actor=admin_user, change_note="x"
    )
    agent.refresh_from_db()
    decision = decide(agent, "payments.send", {"to": "a", "amount": 1})
    assert (decision.effect, decision.rule) == ("deny", "grant.missing")


def test_the_projects_policy_caps_and_the_users_role_reach_the_engine(project, agent, admin_user):
    policy = policy_create(project=project, slug="default", actor=admin_user)
    version = policy_version_create(
        policy=policy, document="caps:\n  max_tool_calls_per_run: 1\n", actor=admin_user
    )
    run = {"id": "run-9", "trace_id": "t", "tool_calls": 0}
    first = decide(agent, "echo", {"text": "a"}, run=run, user=admin_user)
    assert first.allowed and first.policy_version_id == version.pk
    second = decide(agent, "echo", {"text": "b"}, run=run, user=admin_user)
    assert (second.effect, second.rule) == ("deny", "caps.max_tool_calls_per_run")


def test_a_schema_change_is_seen_at_once(project, agent, tools, admin_user):
    assert decide(agent, "echo", {"text": 3}).rule == "schema"
    tool_update(
        tool=tools["echo"],
        input_schema={"type": "object", "properties": {"text": {"type": "integer"}}},
    )
    assert decide(agent, "echo", {"text": 3}).allowed


def test_dry_run_has_no_side_effects(agent):
    run = {"id": "run-1", "trace_id": "t", "tool_calls": 0}
    for _ in range(5):
        assert decide(
            agent, "payments.send", {"to": "a", "amount": 1}, run=run, dry_run=True
        ).allowed
    assert not UsageCounter.objects.exists()
    for _ in range(3):
        assert decide(agent, "payments.send", {"to": "a", "amount": 1}, run=run).allowed
    capped = decide(agent, "payments.send", {"to": "a", "amount": 1}, run=run, dry_run=True)
    assert (capped.effect, capped.rule) == ("deny", "grant.max_calls_per_run")


class TestPolicyAndBudgetReferences:
    @pytest.fixture
    def refs(self, project, admin_user):
        from decimal import Decimal

        from governance.services import budget_create

        strict = policy_create(project=project, slug="strict", actor=admin_user)
        policy_version_create(
            policy=strict, document="caps:\n  max_tool_calls_per_run: 1\n", actor=admin_user
        )
        daily = budget_create(
            project=project,
            name="triage-daily",
            scope="agent",
            period="day",
            limit_usd=Decimal("5"),
        )
        monthly = budget_create(
            project=project,
            name="project-month",
            scope="project",
            period="month",
            limit_usd=Decimal("50"),
        )
        return strict, daily, monthly

    def test_a_version_names_its_policy_and_budget(self, agent, refs, admin_user):
        from agents.selectors import config_diff, version_snapshot

        strict, daily, _ = refs
        v2 = agent_version_create(
            agent=agent, changes={"policy": "strict", "budget": "triage-daily"}, actor=admin_user
        )
        assert (v2.policy, v2.budget) == (strict, daily)
        snapshot = version_snapshot(v2)
        assert (snapshot["policy"], snapshot["budget"]) == ("strict", "triage-daily")
        changed = {
            change["field"]
            for change in config_diff(version_snapshot(agent.versions.get(number=1)), snapshot)
        }
        assert {"policy", "budget"} <= changed
        run = {"id": "r", "trace_id": "t", "tool_calls": 0}
        assert decide_for_version(version=v2, tool_name="echo", arguments={}, run=run).allowed
        second = decide_for_version(version=v2, tool_name="echo", arguments={}, run=run)
        assert (second.rule, second.policy_label) == ("caps.max_tool_calls_per_run", "strict v1")

    def test_unknown_or_wrong_scope_references_are_errors_by_path(self, agent, refs, admin_user):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError) as caught:
            agent_version_create(
                agent=agent, changes={"policy": "nope", "budget": "project-month"}, actor=admin_user
            )
        errors = caught.value.message_dict
        assert errors["policy"] == ["No policy 'nope' in this project."]
        assert "agent-scope budget" in errors["budget"][0]
        assert agent.versions.count() == 1


class TestDryRun:
    API = "/api/v1/projects/acme/agents/triage/dry-run/"

    def test_rbac_any_member_may_ask_and_nothing_is_counted_or_audited(self, project, agent):
        from controlplane.models import Role
        from tests.rbac import check_rbac

        check_rbac(
            method="post",
            url=self.API,
            data={"tool": "payments.send", "arguments": {"to": "a", "amount": 5}, "run_id": "r1"},
            project=project,
            min_role=Role.VIEWER,
        )
        assert not UsageCounter.objects.exists()

    def test_decisions_over_rest(self, project, agent, admin_user):
        from controlplane.models import Role
        from tests.rbac import member_client

        client, _ = member_client(project, Role.VIEWER)
        body = client.post(
            self.API,
            {"tool": "payments.send", "arguments": {"to": "a", "amount": 500}},
            format="json",
        ).json()
        assert body["effect"] == "require_approval" and body["rule"] == "grant.rule.1"
        assert (body["version"], body["policy"], body["approval_quorum"]) == (
            1,
            "built-in defaults",
            1,
        )
        agent_version_create(agent=agent, changes={"grants": []}, actor=admin_user)
        now = client.post(self.API, {"tool": "echo", "arguments": {}}, format="json").json()
        assert (now["effect"], now["rule"], now["version"]) == ("deny", "grant.missing", 2)
        then = client.post(self.API, {"tool": "echo", "arguments": {}, "version": 1}, format="json")
        assert then.json()["effect"] == "allow"
        missing = client.post(
            self.API, {"tool": "echo", "arguments": {}, "version": 9}, format="json"
        )
        assert missing.status_code == 400 and "version" in missing.json()
        bad = client.post(self.API, {"arguments": {}}, format="json")
        assert bad.status_code == 400 and "tool" in bad.json()

    def test_read_only_token_may_dry_run(self, project, agent, admin_user):
        from rest_framework.test import APIClient

        from controlplane.services import api_token_create

        _, raw = api_token_create(project=project, user=admin_user, name="ro", scopes=["read"])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        response = client.post(self.API, {"tool": "echo", "arguments": {}}, format="json")
        assert response.status_code == 200 and response.json()["effect"] == "allow"

    def test_agent_page_dry_run(self, project, agent):
        from controlplane.models import Role
        from tests.rbac import member_client

        client, _ = member_client(project, Role.VIEWER, api=False)
        page = client.get("/agents/triage/").content.decode()
        assert 'id="dry-run-box"' in page
        result = client.post(
            "/agents/triage/dry-run/",
            {"tool": "payments.send", "arguments": '{"to": "a", "amount": 50000}'},
            HTTP_HX_REQUEST="true",
        )
        html = result.content.decode()
        assert result.status_code == 200 and 'data-effect="require_approval"' in html
        assert "<html" not in html
        bad = client.post("/agents/triage/dry-run/", {"tool": "echo", "arguments": "{oops"})
        assert bad.status_code == 400
        assert "Not valid JSON" in bad.content.decode()


def test_price_overrides_take_the_optional_cache_rates_governance_prices_with(project):
    from decimal import Decimal

    from django.core.exceptions import ValidationError

    from agents.pricing import endpoint_provider
    from agents.services import model_endpoint_create
    from governance.pricing import price_usage

    rates = {"input_per_mtok": "1", "output_per_mtok": "2", "cache_read_per_mtok": "0.1"}
    endpoint = model_endpoint_create(
        project=project,
        name="local",
        kind="openai_compatible",
        base_url="http://127.0.0.1:9/v1",
        price_overrides={"llama": rates},
    )
    assert endpoint_provider(endpoint) is None  # priced only by its override
    priced = price_usage(
        endpoint_provider(endpoint),
        "llama",
        input_tokens=1_000_000,
        output_tokens=0,
        cache_read_tokens=500_000,
        override=endpoint.price_overrides["llama"],
    )
    assert priced.cost_usd == Decimal("0.55") and priced.source == "override"
    with pytest.raises(ValidationError) as caught:
        model_endpoint_create(
            project=project, name="odd", kind="openai", price_overrides={"m": {**rates, "x": 1}}
        )
    assert "x" in str(caught.value)
