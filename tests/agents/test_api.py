"""REST API of the agent registry: RBAC on every endpoint, versions over HTTP, errors keyed by
field path, secrets never returned, token scopes, cursor pagination, filters."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from agents.models import Agent, AgentActivation, AgentVersion, ModelEndpoint, Tool
from agents.selectors import version_snapshot
from agents.services import (
    agent_create,
    agent_version_create,
    mcp_server_create,
    model_endpoint_create,
)
from controlplane.models import Role
from controlplane.secrets import decrypt_secret
from controlplane.services import api_token_create
from governance.models import AuditEvent
from tests.agents.conftest import OBJECT_SCHEMA
from tests.agents.mcp_fixture_server import RunningMCPServer, build_server
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db

API = "/api/v1/projects/acme"
SECRET = "sk-test-SECRET123"
_numbers = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_numbers)}"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def agent(project, config, admin_user):
    return agent_create(project=project, slug="triage", config=config, actor=admin_user)


@pytest.fixture
def mcp_server(project):
    return mcp_server_create(
        project=project, name="docs", transport="streamable_http", url="http://127.0.0.1:9/mcp"
    )


def active_number(slug: str = "triage") -> int:
    return Agent.objects.select_related("active_version").get(slug=slug).active_version.number


# --- RBAC: every endpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "model-endpoints/",
        "model-endpoints/scripted/",
        "mcp-servers/",
        "mcp-servers/docs/",
        "tools/",
        "tools/payments.send/",
        "agents/",
        "agents/triage/",
        "agents/triage/versions/",
        "agents/triage/versions/1/",
        "agents/triage/diff/?from=1&to=1",
        "agents/triage/active-at/?at=2030-01-01T00:00:00Z",
    ],
)
def test_reads_need_viewer(project, agent, mcp_server, path):
    check_rbac(method="get", url=f"{API}/{path}", project=project, min_role=Role.VIEWER)


def test_model_endpoint_create_rbac(project):
    check_rbac(
        method="post",
        url=f"{API}/model-endpoints/",
        data=lambda: {"name": unique("ep"), "kind": "scripted", "default_model": "s-1"},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="model_endpoint.created",
    )


def test_model_endpoint_update_rbac(project, endpoint):
    check_rbac(
        method="patch",
        url=f"{API}/model-endpoints/scripted/",
        data={"default_model": "scripted-2"},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="model_endpoint.updated",
    )


def test_model_endpoint_test_rbac(project, endpoint):
    check_rbac(
        method="post",
        url=f"{API}/model-endpoints/scripted/test/",
        project=project,
        min_role=Role.OPERATOR,
        audit_action="model_endpoint.tested",
    )


def test_mcp_server_create_rbac(project):
    check_rbac(
        method="post",
        url=f"{API}/mcp-servers/",
        data=lambda: {"name": unique("srv"), "transport": "stdio", "command": ["uvx", "srv"]},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="mcp_server.created",
    )


def test_mcp_server_update_rbac(project, mcp_server):
    check_rbac(
        method="patch",
        url=f"{API}/mcp-servers/docs/",
        data={"url": "http://127.0.0.1:10/mcp"},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="mcp_server.updated",
    )


def test_mcp_server_sync_rbac(project, mcp_server):
    with RunningMCPServer(build_server()) as running:
        mcp_server.url = running.url
        mcp_server.save()
        check_rbac(
            method="post",
            url=f"{API}/mcp-servers/docs/sync/",
            project=project,
            min_role=Role.OPERATOR,
            audit_action="mcp_server.synced",
        )


def test_tool_create_rbac(project):
    check_rbac(
        method="post",
        url=f"{API}/tools/",
        data=lambda: {
            "name": unique("notes.add"),
            "kind": "builtin",
            "builtin_name": "echo",
            "input_schema": OBJECT_SCHEMA,
        },
        project=project,
        min_role=Role.OPERATOR,
        audit_action="tool.created",
    )


def test_tool_update_rbac(project, tools):
    check_rbac(
        method="patch",
        url=f"{API}/tools/payments.send/",
        data={"description": "Send money."},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="tool.updated",
    )


def test_agent_create_rbac(project, config):
    check_rbac(
        method="post",
        url=f"{API}/agents/",
        data=lambda: {"slug": unique("bot"), "config": config},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="agent.created",
    )


def test_agent_update_rbac(project, agent):
    check_rbac(
        method="patch",
        url=f"{API}/agents/triage/",
        data={"description": "Sorts tickets."},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="agent.updated",
    )


def test_version_create_rbac(project, agent):
    check_rbac(
        method="post",
        url=f"{API}/agents/triage/versions/",
        data={"changes": {"temperature": 0.5}, "change_note": "warmer"},
        project=project,
        min_role=Role.OPERATOR,
        audit_action="agent.version.created",
    )


def test_version_activate_rbac(project, agent, admin_user):
    # Inactive versions made beforehand (a URL callable must not write audited rows):
    # each successful request activates a different one.
    numbers = iter(
        [
            agent_version_create(
                agent=agent, changes={"temperature": 0.1 * n}, actor=admin_user, activate=False
            ).number
            for n in range(1, 7)
        ]
    )
    check_rbac(
        method="post",
        url=lambda: f"{API}/agents/triage/versions/{next(numbers)}/activate/",
        project=project,
        min_role=Role.OPERATOR,
        audit_action="agent.version.activated",
    )


# --- Agents and versions over HTTP ----------------------------------------------------------


def test_agent_lifecycle_create_change_diff_rollback_active_at(admin_client_api, config):
    response = admin_client_api.post(
        f"{API}/agents/",
        {"slug": "triage", "description": "Sorts tickets.", "config": config},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["active_version"] == 1
    assert body["owner"] == "alice"
    assert body["config"]["temperature"] == 0.2
    assert [g["tool"] for g in body["config"]["grants"]] == ["echo", "payments.send"]

    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"changes": {"temperature": 0.9}, "change_note": "warmer"},
        format="json",
    )
    assert response.status_code == 201, response.content
    v2 = response.json()
    assert v2["number"] == 2 and v2["is_active"] is True
    assert v2["created_by"] == "alice" and v2["change_note"] == "warmer"
    assert v2["config"]["temperature"] == 0.9 and len(v2["config"]["grants"]) == 2
    assert active_number() == 2

    diff = admin_client_api.get(f"{API}/agents/triage/diff/", {"from": 1, "to": 2}).json()
    assert diff == {
        "from": 1,
        "to": 2,
        "changes": [{"field": "temperature", "before": 0.2, "after": 0.9}],
    }

    response = admin_client_api.post(f"{API}/agents/triage/versions/1/activate/")
    assert response.status_code == 200, response.content
    assert response.json()["active_version"] == 1
    assert active_number() == 1
    versions = admin_client_api.get(f"{API}/agents/triage/versions/").json()["results"]
    assert [(v["number"], v["is_active"]) for v in versions] == [(2, False), (1, True)]

    t1, t2, t3 = AgentActivation.objects.order_by("activated_at").values_list(
        "activated_at", flat=True
    )

    def active_at(moment):
        response = admin_client_api.get(
            f"{API}/agents/triage/active-at/", {"at": moment.isoformat()}
        )
        assert response.status_code == 200, response.content
        version = response.json()["version"]
        return version and version["number"]

    assert active_at(t1 - timedelta(seconds=1)) is None
    assert active_at(t1) == 1
    assert active_at(t2 - timedelta(microseconds=1)) == 1
    assert active_at(t2) == 2
    assert active_at(t3 - timedelta(microseconds=1)) == 2
    assert active_at(t3 + timedelta(days=1)) == 1


def test_version_with_full_config_and_without_activation(admin_client_api, agent, config):
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"config": {**config, "instructions": "Draft."}, "activate": False},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["number"] == 2 and response.json()["is_active"] is False
    assert response.json()["config"]["instructions"] == "Draft."
    assert active_number() == 1
    retrieved = admin_client_api.get(f"{API}/agents/triage/versions/2/").json()
    assert retrieved["config"] == response.json()["config"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_versions_cannot_be_changed_or_deleted_over_the_api(admin_client_api, agent, method):
    version = agent.active_version
    before = version_snapshot(version)
    response = getattr(admin_client_api, method)(
        f"{API}/agents/triage/versions/1/", {"change_note": "edited"}, format="json"
    )
    assert response.status_code == 405
    version = AgentVersion.objects.get(pk=version.pk)
    assert version_snapshot(version) == before and version.change_note == "created"
    assert AgentVersion.objects.filter(agent=agent).count() == 1


def test_agent_put_and_delete_are_not_offered(admin_client_api, agent):
    assert admin_client_api.put(f"{API}/agents/triage/", {}, format="json").status_code == 405
    assert admin_client_api.delete(f"{API}/agents/triage/").status_code == 405
    assert Agent.objects.filter(slug="triage").exists()


def test_unknown_agent_or_version_is_404(admin_client_api, agent):
    assert admin_client_api.get(f"{API}/agents/nobody/versions/").status_code == 404
    assert admin_client_api.get(f"{API}/agents/triage/versions/9/").status_code == 404
    assert admin_client_api.post(f"{API}/agents/triage/versions/9/activate/").status_code == 404


# --- Errors keyed by field path -------------------------------------------------------------


def test_cel_syntax_error_names_the_grant_rules_and_keeps_the_active_version(
    admin_client_api, agent, config
):
    bad = {**config}
    bad["grants"] = [{"tool": "echo", "rules": [{"when": "args.amount >", "then": "deny"}]}]
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/", {"config": bad}, format="json"
    )
    assert response.status_code == 400
    assert "config.grants.0.rules" in response.json(), response.json()
    assert active_number() == 1
    assert AgentVersion.objects.filter(agent=agent).count() == 1


def test_out_of_range_temperature_names_config_temperature(admin_client_api, agent, config):
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"config": {**config, "temperature": 5}},
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()) == ["config.temperature"]
    assert active_number() == 1


def test_bad_change_names_the_changes_field(admin_client_api, agent):
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"changes": {"temperature": 5, "colour": "blue"}},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()) == {"changes.temperature", "changes.colour"}
    assert active_number() == 1


def test_unknown_tool_in_a_grant_names_its_path(admin_client_api, agent, config):
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"changes": {"grants": [{"tool": "echo"}, {"tool": "nope"}]}},
        format="json",
    )
    assert response.status_code == 400
    assert "changes.grants.1.tool" in response.json()


def test_config_and_changes_together_are_refused(admin_client_api, agent, config):
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/",
        {"config": config, "changes": {"temperature": 0.3}},
        format="json",
    )
    assert response.status_code == 400 and "config" in response.json()
    assert active_number() == 1


def test_bad_agent_config_creates_nothing(admin_client_api, config):
    response = admin_client_api.post(
        f"{API}/agents/",
        {"slug": "triage", "config": {**config, "model_endpoint": "missing"}},
        format="json",
    )
    assert response.status_code == 400
    assert "config.model_endpoint" in response.json()
    assert not Agent.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="agent.").exists()


def test_agent_config_must_be_an_object(admin_client_api, endpoint):
    response = admin_client_api.post(
        f"{API}/agents/", {"slug": "triage", "config": "model: x"}, format="json"
    )
    assert response.status_code == 400 and "config" in response.json()


def test_bad_slug_is_a_400(admin_client_api, config):
    response = admin_client_api.post(
        f"{API}/agents/", {"slug": "Not A Slug", "config": config}, format="json"
    )
    assert response.status_code == 400 and "slug" in response.json()


def test_duplicate_names_are_a_400(admin_client_api, agent, config):
    response = admin_client_api.post(
        f"{API}/agents/", {"slug": "triage", "config": config}, format="json"
    )
    assert response.status_code == 400
    response = admin_client_api.post(
        f"{API}/model-endpoints/", {"name": "scripted", "kind": "scripted"}, format="json"
    )
    assert response.status_code == 400
    assert Agent.objects.count() == 1 and ModelEndpoint.objects.count() == 1


def test_invalid_json_schema_on_a_tool_names_input_schema(admin_client_api, project):
    response = admin_client_api.post(
        f"{API}/tools/",
        {
            "name": "broken",
            "kind": "builtin",
            "builtin_name": "echo",
            "input_schema": {"type": "object", "properties": {"a": {"type": "nope"}}},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "input_schema" in response.json()
    assert not Tool.objects.filter(name="broken").exists()


def test_diff_names_the_missing_or_unknown_parameter(admin_client_api, agent):
    url = f"{API}/agents/triage/diff/"
    assert admin_client_api.get(url, {"to": 1}).json() == {
        "from": ["This query parameter is required."]
    }
    response = admin_client_api.get(url, {"from": 1, "to": 7})
    assert response.status_code == 400 and list(response.json()) == ["to"]
    response = admin_client_api.get(url, {"from": "one", "to": 1})
    assert response.status_code == 400 and list(response.json()) == ["from"]


def test_active_at_needs_a_valid_time(admin_client_api, agent):
    url = f"{API}/agents/triage/active-at/"
    assert admin_client_api.get(url).status_code == 400
    response = admin_client_api.get(url, {"at": "yesterday"})
    assert response.status_code == 400 and "at" in response.json()


# --- Tools ----------------------------------------------------------------------------------


def test_tool_names_with_dots_work_as_lookups(admin_client_api, tools):
    response = admin_client_api.get(f"{API}/tools/payments.send/")
    assert response.status_code == 200
    assert response.json()["risk"] == "financial"


def test_tool_name_cannot_change(admin_client_api, tools):
    response = admin_client_api.patch(f"{API}/tools/echo/", {"name": "echo2"}, format="json")
    assert response.status_code == 400 and "name" in response.json()


def test_mcp_tool_refers_to_its_server_by_name(admin_client_api, mcp_server):
    response = admin_client_api.post(
        f"{API}/tools/",
        {
            "name": "docs.search",
            "kind": "mcp",
            "mcp_server": "docs",
            "mcp_tool_name": "search",
            "input_schema": {"type": "object"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["mcp_server"] == "docs"
    assert Tool.objects.get(name="docs.search").mcp_server == mcp_server


def test_mcp_server_of_another_project_is_not_found(admin_client_api, project):
    from tests.factories import ProjectFactory

    mcp_server_create(
        project=ProjectFactory(slug="other"), name="elsewhere", transport="stdio", command=["x"]
    )
    response = admin_client_api.post(
        f"{API}/tools/",
        {"name": "t", "kind": "mcp", "mcp_server": "elsewhere", "mcp_tool_name": "t"},
        format="json",
    )
    assert response.status_code == 400 and "mcp_server" in response.json()


def test_tool_filters(admin_client_api, tools):
    Tool.objects.filter(name="echo").update(description="Repeat text back")

    def names(**params):
        response = admin_client_api.get(f"{API}/tools/", params)
        assert response.status_code == 200
        return [t["name"] for t in response.json()["results"]]

    assert names() == ["echo", "payments.send"]
    assert names(risk="financial") == ["payments.send"]
    assert names(kind="builtin") == ["echo", "payments.send"]
    assert names(search="repeat") == ["echo"]
    assert names(search="payments") == ["payments.send"]
    assert names(removed="false") == ["echo", "payments.send"]
    assert names(removed="true") == []


def test_agent_filters(admin_client_api, agent, config, project, admin_user):
    agent_create(
        project=project,
        slug="writer",
        description="Drafts replies",
        config={**config, "grants": [{"tool": "echo"}]},
        actor=admin_user,
    )

    def slugs(**params):
        response = admin_client_api.get(f"{API}/agents/", params)
        assert response.status_code == 200
        return [a["slug"] for a in response.json()["results"]]

    assert slugs() == ["triage", "writer"]
    assert slugs(search="draft") == ["writer"]
    assert slugs(tool="payments.send") == ["triage"]
    assert slugs(tool="echo") == ["triage", "writer"]
    assert slugs(model_endpoint="scripted") == ["triage", "writer"]
    assert slugs(model_endpoint="other") == []


# --- Connectors through the API -------------------------------------------------------------


def test_endpoint_test_returns_the_result(admin_client_api, endpoint):
    response = admin_client_api.post(f"{API}/model-endpoints/scripted/test/")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "detail": "Scripted endpoint: no network.",
        "models": ["scripted-1"],
    }


def test_sync_returns_the_result(admin_client_api, mcp_server):
    with RunningMCPServer(build_server()) as running:
        mcp_server.url = running.url
        mcp_server.save()
        response = admin_client_api.post(f"{API}/mcp-servers/docs/sync/")
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == "" and "add" in body["created"]
    assert set(body) == {"created", "updated", "removed", "unchanged", "error"}
    assert admin_client_api.get(f"{API}/mcp-servers/docs/").json()["last_synced_at"]


def test_failed_sync_answers_with_the_error(admin_client_api, mcp_server):
    response = admin_client_api.post(f"{API}/mcp-servers/docs/sync/")
    assert response.status_code == 200
    assert response.json()["error"] and response.json()["created"] == []


# --- Secrets --------------------------------------------------------------------------------


def test_api_key_is_never_returned_logged_or_stored_in_clear(admin_client_api, project):
    bodies = []
    response = admin_client_api.post(
        f"{API}/model-endpoints/",
        {"name": "openai", "kind": "openai", "api_key": SECRET},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["has_stored_key"] is True
    assert "api_key" not in response.json()
    bodies.append(response.content)
    bodies.append(admin_client_api.get(f"{API}/model-endpoints/").content)
    bodies.append(admin_client_api.get(f"{API}/model-endpoints/openai/").content)
    response = admin_client_api.patch(
        f"{API}/model-endpoints/openai/", {"default_model": "gpt-4o-mini"}, format="json"
    )
    assert response.status_code == 200 and response.json()["has_stored_key"] is True
    bodies.append(response.content)
    response = admin_client_api.put(
        f"{API}/model-endpoints/openai/",
        {"name": "openai", "kind": "openai", "api_key": SECRET + "-2"},
        format="json",
    )
    assert response.status_code == 200, response.content
    bodies.append(response.content)
    for body in bodies:
        assert SECRET.encode() not in body

    audit = AuditEvent.objects.filter(object_type="agents.modelendpoint")
    assert audit.count() == 3
    for event in audit:
        assert SECRET not in str(event.data) and SECRET not in event.object_repr

    stored = ModelEndpoint.objects.get(name="openai").credential_encrypted
    assert stored and SECRET not in stored
    assert decrypt_secret(stored) == SECRET + "-2"


def test_clear_api_key_removes_the_stored_key(admin_client_api, project):
    model_endpoint_create(project=project, name="anthropic", kind="anthropic", api_key=SECRET)
    response = admin_client_api.patch(
        f"{API}/model-endpoints/anthropic/", {"clear_api_key": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["has_stored_key"] is False
    assert ModelEndpoint.objects.get(name="anthropic").credential_encrypted == ""


# --- Tokens and pagination ------------------------------------------------------------------


def test_read_only_token_can_list_but_not_write(project, admin_user, agent, config):
    _, raw = api_token_create(project=project, user=admin_user, name="ro", scopes=["read"])
    client = bearer(raw)
    assert client.get(f"{API}/agents/").status_code == 200
    assert client.get(f"{API}/tools/").status_code == 200
    response = client.post(f"{API}/agents/", {"slug": "new", "config": config}, format="json")
    assert response.status_code == 403
    response = client.post(
        f"{API}/agents/triage/versions/", {"changes": {"temperature": 0.4}}, format="json"
    )
    assert response.status_code == 403
    assert client.post(f"{API}/model-endpoints/scripted/test/").status_code == 403
    assert AgentVersion.objects.filter(agent=agent).count() == 1
    assert not Agent.objects.filter(slug="new").exists()


def test_write_token_creates_agents_as_its_user(project, admin_user, config):
    _, raw = api_token_create(project=project, user=admin_user, name="rw", scopes=["read", "write"])
    response = bearer(raw).post(f"{API}/agents/", {"slug": "bot", "config": config}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["owner"] == admin_user.username


def test_agent_list_uses_cursor_pagination(admin_client_api, project, config, admin_user):
    slugs = [f"agent-{n}" for n in range(5)]
    for slug in slugs:
        agent_create(project=project, slug=slug, config=config, actor=admin_user)
    seen = []
    url = f"{API}/agents/?page_size=2"
    pages = 0
    while url:
        response = admin_client_api.get(url)
        assert response.status_code == 200
        body = response.json()
        seen += [a["slug"] for a in body["results"]]
        url = body["next"]
        assert url is None or "cursor=" in url
        pages += 1
    assert seen == slugs and pages == 3
