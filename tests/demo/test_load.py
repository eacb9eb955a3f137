"""``demo_load``: what it creates, that a second run is a no-op, and the grants, policy and
budgets the issue asks for."""

from __future__ import annotations

import subprocess
from decimal import Decimal

import pytest

from agents.governed import decide_for_version
from agents.models import Agent, AgentVersion, Customer, KnowledgeArticle, ModelEndpoint, Tool
from flows.models import Flow, FlowVersion
from governance.models import AuditEvent, Budget, PolicyVersion
from governance.selectors import effective_policy
from tests.procs import manage_py, process_env

from .conftest import load_demo

pytestmark = pytest.mark.django_db


def counts():
    return {
        "agent versions": AgentVersion.objects.count(),
        "flow versions": FlowVersion.objects.count(),
        "policy versions": PolicyVersion.objects.count(),
        "budgets": Budget.objects.count(),
        "tools": Tool.objects.count(),
        "endpoints": ModelEndpoint.objects.count(),
        "customers": Customer.objects.count(),
        "articles": KnowledgeArticle.objects.count(),
        "audit events": AuditEvent.objects.count(),
    }


def test_demo_load_twice_is_a_no_op_the_second_time(demo_var, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    first = load_demo()
    assert "Demo login:" in first and "Demo loaded:" in first
    assert (demo_var / "demo-login.txt").exists() and (demo_var / "demo-approver.txt").exists()
    before = counts()
    second = load_demo()
    assert "Demo already loaded: nothing changed." in second
    assert counts() == before


def test_it_creates_the_five_agents_on_scripted_endpoints_and_both_flows(demo):
    agents = {a.slug: a for a in Agent.objects.filter(project=demo)}
    assert sorted(agents) == ["drafter", "intake", "refunds", "researcher", "reviewer"]
    for agent in agents.values():
        assert agent.active_version.model_endpoint.kind == "scripted"
        assert agent.active_version.budget is not None
    assert sorted(Flow.objects.filter(project=demo).values_list("slug", flat=True)) == [
        "document-review",
        "support-triage",
    ]


def test_the_researcher_has_no_write_tools(demo):
    version = Agent.objects.get(project=demo, slug="researcher").active_version
    risks = set(version.grants.values_list("tool__risk", flat=True))
    assert risks == {"read"}


@pytest.mark.parametrize(
    ("amount", "effect", "quorum"),
    [
        ("42.50", "allow", None),
        ("50", "allow", None),
        ("50.01", "require_approval", 1),
        ("500", "require_approval", 1),
        ("850.00", "require_approval", 2),
        ("5000", "require_approval", 2),
        ("7200", "deny", None),
    ],
)
def test_the_refund_grant_decides_by_amount(demo, amount, effect, quorum):
    version = Agent.objects.get(project=demo, slug="refunds").active_version
    decision = decide_for_version(
        version=version,
        tool_name="issue_refund",
        arguments={"customer_id": "C-1001", "amount_usd": amount},
        dry_run=True,
    )
    assert (decision.effect, decision.approval_quorum) == (effect, quorum), decision.messages


def test_send_email_naming_an_explicit_address_is_denied(demo):
    version = Agent.objects.get(project=demo, slug="reviewer").active_version
    arguments = {"customer_id": "C-1001", "subject": "Hi", "body": "Hello"}
    allowed = decide_for_version(
        version=version, tool_name="send_email", arguments=arguments, dry_run=True
    )
    denied = decide_for_version(
        version=version,
        tool_name="send_email",
        arguments={**arguments, "to": "someone@elsewhere.test"},
        dry_run=True,
    )
    assert (allowed.effect, denied.effect) == ("allow", "deny")


def test_the_policy_blocks_ssns_cards_and_keys_and_redacts_names_and_emails(demo):
    rules = effective_policy(project_id=demo.pk).document.pii_policy
    model_input = {t: r.action for t, r in rules.rules_for("model_input").items()}
    audit = {t: r.action for t, r in rules.rules_for("audit").items()}
    assert {model_input[t] for t in ("US_SSN", "CREDIT_CARD", "OPENAI_API_KEY")} == {"block"}
    assert (model_input["PERSON"], model_input["EMAIL_ADDRESS"]) == ("redact", "redact")
    assert (audit["PERSON"], audit["EMAIL_ADDRESS"], audit["US_SSN"]) == ("redact",) * 3


def test_budgets_project_monthly_per_agent_daily_and_one_small_soft(demo):
    budgets = {b.name: b for b in Budget.objects.filter(project=demo)}
    assert (budgets["project-monthly"].scope, budgets["project-monthly"].period) == (
        "project",
        "month",
    )
    daily = [b for b in budgets.values() if b.scope == "agent"]
    assert len(daily) == 5 and {b.period for b in daily} == {"day"}
    soft = [b for b in budgets.values() if not b.hard]
    assert [b.name for b in soft] == ["reviewer-daily"]
    assert soft[0].limit_usd <= Decimal("0.01")


def test_a_local_llm_moves_the_drafter_and_reviewer_and_back(demo, settings):
    settings.LOCAL_LLM_BASE_URL = "http://127.0.0.1:9/v1"
    out = load_demo()
    assert "model endpoint local-llm created" in out
    endpoints = {
        a.slug: a.active_version.model_endpoint.name for a in Agent.objects.filter(project=demo)
    }
    assert endpoints["drafter"] == endpoints["reviewer"] == "local-llm"
    assert endpoints["intake"] == "scripted-intake"
    settings.LOCAL_LLM_BASE_URL = ""
    load_demo()
    drafter = Agent.objects.get(project=demo, slug="drafter")
    assert drafter.active_version.model_endpoint.name == "scripted-drafter"
    assert "nothing changed" in load_demo()


def test_an_openai_key_switches_every_agent(demo, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    load_demo()
    endpoints = {a.active_version.model_endpoint.name for a in Agent.objects.filter(project=demo)}
    assert endpoints == {"openai"}
    endpoint = ModelEndpoint.objects.get(project=demo, name="openai")
    assert (endpoint.credential_env_var, endpoint.credential_encrypted) == ("OPENAI_API_KEY", "")


@pytest.mark.django_db(transaction=True)
def test_the_login_names_the_port_make_run_serves_on(tmp_path):
    """``WEB_PORT=8123 manage.py demo_load`` (what ``make run`` runs before the web server
    listens on ``$WEB_PORT``) prints the login at port 8123, not 8000."""
    env = process_env(WEB_PORT="8123", VAR_DIR=str(tmp_path))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PUBLIC_BASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        manage_py("demo_load"), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Demo login: http://127.0.0.1:8123/  user admin  password " in done.stdout


def test_the_login_defaults_to_port_8000_and_prefers_the_public_url(demo_var, settings):
    settings.WEB_PORT = 8000
    settings.PUBLIC_BASE_URL = ""
    assert "Demo login: http://127.0.0.1:8000/  user admin" in load_demo()
    settings.PUBLIC_BASE_URL = "https://cp.example.com"
    assert "Demo login: https://cp.example.com/  user admin" in load_demo()


def test_a_web_port_out_of_range_stops_start_up_naming_it(tmp_path):
    done = subprocess.run(
        manage_py("check"),
        env=process_env(WEB_PORT="70000", VAR_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "WEB_PORT=70000 must be 1 to 65535" in done.stderr
