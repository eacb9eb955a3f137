"""Agent versions: immutable, activate/rollback, active-at-time, diff, validation with field paths."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.models import AgentVersion, ToolGrant, VersionImmutableError
from agents.selectors import agent_version_active_at, agent_version_diff, version_snapshot
from agents.services import agent_create, agent_version_activate, agent_version_create
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(project, config, admin_user):
    return agent_create(project=project, slug="triage", config=config, actor=admin_user)


def test_creating_an_agent_creates_and_activates_version_1(agent, config):
    assert agent.active_version.number == 1
    snapshot = version_snapshot(agent.active_version)
    assert snapshot["instructions"] == config["instructions"]
    assert [g["tool"] for g in snapshot["grants"]] == ["echo", "payments.send"]
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions[-3:] == ["agent.created", "agent.version.created", "agent.version.activated"]


def test_versions_are_immutable(agent):
    version = agent.active_version
    version.instructions = "changed"
    with pytest.raises(VersionImmutableError):
        version.save()
    with pytest.raises(VersionImmutableError):
        version.delete()
    with pytest.raises(VersionImmutableError):
        AgentVersion.objects.filter(pk=version.pk).update(instructions="x")
    grant = version.grants.first()
    grant.effect = "deny"
    with pytest.raises(VersionImmutableError):
        grant.save()
    with pytest.raises(VersionImmutableError):
        ToolGrant.objects.filter(agent_version=version).delete()


def test_copy_with_changes_makes_version_2_and_rollback_reactivates_1(agent, admin_user):
    v2 = agent_version_create(
        agent=agent, changes={"temperature": 0.9}, actor=admin_user, change_note="warmer"
    )
    agent.refresh_from_db()
    assert agent.active_version == v2 and v2.number == 2
    diff = agent_version_diff(AgentVersion.objects.get(agent=agent, number=1), v2)
    assert diff == [{"field": "temperature", "before": 0.2, "after": 0.9}]
    agent_version_activate(
        version=AgentVersion.objects.get(agent=agent, number=1), actor=admin_user
    )
    agent.refresh_from_db()
    assert agent.active_version.number == 1
    event = AuditEvent.objects.filter(action="agent.version.activated").last()
    assert event.data == {"version": 1, "previous_version": 2, "rollback": True}


def test_diff_compares_grants_per_tool(agent, config):
    changed = dict(config)
    changed["grants"] = [
        {"tool": "echo", "effect": "deny"},
    ]
    v2 = agent_version_create(agent=agent, config=changed)
    diff = {d["field"]: d for d in agent_version_diff(agent.versions.get(number=1), v2)}
    assert set(diff) == {"grants.echo", "grants.payments.send"}
    assert diff["grants.payments.send"]["after"] is None
    assert diff["grants.echo"]["before"]["effect"] == "allow"
    assert diff["grants.echo"]["after"]["effect"] == "deny"


def test_active_version_at_a_time(agent):
    before_v2 = timezone.now()
    v2 = agent_version_create(agent=agent, changes={"max_output_tokens": 2048})
    assert agent_version_active_at(agent, before_v2).number == 1
    assert agent_version_active_at(agent, timezone.now()) == v2
    assert agent_version_active_at(agent, agent.created_at - timedelta(seconds=1)) is None


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"grants": [{"tool": "nope"}]}, "grants.0.tool", "No tool 'nope'"),
        ({"grants": [{"tool": "echo", "effect": "maybe"}]}, "grants.0.effect", "Input should be"),
        (
            {"grants": [{"tool": "echo", "rules": [{"when": "args.x >", "then": "deny"}]}]},
            "grants.0.rules.0.when",
            "CEL syntax error at line 1, column",
        ),
        (
            {"grants": [{"tool": "echo", "rules": [{"when": "secret.x == 1", "then": "deny"}]}]},
            "grants.0.rules.0.when",
            "Unknown variable(s) secret",
        ),
        ({"model_endpoint": "missing"}, "model_endpoint", "No model endpoint"),
        ({"delegates": ["triage"]}, "delegates.0", "cannot delegate to itself"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_bad_config_names_the_field_and_keeps_the_active_version(agent, change, path, message):
    with pytest.raises(ValidationError) as info:
        agent_version_create(agent=agent, changes=change)
    errors = info.value.message_dict
    assert path in errors, errors
    assert any(message in m for m in errors[path]), errors
    agent.refresh_from_db()
    assert agent.active_version.number == 1
    assert agent.versions.count() == 1


def test_every_error_of_a_config_comes_back_at_once_with_its_path(agent):
    rule = {"when": "args.amount > 100", "then": "deny"}
    change = {
        "temperature": 5,
        "grants": [
            {"tool": "echo", "rules": [rule, {"when": "args.amount >", "then": "deny"}]},
            {"tool": "payments.send", "effect": "maybe", "rules": [{**rule, "when": "x.y"}]},
        ],
    }
    with pytest.raises(ValidationError) as info:
        agent_version_create(agent=agent, changes=change)
    errors = info.value.message_dict
    assert set(errors) == {
        "temperature",
        "grants.0.rules.1.when",
        "grants.1.effect",
        "grants.1.rules.0.when",
    }
    assert errors["grants.0.rules.1.when"][0].startswith("CEL syntax error at line 1, column")
    assert errors["grants.1.rules.0.when"][0].startswith("Unknown variable(s) x")
    assert agent.versions.count() == 1


def test_versions_are_read_only_in_the_admin(agent, client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(staff)
    version = agent.active_version
    page = client.get(f"/admin/agents/agentversion/{version.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert (
        client.post(
            f"/admin/agents/agentversion/{version.pk}/change/", {"instructions": "x"}
        ).status_code
        == 403
    )
    assert client.get(f"/admin/agents/agentversion/{version.pk}/delete/").status_code == 403
    assert client.get("/admin/agents/toolgrant/add/").status_code == 403
    version.refresh_from_db()
    assert version.instructions == "You triage support tickets."


@pytest.mark.parametrize(
    ("tool", "amount", "effect"),
    [
        ("payments.send", 5, "allow"),
        ("payments.send", 500, "require_approval"),
        # Rules are ordered: "> 100" comes before "> 10000", so it decides first.
        ("payments.send", 50000, "require_approval"),
        ("not-granted", 5, "deny"),
    ],
)
def test_grant_decision_is_default_deny_then_ordered_rules(agent, tool, amount, effect):
    from agents.governed import decide_for_version

    decision = decide_for_version(
        version=agent.active_version, tool_name=tool, arguments={"to": "x", "amount": amount}
    )
    assert decision.effect == effect
    if tool == "not-granted":
        assert decision.grant_id is None and "default deny" in decision.messages[0]


def test_a_version_without_grants_denies_every_tool(agent):
    from agents.governed import decide_for_version

    v2 = agent_version_create(agent=agent, changes={"grants": []})
    decision = decide_for_version(version=v2, tool_name="echo", arguments={})
    assert decision.effect == "deny"
    decision = decide_for_version(
        version=agent.versions.get(number=1), tool_name="echo", arguments={}
    )
    assert decision.effect == "allow"
