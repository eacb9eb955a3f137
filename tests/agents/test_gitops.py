"""Policy-as-code: export -> apply is a no-op, changes apply as versions/updates, invalid files change nothing."""

from __future__ import annotations

import copy
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.gitops import (
    AGENT,
    CREATE,
    NOT_IN_FILE,
    TOOL,
    UNCHANGED,
    UPDATE,
    GitopsError,
    RegistryDocument,
    document_from_yaml,
    document_to_yaml,
    plan_lines,
    registry_apply,
    registry_export,
    registry_plan,
)
from agents.models import Agent, AgentVersion, MCPServer, ModelEndpoint, Tool
from agents.services import agent_create, mcp_server_create, model_endpoint_create, tool_create
from governance.models import AuditEvent
from tests.agents.conftest import mcp_tool
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry(project, config, admin_user, tools):
    """Three agents (billing delegates to triage; watcher holds a grant of a tool since
    removed from its MCP server), an HTTP tool, an MCP server with a synced tool."""
    server = mcp_server_create(
        project=project, name="crm", transport="streamable_http", url="http://crm.internal/mcp"
    )
    mcp_tool(
        project,
        server,
        "crm.lookup",
        "lookup",
        description="Find a customer.",
        input_schema={"type": "object", "properties": {"email": {"type": "string"}}},
    )
    gone = mcp_tool(project, server, "crm.legacy", "legacy")
    tool_create(
        project=project,
        name="refunds.create",
        kind="http",
        description="Refund an order.",
        input_schema={"type": "object", "properties": {"order": {"type": "string"}}},
        http_url="https://pay.internal/refunds",
        http_headers={"Authorization": {"secret_env": "PAY_TOKEN"}},
        risk="financial",
        idempotent=True,
        cost_per_call_usd="0.010000",
    )
    agent_create(project=project, slug="triage", config=config, actor=admin_user)
    billing = copy.deepcopy(config)
    billing["instructions"] = "You handle billing.\nBe precise.\n"
    billing["delegates"] = ["triage"]
    billing["grants"] = [{"tool": "refunds.create", "effect": "require_approval"}]
    agent_create(
        project=project, slug="billing", description="Billing desk", config=billing, actor=None
    )
    watcher = {**config, "grants": [{"tool": "crm.legacy"}]}
    agent_create(project=project, slug="watcher", config=watcher, actor=admin_user)
    # The server dropped this tool after watcher was granted it: kept for history.
    Tool.objects.filter(pk=gone.pk).update(removed_at=timezone.now())
    return project


def counts() -> dict[str, int]:
    return {
        "versions": AgentVersion.objects.count(),
        "agents": Agent.objects.count(),
        "tools": Tool.objects.count(),
        "endpoints": ModelEndpoint.objects.count(),
        "servers": MCPServer.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


def exported(project) -> dict:
    """The export as it comes back from a YAML file."""
    return document_from_yaml(document_to_yaml(registry_export(project=project)))


def agent_doc(document: dict, slug: str) -> dict:
    return next(a for a in document["agents"] if a["slug"] == slug)


def tool_doc(document: dict, name: str) -> dict:
    return next(t for t in document["tools"] if t["name"] == name)


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- Export ---------------------------------------------------------------------------------


def test_export_is_a_valid_stable_document(registry):
    document = registry_export(project=registry)
    RegistryDocument.model_validate(document)
    assert list(document) == [
        "version",
        "project",
        "model_endpoints",
        "mcp_servers",
        "tools",
        "agents",
    ]
    assert [t["name"] for t in document["tools"]] == [
        "crm.lookup",
        "echo",
        "payments.send",
        "refunds.create",
    ]  # the tool removed from its MCP server is left out; the synced one is in
    assert tool_doc(document, "crm.lookup")["mcp_server"] == "crm"
    assert tool_doc(document, "refunds.create")["cost_per_call_usd"] == "0.01"
    assert [a["slug"] for a in document["agents"]] == ["billing", "triage", "watcher"]
    assert agent_doc(document, "billing")["config"]["delegates"] == ["triage"]
    text = document_to_yaml(document)
    assert text == document_to_yaml(registry_export(project=registry))
    assert "instructions: |" in text  # multi-line text as a literal block
    assert yaml.safe_load(text) == document


def test_export_then_apply_changes_nothing(registry):
    before = counts()
    plan = registry_apply(project=registry, document=exported(registry), dry_run=False)
    assert counts() == before
    assert not plan.has_changes
    assert {c.action for c in plan.changes} == {UNCHANGED}
    assert plan.get(AGENT, "triage").action == UNCHANGED
    assert len(plan.changes) == 9  # 1 endpoint, 1 MCP server, 4 tools, 3 agents
    assert plan_lines(plan)[-1].startswith("0 to create, 0 to update, 9 unchanged")


def test_export_and_apply_commands_round_trip(registry, tmp_path):
    path = tmp_path / "acme.yaml"
    out, _ = run("agents_export", "--project", "acme", "--output", str(path))
    assert "Wrote" in out and "3 agents" in out
    stdout_text, _ = run("agents_export", "--project", "acme")
    assert stdout_text == path.read_text()
    before = counts()
    out, err = run("agents_apply", str(path), "--project", "acme")
    assert counts() == before
    assert "= unchanged agent triage" in out
    assert "= unchanged tool crm.lookup" in out
    assert "already matches" in out
    assert err == ""


# --- Apply changes --------------------------------------------------------------------------


def test_applying_a_changed_document_makes_only_the_needed_changes(registry):
    document = exported(registry)
    agent_doc(document, "triage")["config"]["temperature"] = 0.7
    tool_doc(document, "echo")["description"] = "Say it back."
    document["tools"].append(
        {
            "name": "payments.send.v2",
            "kind": "http",
            "input_schema": {"type": "object"},
            "http_url": "https://pay.internal/send",
            "http_headers": {"Authorization": {"secret_env": "PAY_TOKEN"}},
            "risk": "financial",
            "cost_per_call_usd": "0.02",
        }
    )
    audit_before = AuditEvent.objects.count()

    plan = registry_apply(project=registry, document=document, dry_run=False)

    triage = Agent.objects.get(slug="triage")
    assert triage.versions.count() == 2 and triage.active_version.number == 2
    assert triage.active_version.temperature == 0.7
    assert triage.active_version.change_note.startswith("applied from a registry file")
    billing = Agent.objects.get(slug="billing")
    assert billing.versions.count() == 1 and billing.active_version.number == 1
    assert Tool.objects.get(name="echo").description == "Say it back."
    new_tool = Tool.objects.get(name="payments.send.v2")
    assert str(new_tool.cost_per_call_usd.normalize()) == "0.02"
    actions = list(
        AuditEvent.objects.filter(sequence__gt=audit_before)
        .order_by("sequence")
        .values_list("action", flat=True)
    )
    assert actions == [
        "tool.updated",
        "tool.created",
        "agent.version.created",
        "agent.version.activated",
    ]
    triage_change = plan.get(AGENT, "triage")
    assert triage_change.action == UPDATE and triage_change.new_version == 2
    assert triage_change.fields == [{"field": "temperature", "before": 0.2, "after": 0.7}]
    assert plan.get(TOOL, "payments.send.v2").action == CREATE
    assert plan.get(AGENT, "billing").action == UNCHANGED
    lines = plan_lines(plan)
    assert "~ agent triage: new version 2" in lines
    assert "    temperature: 0.2 -> 0.7" in lines
    assert "+ tool payments.send.v2" in lines
    assert "~ tool echo" in lines
    assert '    description: "" -> "Say it back."' in lines
    # Applying the same document again is now a no-op.
    before = counts()
    assert not registry_apply(project=registry, document=document, dry_run=False).has_changes
    assert counts() == before


def test_grant_changes_show_per_tool_and_field(registry):
    document = exported(registry)
    config = agent_doc(document, "triage")["config"]
    config["grants"] = [g for g in config["grants"] if g["tool"] != "echo"]
    config["grants"].append({"tool": "refunds.create", "effect": "deny"})
    payments = next(g for g in config["grants"] if g["tool"] == "payments.send")
    payments["max_calls_per_run"] = 5
    config["instructions"] = "You triage support tickets.\nEscalate refunds."
    plan = registry_plan(project=registry, document=document)
    assert plan.errors == []
    lines = plan_lines(plan)
    assert "~ agent triage: new version 2" in lines
    assert any(line.startswith("    grants.echo: removed") for line in lines)
    assert any(line.startswith("    grants.refunds.create: added {") for line in lines)
    assert "    grants.payments.send.max_calls_per_run: 3 -> 5" in lines
    assert "      +Escalate refunds." in lines


def test_new_agents_are_created_after_the_new_agents_they_delegate_to(registry, admin_user):
    document = exported(registry)
    base = agent_doc(document, "triage")["config"]
    document["agents"].append(
        {"slug": "a-front", "config": {**base, "delegates": ["z-back", "triage"]}}
    )
    document["agents"].append({"slug": "z-back", "config": {**base, "delegates": []}})
    registry_apply(project=registry, document=document, dry_run=False, actor=admin_user)
    front = Agent.objects.get(slug="a-front")
    assert sorted(front.active_version.delegates.values_list("slug", flat=True)) == [
        "triage",
        "z-back",
    ]
    assert front.owner == admin_user
    assert front.active_version.created_by == admin_user


def test_a_cycle_between_new_agents_is_an_error(registry):
    document = exported(registry)
    base = agent_doc(document, "triage")["config"]
    document["agents"].append({"slug": "ping", "config": {**base, "delegates": ["pong"]}})
    document["agents"].append({"slug": "pong", "config": {**base, "delegates": ["ping"]}})
    with pytest.raises(GitopsError) as info:
        registry_apply(project=registry, document=document, dry_run=False)
    assert any("cycle (ping -> pong -> ping)" in message for _, message in info.value.errors)


def test_objects_missing_from_the_file_are_kept(registry):
    before = counts()
    plan = registry_apply(
        project=registry, document={"version": 1, "project": "acme"}, dry_run=False
    )
    assert counts() == before
    assert {c.action for c in plan.changes} == {NOT_IN_FILE}
    assert plan.get(AGENT, "triage").action == NOT_IN_FILE
    assert "? not in file (kept) agent triage" in plan_lines(plan)


def test_a_new_mcp_server_and_its_tools_apply_together(project, endpoint):
    document = {
        "version": 1,
        "project": "acme",
        "mcp_servers": [{"name": "docs", "transport": "stdio", "command": ["uvx", "docs-mcp"]}],
        "tools": [
            {
                "name": "docs.search",
                "kind": "mcp",
                "mcp_server": "docs",
                "mcp_tool_name": "search",
                "input_schema": {"type": "object"},
            }
        ],
    }
    assert registry_plan(project=project, document=document).errors == []
    registry_apply(project=project, document=document, dry_run=False)
    assert Tool.objects.get(name="docs.search").mcp_server.name == "docs"


def test_only_a_project_admin_may_apply_stdio_servers(project, admin_user):
    operator = UserFactory(username="olga")
    MembershipFactory(user=operator, project=project, role="operator")
    document = {
        "version": 1,
        "project": "acme",
        "mcp_servers": [
            {"name": "docs", "transport": "stdio", "command": ["uvx", "docs-mcp"]},
            {"name": "web", "transport": "streamable_http", "url": "https://mcp.example.com/mcp"},
        ],
    }
    plan = registry_plan(project=project, document=document, actor=operator)
    assert plan.errors == [
        (
            "mcp_servers[0].transport",
            "A stdio MCP server runs a command on the control plane's host: creating or "
            "changing one needs the admin role.",
        )
    ]
    assert registry_plan(project=project, document=document, actor=admin_user).errors == []
    registry_apply(project=project, document=document, dry_run=False, actor=admin_user)

    # Changing an existing stdio server into an HTTP one is a change to it, too.
    document["mcp_servers"][0] = {**document["mcp_servers"][1], "name": "docs"}
    errors = registry_plan(project=project, document=document, actor=operator).errors
    assert [path for path, _ in errors] == ["mcp_servers[0].transport"]
    # Unchanged, it is no concern of the operator's.
    assert registry_plan(project=project, document=exported(project), actor=operator).errors == []


# --- Invalid documents ----------------------------------------------------------------------


def invalid_document(project) -> dict:
    document = exported(project)
    triage = agent_doc(document, "triage")["config"]
    triage["grants"][1]["rules"][0]["when"] = "args.amount >"
    billing = agent_doc(document, "billing")["config"]
    billing["grants"].append({"tool": "wire.transfer"})
    # A valid change in the same file must not be applied either.
    tool_doc(document, "echo")["description"] = "changed"
    return document


def test_an_invalid_document_reports_every_error_and_changes_nothing(registry):
    document = invalid_document(registry)
    before = counts()
    with pytest.raises(GitopsError) as info:
        registry_apply(project=registry, document=document, dry_run=False)
    errors = dict(info.value.errors)
    triage_index = next(i for i, a in enumerate(document["agents"]) if a["slug"] == "triage")
    billing_index = next(i for i, a in enumerate(document["agents"]) if a["slug"] == "billing")
    cel_path = f"agents[{triage_index}].config.grants[1].rules[0].when"
    assert errors[cel_path].startswith("CEL syntax error at line 1, column")
    tool_path = f"agents[{billing_index}].config.grants[1].tool"
    assert errors[tool_path] == "No tool 'wire.transfer' in this file or project."
    assert counts() == before
    assert Tool.objects.get(name="echo").description != "changed"


def test_the_apply_command_prints_every_error_and_exits_non_zero(registry, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(document_to_yaml(invalid_document(registry)))
    before = counts()
    err = StringIO()
    with pytest.raises(CommandError, match="2 error"):
        call_command("agents_apply", str(path), "--project", "acme", stdout=StringIO(), stderr=err)
    assert ".config.grants[1].rules[0].when: CEL syntax error" in err.getvalue()
    assert ".config.grants[1].tool: No tool 'wire.transfer'" in err.getvalue()
    assert counts() == before


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs are not permitted"),
        (lambda d: d.update(version=2), "version", "Input should be 1"),
        (lambda d: d.update(project="other"), "project", "for project 'other', not 'acme'"),
        (lambda d: d.update(tools="echo"), "tools", "Input should be a valid list"),
        (
            lambda d: tool_doc(d, "echo").update(input_schema={"type": "array"}),
            "tools[1].input_schema",
            "object schema",
        ),
        (
            lambda d: tool_doc(d, "echo").update(input_schema={"type": 5}),
            "tools[1].input_schema",
            "Invalid JSON Schema",
        ),
        (lambda d: tool_doc(d, "echo").update(risk="huge"), "tools[1].risk", "not a valid choice"),
        (
            lambda d: tool_doc(d, "echo").update(cost_per_call_usd="lots"),
            "tools[1].cost_per_call_usd",
            "valid decimal",
        ),
        (
            lambda d: tool_doc(d, "crm.lookup").update(mcp_server="nowhere"),
            "tools[0].mcp_server",
            "No MCP server 'nowhere'",
        ),
        (
            lambda d: d["tools"].append(dict(tool_doc(d, "echo"))),
            "tools[4].name",
            "'echo' is already defined at tools[1]",
        ),
        (
            lambda d: d["tools"].append({**tool_doc(d, "echo"), "name": "crm.legacy"}),
            "tools[4].name",
            "was removed from its MCP server",
        ),
        (
            lambda d: d["model_endpoints"][0].update(credential_env_var="lower"),
            "model_endpoints[0].credential_env_var",
            "environment variable name",
        ),
        (
            lambda d: d["mcp_servers"][0].update(url=""),
            "mcp_servers[0].url",
            "needs a URL",
        ),
        (
            lambda d: d["model_endpoints"][0].update(
                price_overrides={"scripted-1": {"input_per_mtok": "0.5"}}
            ),
            "model_endpoints[0].price_overrides.scripted-1.output_per_mtok",
            "Field required",
        ),
        (
            lambda d: d["model_endpoints"][0].update(
                price_overrides={"scripted-1": {"input_per_mtok": "-1", "output_per_mtok": 1}}
            ),
            "model_endpoints[0].price_overrides.scripted-1.input_per_mtok",
            "greater than or equal to 0",
        ),
        (
            lambda d: agent_doc(d, "triage").update(slug="new"),
            "agents[1].slug",
            "reserved for a page address",
        ),
        (
            lambda d: d["tools"].append({**tool_doc(d, "echo"), "name": "mcp-servers"}),
            "tools[4].name",
            "reserved for a page address",
        ),
        (
            lambda d: agent_doc(d, "triage").update(slug="Triage!"),
            "agents[1].slug",
            "lowercase",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"].update(temperature=3),
            "agents[1].config.temperature",
            "less than or equal to 2",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"].update(model_endpoint="gone"),
            "agents[1].config.model_endpoint",
            "No model endpoint 'gone'",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"].update(delegates=["triage"]),
            "agents[1].config.delegates[0]",
            "cannot delegate to itself",
        ),
        (
            lambda d: agent_doc(d, "billing")["config"].update(delegates=["zed", "nobody"]),
            "agents[0].config.delegates[1]",
            "No agent 'nobody'",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"]["grants"][0].update(effect="maybe"),
            "agents[1].config.grants[0].effect",
            "Input should be",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"]["grants"][0].update(rate_limit_calls=5),
            "agents[1].config.grants[0].rate_limit_calls",
            "both the number of calls and the window",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"]["grants"][1]["rules"].append(
                {"when": "secret.x == 1", "then": "deny"}
            ),
            "agents[1].config.grants[1].rules[2].when",
            "Unknown variable(s) secret",
        ),
        (
            lambda d: agent_doc(d, "triage")["config"]["grants"].append({"tool": "crm.legacy"}),
            "agents[1].config.grants[2].tool",
            "removed from its MCP server",
        ),
        (
            # An unchanged active version may keep it; a new version may not.
            lambda d: agent_doc(d, "watcher")["config"].update(temperature=0.5),
            "agents[2].config.grants[0].tool",
            "removed from its MCP server",
        ),
    ],
)
def test_each_error_names_its_path(registry, change, path, message):
    document = exported(registry)
    change(document)
    plan = registry_plan(project=registry, document=document)
    matching = [m for p, m in plan.errors if p == path]
    assert matching, plan.errors
    assert any(message in m for m in matching), plan.errors


def test_bad_yaml_names_line_and_column(project, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nproject: acme\ntools:\n  - name: x\n   kind: http\n")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("agents_apply", str(path), "--project", "acme", stdout=StringIO(), stderr=err)
    assert "invalid YAML at line 5, column 4" in err.getvalue()


def test_duplicate_yaml_keys_are_refused(project):
    with pytest.raises(GitopsError) as info:
        document_from_yaml("version: 1\nproject: acme\nproject: other\n")
    assert "line 3, column 1: found duplicate key 'project'" in info.value.errors[0][1]


# --- Command options ------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_changes_nothing(registry, tmp_path):
    document = exported(registry)
    agent_doc(document, "billing")["config"]["max_output_tokens"] = 2048
    agent_doc(document, "billing")["description"] = "Billing and refunds"
    path = tmp_path / "acme.yaml"
    path.write_text(document_to_yaml(document))
    before = counts()
    out, _ = run("agents_apply", str(path), "--project", "acme", "--dry-run")
    assert counts() == before
    assert "~ agent billing: new version 2" in out
    assert '    description: "Billing desk" -> "Billing and refunds"' in out
    assert "    max_output_tokens: 512 -> 2048" in out
    assert "= unchanged agent triage" in out
    assert "Dry run: nothing was changed." in out


def test_apply_as_a_user_records_them(registry, tmp_path, admin_user):
    document = exported(registry)
    agent_doc(document, "triage")["config"]["temperature"] = 1.0
    path = tmp_path / "acme.yaml"
    path.write_text(document_to_yaml(document))
    run("agents_apply", str(path), "--project", "acme", "--user", "alice")
    version = Agent.objects.get(slug="triage").active_version
    assert version.created_by == admin_user
    event = AuditEvent.objects.filter(action="agent.version.created").last()
    assert (event.actor_kind, event.actor_name, event.actor_id) == ("user", "alice", admin_user.pk)


def test_apply_without_user_acts_as_the_system(registry, tmp_path):
    document = exported(registry)
    tool_doc(document, "echo")["description"] = "changed"
    path = tmp_path / "acme.yaml"
    path.write_text(document_to_yaml(document))
    audit_before = AuditEvent.objects.count()
    out, _ = run("agents_apply", str(path), "--project", "acme")
    event = AuditEvent.objects.filter(action="tool.updated").last()
    assert (event.actor_kind, event.actor_name) == ("system", "system:agents_apply")
    assert f"audit request id {event.request_id})" in out
    assert AuditEvent.objects.filter(request_id=event.request_id).count() == (
        AuditEvent.objects.count() - audit_before
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "nope"], "No project 'nope'"),
        (["--project", "acme", "--user", "ghost"], "No user 'ghost'"),
        (["--project", "acme", "--user", "viewer1"], "needs the operator role"),
    ],
)
def test_apply_command_refuses_unknown_project_and_users(project, tmp_path, args, message):
    MembershipFactory(user=UserFactory(username="viewer1"), project=project, role="viewer")
    path = tmp_path / "acme.yaml"
    path.write_text("version: 1\nproject: acme\n")
    with pytest.raises(CommandError, match=message):
        call_command("agents_apply", str(path), *args, stdout=StringIO(), stderr=StringIO())


def test_export_command_refuses_an_unknown_project(db):
    with pytest.raises(CommandError, match="No project 'nope'"):
        call_command("agents_export", "--project", "nope", stdout=StringIO())


# --- Secrets --------------------------------------------------------------------------------


def test_a_stored_key_is_never_exported_and_survives_apply(project):
    endpoint = model_endpoint_create(
        project=project,
        name="openai",
        kind="openai",
        default_model="gpt-4o-mini",
        genai_prices_provider="openai",
        price_overrides={"gpt-4o-mini": {"input_per_mtok": "0.150", "output_per_mtok": 0.6}},
        api_key="sk-live-very-secret-value",
    )
    ciphertext = endpoint.credential_encrypted
    out, _ = run("agents_export", "--project", "acme")
    assert "sk-live-very-secret-value" not in out
    assert ciphertext not in out and ciphertext[:20] not in out
    assert "credential_env_var" not in out
    document = document_from_yaml(out)
    assert document["model_endpoints"][0]["price_overrides"] == {
        "gpt-4o-mini": {"input_per_mtok": "0.15", "output_per_mtok": "0.6"}
    }
    before = counts()
    plan = registry_apply(project=project, document=document, dry_run=False)
    assert not plan.has_changes and counts() == before
    endpoint.refresh_from_db()
    assert endpoint.credential_encrypted == ciphertext
