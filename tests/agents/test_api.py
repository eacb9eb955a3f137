"""REST API of the agent registry: RBAC on every endpoint, versions over HTTP, errors keyed by
field path, secrets never returned, token scopes, cursor pagination, filters."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from agents.models import Agent, AgentActivation, AgentVersion, MCPServer, ModelEndpoint, Tool
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


@pytest.fixture
def stdio_server(project):
    return mcp_server_create(project=project, name="local", transport="stdio", command=["srv"])


def counts() -> dict[str, int]:
    models = (Agent, AgentVersion, ModelEndpoint, MCPServer, Tool, AuditEvent)
    return {model.__name__: model.objects.count() for model in models}


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


def _write(method, path, data, audit_action, *needs, min_role=Role.OPERATOR, id):
    """One write endpoint: ``data`` is a dict, or a callable taking the fixtures named in
    ``needs`` (called once per request, so each success makes a fresh object)."""
    return pytest.param(method, path, data, audit_action, needs, min_role, id=id)


HTTP_SERVER = {"transport": "streamable_http", "url": "http://127.0.0.1:9/mcp"}
STDIO_SERVER = {"transport": "stdio", "command": ["uvx", "srv"]}
BUILTIN_TOOL = {"kind": "builtin", "builtin_name": "echo", "input_schema": OBJECT_SCHEMA}

WRITES = [
    _write(
        "post",
        "model-endpoints/",
        lambda fx: {"name": unique("ep"), "kind": "scripted", "default_model": "s-1"},
        "model_endpoint.created",
        id="endpoint-create",
    ),
    _write(
        "patch",
        "model-endpoints/scripted/",
        {"default_model": "scripted-2"},
        "model_endpoint.updated",
        "endpoint",
        id="endpoint-update",
    ),
    _write(
        "post",
        "model-endpoints/scripted/test/",
        None,
        "model_endpoint.tested",
        "endpoint",
        id="endpoint-test",
    ),
    _write(
        "post",
        "mcp-servers/",
        lambda fx: {"name": unique("srv"), **HTTP_SERVER},
        "mcp_server.created",
        id="http-server-create",
    ),
    _write(
        "patch",
        "mcp-servers/docs/",
        {"url": "http://127.0.0.1:10/mcp"},
        "mcp_server.updated",
        "mcp_server",
        id="http-server-update",
    ),
    # A stdio server runs a command on the control plane's host: admins only.
    _write(
        "post",
        "mcp-servers/",
        lambda fx: {"name": unique("srv"), **STDIO_SERVER},
        "mcp_server.created",
        min_role=Role.ADMIN,
        id="stdio-server-create",
    ),
    _write(
        "patch",
        "mcp-servers/docs/",
        STDIO_SERVER,
        "mcp_server.updated",
        "mcp_server",
        min_role=Role.ADMIN,
        id="http-server-to-stdio",
    ),
    _write(
        "patch",
        "mcp-servers/local/",
        {"command": ["uvx", "other-srv"]},
        "mcp_server.updated",
        "stdio_server",
        min_role=Role.ADMIN,
        id="stdio-server-update",
    ),
    _write(
        "post",
        "tools/",
        lambda fx: {"name": unique("notes.add"), **BUILTIN_TOOL},
        "tool.created",
        id="tool-create",
    ),
    _write(
        "patch",
        "tools/payments.send/",
        {"description": "Send money."},
        "tool.updated",
        "tools",
        id="tool-update",
    ),
    _write(
        "post",
        "agents/",
        lambda fx: {"slug": unique("bot"), "config": fx["config"]},
        "agent.created",
        "config",
        id="agent-create",
    ),
    _write(
        "patch",
        "agents/triage/",
        {"description": "Sorts tickets."},
        "agent.updated",
        "agent",
        id="agent-update",
    ),
    _write(
        "post",
        "agents/triage/versions/",
        {"changes": {"temperature": 0.5}, "change_note": "warmer"},
        "agent.version.created",
        "agent",
        id="version-create",
    ),
]


@pytest.mark.parametrize(("method", "path", "data", "audit_action", "needs", "min_role"), WRITES)
def test_writes_need_their_role(
    request, project, method, path, data, audit_action, needs, min_role
):
    fixtures = {name: request.getfixturevalue(name) for name in needs}
    check_rbac(
        method=method,
        url=f"{API}/{path}",
        data=(lambda: data(fixtures)) if callable(data) else data,
        project=project,
        min_role=min_role,
        audit_action=audit_action,
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


def test_cel_syntax_error_names_the_rule_and_keeps_the_active_version(
    admin_client_api, agent, config
):
    bad = {**config}
    bad["grants"] = [{"tool": "echo", "rules": [{"when": "args.amount >", "then": "deny"}]}]
    response = admin_client_api.post(
        f"{API}/agents/triage/versions/", {"config": bad}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == ["config.grants.0.rules.0.when"], errors
    assert errors["config.grants.0.rules.0.when"][0].startswith("CEL syntax error at line 1")
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


@pytest.mark.parametrize(
    ("path", "data", "field", "message"),
    [
        ("agents/", {"slug": "triage"}, "slug", "Slug 'triage' is already taken in this project."),
        (
            "model-endpoints/",
            {"name": "scripted", "kind": "scripted"},
            "name",
            "Name 'scripted' is already taken in this project.",
        ),
        (
            "mcp-servers/",
            {"name": "docs", **HTTP_SERVER},
            "name",
            "Name 'docs' is already taken in this project.",
        ),
        (
            "tools/",
            {"name": "echo", **BUILTIN_TOOL},
            "name",
            "Name 'echo' is already taken in this project.",
        ),
    ],
)
def test_a_taken_name_is_a_400_at_the_field(
    admin_client_api, agent, mcp_server, config, path, data, field, message
):
    if path == "agents/":
        data = {**data, "config": config}
    before = counts()
    response = admin_client_api.post(f"{API}/{path}", data, format="json")
    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert counts() == before


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        ("agents/", {"slug": "new"}, "slug"),
        ("agents/", {"slug": "model-endpoints"}, "slug"),
        ("agents/", {"slug": "mcp-servers"}, "slug"),
        ("agents/", {"slug": "tools"}, "slug"),
        ("tools/", {"name": "new", **BUILTIN_TOOL}, "name"),
        ("tools/", {"name": "mcp-servers", **BUILTIN_TOOL}, "name"),
    ],
)
def test_a_reserved_name_is_a_400_at_the_field(admin_client_api, config, path, data, field):
    if path == "agents/":
        data = {**data, "config": config}
    before = counts()
    response = admin_client_api.post(f"{API}/{path}", data, format="json")
    assert response.status_code == 400
    [message] = response.json()[field]
    assert "is reserved for a page address" in message
    assert counts() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpt-4o": {"input_per_mtok": "2.5"}}, "'gpt-4o'.output_per_mtok: Field required"),
        ({"gpt-4o": {"output_per_mtok": 10}}, "'gpt-4o'.input_per_mtok: Field required"),
        (
            {"gpt-4o": {"input_per_mtok": "-1", "output_per_mtok": "1"}},
            "'gpt-4o'.input_per_mtok: Input should be greater than or equal to 0",
        ),
        (
            {"gpt-4o": {"input_per_mtok": "1", "output_per_mtok": "1", "cached": "0"}},
            "'gpt-4o'.cached: Extra inputs are not permitted",
        ),
    ],
)
def test_a_price_override_needs_both_prices(admin_client_api, project, overrides, message):
    response = admin_client_api.post(
        f"{API}/model-endpoints/",
        {"name": "oai", "kind": "openai", "price_overrides": overrides},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"price_overrides": [message]}
    assert not ModelEndpoint.objects.filter(name="oai").exists()


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


def test_sync_of_a_stdio_command_not_allowed_is_a_400_and_audited(
    admin_client_api, stdio_server, settings
):
    settings.MCP_STDIO_COMMANDS_ALLOWED = ["uvx"]
    response = admin_client_api.post(f"{API}/mcp-servers/local/sync/")
    assert response.status_code == 400
    [message] = response.json()["command"]
    assert message.startswith("The command 'srv' is not allowed for stdio MCP servers")
    assert "MCP_STDIO_COMMANDS_ALLOWED (allowed now: uvx)" in message
    assert AuditEvent.objects.get(action="mcp_server.sync_refused").data == {"error": message}
    assert admin_client_api.get(f"{API}/mcp-servers/local/").json()["last_sync_error"] == message


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


def queries(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_lists_with_configs_cost_the_same_queries_for_any_number_of_rows(
    admin_client_api, project, agent, config, admin_user
):
    agents_url, versions_url = f"{API}/agents/", f"{API}/agents/triage/versions/"
    one_agent = queries(admin_client_api, agents_url)
    one_version = queries(admin_client_api, versions_url)
    for n in range(3):
        agent_create(project=project, slug=f"agent-{n}", config=config, actor=admin_user)
        agent_version_create(agent=agent, changes={"temperature": n / 10}, actor=admin_user)
    assert queries(admin_client_api, agents_url) == one_agent
    assert queries(admin_client_api, versions_url) == one_version
