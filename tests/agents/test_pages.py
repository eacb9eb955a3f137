"""Agent registry pages: access, the agent draft form (errors in place), versions, diff, rollback,
tools with their schema preview, MCP servers and model endpoints (write-only API key)."""

from __future__ import annotations

import itertools
import re

import pytest
from django.test import Client
from django.urls import reverse

from agents import urls as agents_urls
from agents.models import (
    RESERVED_AGENT_SLUGS,
    RESERVED_TOOL_NAMES,
    Agent,
    AgentVersion,
    ModelEndpoint,
    Tool,
)
from agents.services import (
    agent_create,
    agent_version_create,
    mcp_server_create,
    model_endpoint_create,
    tool_create,
)
from controlplane.models import Role
from controlplane.services import project_create
from governance.models import AuditEvent
from tests.agents.mcp_fixture_server import RunningMCPServer, build_server
from tests.factories import UserFactory
from tests.rbac import check_rbac, member_client

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
SECRET_KEY_VALUE = "sk-live-DO-NOT-RENDER-4f9c2a7e1b"
_slugs = itertools.count(1)


@pytest.fixture
def agent(project, config, admin_user):
    return agent_create(
        project=project,
        slug="triage",
        description="Support triage",
        config=config,
        actor=admin_user,
    )


@pytest.fixture
def agent_v2(agent, admin_user):
    agent_version_create(
        agent=agent, changes={"temperature": 0.9}, actor=admin_user, change_note="warmer"
    )
    agent.refresh_from_db()
    return agent


@pytest.fixture
def mcp_server(project):
    return mcp_server_create(
        project=project, name="files", transport="streamable_http", url="http://127.0.0.1:9/mcp"
    )


@pytest.fixture
def alice_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def operator_client(project) -> Client:
    return member_client(project, Role.OPERATOR, api=False, username="olga")[0]


@pytest.fixture
def viewer_client(project) -> Client:
    return member_client(project, Role.VIEWER, api=False, username="victor")[0]


@pytest.fixture
def other_project(db):
    """A project Alice is not a member of, with its own admin (bob)."""
    return project_create(slug="globex", name="Globex", creator=UserFactory(username="bob"))


@pytest.fixture
def globex_objects(other_project):
    """An agent and a tool in a project Alice is not a member of."""
    endpoint = model_endpoint_create(project=other_project, name="scripted", kind="scripted")
    tool = tool_create(
        project=other_project,
        name="globex.secret",
        kind="builtin",
        builtin_name="echo",
        input_schema={"type": "object"},
    )
    agent = agent_create(
        project=other_project,
        slug="globex-bot",
        config={
            "model_endpoint": endpoint.name,
            "model_name": "scripted-1",
            "instructions": "Globex only.",
        },
    )
    return agent, tool


def draft_data(tools, **overrides) -> dict[str, str]:
    """POST data of the agent form: payments.send granted with two rules, echo not granted."""
    data = {
        "project": "acme",
        "slug": "triage",
        "description": "Support triage",
        "model_endpoint": "scripted",
        "model_name": "scripted-1",
        "instructions": "You triage support tickets.",
        "temperature": "0.2",
        "max_output_tokens": "512",
        "max_tool_calls_per_turn": "10",
    }
    for tool in tools.values():
        prefix = f"grant-{tool.pk}"
        data |= {
            f"{prefix}-effect": "allow",
            f"{prefix}-rules": "",
            f"{prefix}-approver_role": "approver",
            f"{prefix}-approval_quorum": "1",
        }
    pay = f"grant-{tools['payments.send'].pk}"
    data |= {
        f"{pay}-granted": "on",
        f"{pay}-rules": "args.amount > 100 => require_approval\nargs.amount > 10000 => deny",
        f"{pay}-max_calls_per_run": "3",
    }
    return data | overrides


def version_data(tools, **overrides) -> dict[str, str]:
    data = draft_data(tools, change_note="", activate="on")
    del data["slug"], data["description"]
    return data | overrides


def grant_row(html: str, tool: Tool) -> str:
    match = re.search(rf'<tbody id="grant-row-{tool.pk}".*?</tbody>', html, re.DOTALL)
    assert match, f"no grants row for {tool.name}"
    return match.group(0)


def page_urls(agent, tool, endpoint, mcp_server) -> list[str]:
    return [
        reverse("agents"),
        reverse("agents") + "?q=tri&endpoint=scripted",
        reverse("agent-create"),
        reverse("agent-detail", args=[agent.slug]),
        reverse("agent-edit", args=[agent.slug]),
        reverse("agent-diff", args=[agent.slug]) + "?a=1&b=1",
        reverse("agent-version-activate", args=[agent.slug, 1]),
        reverse("tools"),
        reverse("tool-create"),
        reverse("tool-detail", args=[tool.name]),
        reverse("mcp-servers"),
        reverse("model-endpoints"),
    ]


# --- Access ------------------------------------------------------------------------------------


def test_every_page_renders_for_a_viewer(viewer_client, agent, tools, endpoint, mcp_server):
    for url in page_urls(agent, tools["payments.send"], endpoint, mcp_server):
        response = viewer_client.get(url)
        assert response.status_code == 200, url
        assert b"Acme" in response.content, url


def test_viewer_sees_no_write_controls(viewer_client, agent_v2):
    html = viewer_client.get(reverse("agent-detail", args=["triage"])).content.decode()
    assert reverse("agent-edit", args=["triage"]) not in html
    assert "hx-confirm" not in html
    assert "New agent" not in viewer_client.get(reverse("agents")).content.decode()
    html = viewer_client.get(reverse("agent-create")).content.decode()
    assert 'id="agent-form"' not in html and "needs the operator role" in html


def test_anonymous_is_redirected_to_login(client, agent, tools, endpoint, mcp_server):
    for url in page_urls(agent, tools["payments.send"], endpoint, mcp_server):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_objects_of_another_project_are_404(alice_client, project, globex_objects):
    globex_agent, globex_tool = globex_objects
    for url in [
        reverse("agent-detail", args=[globex_agent.slug]),
        reverse("agent-edit", args=[globex_agent.slug]),
        reverse("agent-diff", args=[globex_agent.slug]),
        reverse("agent-version-activate", args=[globex_agent.slug, 1]),
        reverse("tool-detail", args=[globex_tool.name]),
    ]:
        assert alice_client.get(url).status_code == 404, url
    url = reverse("agent-version-activate", args=[globex_agent.slug, 1])
    assert alice_client.post(url).status_code == 404
    # Naming the other project in the form does not help either.
    response = alice_client.post(reverse("tool-create"), {"project": "globex", "name": "x"})
    assert response.status_code == 404
    assert alice_client.post(url, {"project": "globex"}).status_code == 404


def test_viewer_posts_are_forbidden_and_change_nothing(viewer_client, agent_v2, tools, mcp_server):
    endpoint = ModelEndpoint.objects.get(name="scripted")
    posts = [
        (reverse("agent-create"), draft_data(tools, slug="sneaky")),
        (reverse("agent-edit", args=["triage"]), version_data(tools, temperature="1.5")),
        (reverse("agent-version-activate", args=["triage", 1]), {}),
        (reverse("tool-create"), {"name": "sneaky", "kind": "builtin", "builtin_name": "echo"}),
        (reverse("mcp-servers"), {"name": "sneaky", "transport": "stdio", "command": "srv"}),
        (reverse("mcp-server-sync", args=[mcp_server.pk]), {}),
        (reverse("model-endpoints"), {"name": "sneaky", "kind": "scripted"}),
        (reverse("model-endpoint-test", args=[endpoint.pk]), {}),
    ]
    events = AuditEvent.objects.count()
    for url, data in posts:
        assert viewer_client.post(url, data).status_code == 403, url
        assert viewer_client.post(url, data, **HTMX).status_code == 403, url
    assert AuditEvent.objects.count() == events
    assert not Agent.objects.filter(slug="sneaky").exists()
    assert Agent.objects.get(slug="triage").active_version.number == 2


def test_agent_create_rbac(project, endpoint, tools):
    check_rbac(
        method="post",
        url=reverse("agent-create"),
        data=lambda: draft_data(tools, slug=f"bot-{next(_slugs)}"),
        project=project,
        min_role=Role.OPERATOR,
        api=False,
        audit_action="agent.created",
    )


def test_activate_rbac(project, config):
    # One agent per request (made beforehand: their own audit events must not count).
    agents = []
    for _ in range(6):
        agent = agent_create(project=project, slug=f"bot-{next(_slugs)}", config=config)
        agent_version_create(agent=agent, changes={"temperature": 1.0})
        agents.append(agent)
    urls = (reverse("agent-version-activate", args=[a.slug, 1]) for a in agents)

    check_rbac(
        method="post",
        url=lambda: next(urls),
        project=project,
        min_role=Role.OPERATOR,
        api=False,
        audit_action="agent.version.activated",
    )
    active = [Agent.objects.get(pk=a.pk).active_version.number for a in agents]
    assert active == [2, 2, 2, 1, 1, 1]  # anonymous, outsider, viewer refused


# --- Agents: list, create, edit, diff, rollback ----------------------------------------------


def test_agent_list_searches_and_filters(alice_client, project, agent, config):
    other_endpoint = model_endpoint_create(project=project, name="local", kind="scripted")
    agent_create(
        project=project,
        slug="billing",
        description="Invoices",
        config={**config, "model_endpoint": other_endpoint.name, "grants": []},
    )
    html = alice_client.get(reverse("agents")).content.decode()
    assert "triage" in html and "billing" in html
    assert 'hx-trigger="keyup changed delay:300ms' in html

    partial = alice_client.get(reverse("agents"), {"q": "invoice"}, **HTMX).content.decode()
    assert "<html" not in partial
    assert "billing" in partial and "triage" not in partial

    full = alice_client.get(reverse("agents"), {"endpoint": "scripted"}).content.decode()
    assert 'href="/agents/triage/"' in full and 'href="/agents/billing/"' not in full
    row = re.search(r'<a href="/agents/triage/">triage</a>.*?</tr>', full, re.DOTALL).group(0)
    assert "v1" in row and "scripted-1" in row and "<td>2</td>" in row  # two grants

    empty = alice_client.get(reverse("agents"), {"q": "nothing-like-this"}).content.decode()
    assert "No agents match" in empty


def test_operator_creates_edits_diffs_and_rolls_back(operator_client, endpoint, tools):
    response = operator_client.post(reverse("agent-create"), draft_data(tools))
    assert response.status_code == 302
    assert response["Location"] == reverse("agent-detail", args=["triage"])
    agent = Agent.objects.get(slug="triage")
    v1 = agent.active_version
    assert v1.number == 1 and v1.temperature == 0.2 and v1.max_output_tokens == 512
    grant = v1.grants.get()
    assert grant.tool.name == "payments.send" and grant.max_calls_per_run == 3
    assert grant.rules == [
        {"when": "args.amount > 100", "then": "require_approval"},
        {"when": "args.amount > 10000", "then": "deny"},
    ]

    detail = operator_client.get(response["Location"]).content.decode()
    assert "Created agent triage" in detail
    assert "v1 active" in detail and "args.amount &gt; 10000" in detail

    edit = operator_client.get(reverse("agent-edit", args=["triage"])).content.decode()
    assert "You triage support tickets." in edit
    assert "args.amount &gt; 100 =&gt; require_approval" in edit  # rules back as text
    assert re.search(r'name="temperature" value="0.2"', edit)

    response = operator_client.post(
        reverse("agent-edit", args=["triage"]),
        version_data(tools, temperature="0.9", change_note="warmer replies"),
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    v2 = agent.active_version
    assert (v2.number, v2.temperature, v2.change_note) == (2, 0.9, "warmer replies")
    assert AgentVersion.objects.get(pk=v1.pk).temperature == 0.2  # v1 untouched

    diff_url = reverse("agent-diff", args=["triage"])
    diff = operator_client.get(diff_url, {"a": 1, "b": 2}).content.decode()
    assert "<html" in diff
    row = re.search(r'<tr data-field="temperature">.*?</tr>', diff, re.DOTALL).group(0)
    assert "0.2" in row and "0.9" in row
    assert "instructions" not in re.findall(r'data-field="([^"]+)"', diff)
    partial = operator_client.get(diff_url, {"a": 1, "b": 2}, **HTMX).content.decode()
    assert "<html" not in partial and 'data-field="temperature"' in partial

    activate_v1 = reverse("agent-version-activate", args=["triage", 1])
    confirm = operator_client.get(activate_v1).content.decode()
    assert 'method="post"' in confirm and 'data-field="temperature"' in confirm
    agent.refresh_from_db()
    assert agent.active_version.number == 2  # GET changes nothing

    response = operator_client.post(activate_v1, {"project": "acme"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("agent-detail", args=["triage"])
    agent.refresh_from_db()
    assert agent.active_version.number == 1
    assert "Rolled back: version 1 is active again." in response.content.decode()
    assert AuditEvent.objects.filter(action="agent.version.activated").count() == 3

    # With htmx the page body is swapped in place and the badge moves.
    activate_v2 = reverse("agent-version-activate", args=["triage", 2])
    partial = operator_client.post(activate_v2, **HTMX).content.decode()
    assert "<html" not in partial and 'id="agent-body"' in partial
    assert "v2 active" in partial and "Version 2 is now active." in partial


def test_cel_syntax_error_is_shown_in_its_row_and_nothing_is_saved(alice_client, endpoint, tools):
    pay, echo = tools["payments.send"], tools["echo"]
    data = draft_data(tools)
    data[f"grant-{echo.pk}-granted"] = "on"  # echo is grants.0, payments.send grants.1
    data[f"grant-{pay.pk}-rules"] = (
        "args.amount > 100 => require_approval\n\nargs.amount >> 5 => deny"
    )
    events = AuditEvent.objects.count()
    response = alice_client.post(reverse("agent-create"), data)
    assert response.status_code == 200
    html = response.content.decode()
    pay_row = grant_row(html, pay)
    assert 'class="field-error"' in pay_row
    assert "Line 3: CEL syntax error" in pay_row
    assert "args.amount &gt;&gt; 5 =&gt; deny" in pay_row  # the input is kept
    assert "field-error" not in grant_row(html, echo)
    assert "Nothing was saved" in html
    assert not Agent.objects.exists()
    assert AuditEvent.objects.count() == events


def test_errors_in_place_with_htmx(alice_client, endpoint, tools):
    data = draft_data(tools, temperature="5")
    response = alice_client.post(reverse("agent-create"), data, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="agent-form"' in html
    temperature_error = re.search(r'id="id_temperature_error">([^<]*)<', html)
    assert temperature_error and "less than or equal to 2" in temperature_error.group(1)
    # Form-level check of the rule format (the service is not called then).
    data = draft_data(tools)
    data[f"grant-{tools['payments.send'].pk}-rules"] = "args.amount > 100"
    html = alice_client.post(reverse("agent-create"), data, **HTMX).content.decode()
    assert "Line 1: write &lt;CEL expression&gt; =&gt; &lt;effect&gt;" in grant_row(
        html, tools["payments.send"]
    )
    assert not Agent.objects.exists()

    response = alice_client.post(reverse("agent-create"), draft_data(tools), **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("agent-detail", args=["triage"])


def test_grant_errors_from_the_service_land_in_the_row(alice_client, endpoint, tools):
    pay = tools["payments.send"]
    data = draft_data(tools)
    data[f"grant-{pay.pk}-rate_limit_calls"] = "5"  # without a window
    data[f"grant-{pay.pk}-approval_quorum"] = "0"
    html = alice_client.post(reverse("agent-create"), data).content.decode()
    row = grant_row(html, pay)
    assert f'id="id_grant-{pay.pk}-approval_quorum_error"' in row
    assert "greater than or equal to 1" in row


def test_failed_edit_keeps_the_active_version(alice_client, agent, tools):
    data = version_data(tools)
    data[f"grant-{tools['payments.send'].pk}-rules"] = "foo.bar > 1 => deny"
    response = alice_client.post(reverse("agent-edit", args=["triage"]), data)
    assert response.status_code == 200
    assert "Unknown variable(s) foo" in grant_row(response.content.decode(), tools["payments.send"])
    agent.refresh_from_db()
    assert agent.versions.count() == 1 and agent.active_version.number == 1


@pytest.mark.parametrize("slug", sorted(RESERVED_AGENT_SLUGS))
def test_reserved_agent_slug_is_refused_at_the_field(alice_client, endpoint, tools, slug):
    html = alice_client.post(reverse("agent-create"), draft_data(tools, slug=slug)).content
    error = re.search(r'id="id_slug_error">([^<]*)<', html.decode())
    assert error and "is reserved for a page address" in error.group(1)
    assert not Agent.objects.exists()


def test_a_taken_agent_slug_is_shown_at_the_field(alice_client, agent, tools):
    html = alice_client.post(reverse("agent-create"), draft_data(tools)).content.decode()
    assert re.search(r'id="id_slug_error">Slug &#x27;triage&#x27; is already taken', html)
    assert Agent.objects.count() == 1


@pytest.mark.parametrize(
    ("url_name", "data", "message"),
    [
        ("tool-create", {"name": "echo"}, "Name &#x27;echo&#x27; is already taken"),
        ("tool-create", {"name": "new"}, "&#x27;new&#x27; is reserved for a page address"),
        ("tool-create", {"name": "mcp-servers"}, "is reserved for a page address"),
        ("model-endpoints", {"name": "scripted"}, "Name &#x27;scripted&#x27; is already taken"),
        ("mcp-servers", {"name": "files"}, "Name &#x27;files&#x27; is already taken"),
    ],
)
def test_taken_and_reserved_names_are_shown_at_the_field(
    alice_client, endpoint, tools, mcp_server, url_name, data, message
):
    base = {
        "tool-create": {"kind": "builtin", "builtin_name": "echo", "risk": "read"}
        | {"http_method": "POST", "timeout_seconds": "5"},
        "model-endpoints": {"kind": "scripted"},
        "mcp-servers": {"transport": "streamable_http", "url": "https://mcp.example.com/mcp"},
    }[url_name]
    events = AuditEvent.objects.count()
    response = alice_client.post(reverse(url_name), {"project": "acme", **base, **data})
    assert response.status_code == 200
    error = re.search(r'id="id_name_error">([^<]*)<', response.content.decode())
    assert error and message in error.group(1)
    assert AuditEvent.objects.count() == events


def test_every_fixed_path_segment_is_a_reserved_name():
    """A fixed page next to ``agents/<slug>/`` or ``tools/<name>/`` needs its segment
    reserved, or an agent or tool of that name could not be opened."""
    fixed: dict[str, set[str]] = {"agents": set(), "tools": set()}
    for pattern in agents_urls.urlpatterns:
        section, _, rest = str(pattern.pattern).partition("/")
        segment = rest.split("/")[0]
        if section in fixed and segment and "<" not in segment:
            fixed[section].add(segment)
    assert fixed["agents"] == {"new", "model-endpoints"}
    assert fixed["agents"] <= RESERVED_AGENT_SLUGS
    assert fixed["tools"] <= RESERVED_TOOL_NAMES


def test_diff_page_defaults_and_bad_input(alice_client, agent_v2):
    url = reverse("agent-diff", args=["triage"])
    html = alice_client.get(url).content.decode()  # no choice: previous vs active
    assert "Changes from version 1 to version 2" in html and 'data-field="temperature"' in html
    html = alice_client.get(url, {"a": 1, "b": 99}).content.decode()
    assert "To version: Select a valid choice." in html
    html = alice_client.get(url, {"a": 2, "b": 2}).content.decode()
    assert "No differences between version 2 and version 2." in html


def test_detail_shows_config_timeline_and_activation_history(alice_client, agent_v2):
    html = alice_client.get(reverse("agent-detail", args=["triage"])).content.decode()
    assert "v2 active" in html and "Support triage" in html
    assert "You triage support tickets." in html
    assert "warmer" in html  # change note of version 2
    assert html.count("Activated ") == 2
    assert 'hx-confirm="Activate version 1 of triage?' in html
    assert 'hx-post="/agents/triage/versions/1/activate/"' in html
    assert 'action="/agents/triage/versions/1/activate/"' in html  # no-JS confirmation page
    assert "/agents/triage/versions/2/activate/" not in html  # the active one has no button
    assert 'hx-get="/agents/triage/diff/"' in html


# --- Tools -----------------------------------------------------------------------------------


def test_tool_list_and_schema_preview(alice_client, tools):
    html = alice_client.get(reverse("tools")).content.decode()
    assert 'href="/tools/payments.send/"' in html and "Financial" in html

    html = alice_client.get(reverse("tool-detail", args=["payments.send"])).content.decode()
    assert 'data-property="to"' in html and 'data-property="amount"' in html
    to_field = re.search(r'data-property="to".*?</div>', html, re.DOTALL).group(0)
    amount_field = re.search(r'data-property="amount".*?</div>', html, re.DOTALL).group(0)
    assert "(required)" in to_field and 'type="text"' in to_field and "string" in to_field
    assert "(required)" not in amount_field and 'type="number"' in amount_field
    assert '<label for="arg-to">' in to_field
    assert "<details>" in html and "&quot;required&quot;" in html  # raw JSON, escaped
    assert "Built-in" in html and "<code>echo</code>" in html


def test_tool_create_shows_json_and_schema_errors_in_place(alice_client, project):
    url = reverse("tool-create")
    base = {"project": "acme", "name": "lookup", "kind": "http", "risk": "read"}
    base |= {"http_method": "GET", "http_url": "https://api.example.com/x", "timeout_seconds": "30"}
    html = alice_client.post(url, base | {"input_schema": '{"type": "object",}'}).content.decode()
    assert re.search(r'id="id_input_schema_error">Not valid JSON: [^<]*line 1', html)
    html = alice_client.post(
        url, base | {"input_schema": '{"type": "object", "properties": {"a": {"type": 5}}}'}
    ).content.decode()
    assert re.search(r'id="id_input_schema_error">Invalid JSON Schema at properties/a/type', html)
    assert not Tool.objects.filter(name="lookup").exists()

    response = alice_client.post(
        url, base | {"input_schema": '{"type": "object", "properties": {"q": {"type": "string"}}}'}
    )
    assert response.status_code == 302 and response["Location"] == "/tools/lookup/"
    tool = Tool.objects.get(name="lookup")
    assert tool.http_url == "https://api.example.com/x" and tool.http_method == "GET"

    # A built-in without a schema takes the built-in's own.
    data = {"project": "acme", "name": "adder", "kind": "builtin", "risk": "read"}
    data |= {"builtin_name": "calculator.add", "http_method": "POST", "timeout_seconds": "5"}
    assert alice_client.post(url, data).status_code == 302
    assert Tool.objects.get(name="adder").input_schema["required"] == ["a", "b"]


# --- MCP servers and model endpoints ---------------------------------------------------------


def test_mcp_server_create_and_sync(alice_client, project):
    response = alice_client.post(
        reverse("mcp-servers"),
        {"project": "acme", "name": "files", "transport": "stdio", "command": "uvx 'mcp srv'"},
    )
    assert response.status_code == 302
    assert project.mcp_servers.get(name="files").command == ["uvx", "mcp srv"]

    html = alice_client.post(
        reverse("mcp-servers"), {"project": "acme", "name": "web", "transport": "streamable_http"}
    ).content.decode()
    assert re.search(r'id="id_url_error">A streamable HTTP server needs a URL', html)

    with RunningMCPServer(build_server()) as running:
        data = {"project": "acme", "name": "web", "transport": "streamable_http"}
        response = alice_client.post(reverse("mcp-servers"), data | {"url": running.url})
        assert response.status_code == 302
        server = project.mcp_servers.get(name="web")
        sync_url = reverse("mcp-server-sync", args=[server.pk])
        partial = alice_client.post(sync_url, {"project": "acme"}, **HTMX).content.decode()
        assert f'<tr id="mcp-server-{server.pk}">' in partial and "<html" not in partial
        assert "greet, refuse, shout, slow" in partial  # created
        assert "<td>6</td>" in partial  # the tool count
        response = alice_client.post(sync_url, follow=True)
    assert "Synced web: 0 created, 0 updated, 0 removed, 6 unchanged." in (
        response.content.decode()
    )


def test_sync_of_a_stdio_command_not_allowed_shows_why(alice_client, project, settings):
    settings.MCP_STDIO_COMMANDS_ALLOWED = ["npx"]
    server = mcp_server_create(project=project, name="files", transport="stdio", command=["uvx"])
    sync_url = reverse("mcp-server-sync", args=[server.pk])
    why = "The command &#x27;uvx&#x27; is not allowed for stdio MCP servers"

    partial = alice_client.post(sync_url, {"project": "acme"}, **HTMX).content.decode()
    assert f"Sync failed: {why}" in partial
    page = alice_client.post(sync_url, follow=True).content.decode()
    assert f"Sync of files failed: {why}" in page
    assert page.count("MCP_STDIO_COMMANDS_ALLOWED (allowed now: npx)") == 2  # message, row
    assert AuditEvent.objects.filter(action="mcp_server.sync_refused").count() == 2
    assert not Tool.objects.exists()


def test_an_operator_cannot_add_a_stdio_server(operator_client, project):
    url = reverse("mcp-servers")
    data = {"project": "acme", "name": "files", "transport": "stdio", "command": "uvx srv"}
    html = operator_client.post(url, data).content.decode()
    assert re.search(r'id="id_transport_error">A stdio server runs a command on the', html)
    assert "needs the admin role" in html
    assert not project.mcp_servers.exists()
    data |= {"transport": "streamable_http", "url": "https://mcp.example.com/mcp"}
    assert operator_client.post(url, data).status_code == 302
    assert project.mcp_servers.get().transport == "streamable_http"


def test_test_connection_of_a_scripted_endpoint(alice_client, endpoint):
    url = reverse("model-endpoint-test", args=[endpoint.pk])
    partial = alice_client.post(url, {"project": "acme"}, **HTMX).content.decode()
    assert "<html" not in partial and "Connection works." in partial
    response = alice_client.post(url, follow=True)
    assert "connection works" in response.content.decode()


def test_api_key_is_never_rendered(alice_client, project, tools, mcp_server):
    url = reverse("model-endpoints")
    # A refused form does not echo the key back either.
    response = alice_client.post(
        url, {"project": "acme", "name": "Bad Name", "kind": "openai", "api_key": SECRET_KEY_VALUE}
    )
    assert response.status_code == 200 and b'id="id_name_error"' in response.content
    assert SECRET_KEY_VALUE.encode() not in response.content
    assert 'type="password"' in response.content.decode()

    response = alice_client.post(
        url,
        {"project": "acme", "name": "openai", "kind": "openai", "api_key": SECRET_KEY_VALUE},
        follow=True,
    )
    assert response.status_code == 200
    endpoint = ModelEndpoint.objects.get(name="openai")
    assert endpoint.credential_encrypted and SECRET_KEY_VALUE not in endpoint.credential_encrypted
    pages = [
        response,
        alice_client.get(url),
        alice_client.post(reverse("model-endpoint-test", args=[endpoint.pk]), **HTMX),
        alice_client.get(reverse("audit-list")),
    ]
    pages += [
        alice_client.get(reverse(name)) for name in ("agents", "agent-create", "tools", "home")
    ]
    for page in pages:
        assert SECRET_KEY_VALUE.encode() not in page.content
    assert "stored key" in pages[1].content.decode()


# --- Navigation and the project switcher ------------------------------------------------------


def nav_state(html: str) -> dict[str, str]:
    """Section link -> its aria-current value ("" when not marked)."""
    sidebar = re.search(r'<nav aria-label="Sections">.*?</nav>', html, re.DOTALL).group(0)
    return dict(re.findall(r'<a href="([^"]+)"(?:\s+aria-current="(\w+)")?', sidebar))


def switch_next(html: str) -> str:
    return re.search(r'<input type="hidden" name="next" value="([^"]*)"', html).group(1)


def test_sub_pages_mark_their_section_and_switching_leads_to_its_list(
    alice_client, agent_v2, tools, endpoint, mcp_server
):
    pages = {
        reverse("agents"): ("/agents/", "page", "/agents/"),
        reverse("agent-detail", args=["triage"]): ("/agents/", "true", "/agents/"),
        reverse("agent-edit", args=["triage"]): ("/agents/", "true", "/agents/"),
        reverse("agent-diff", args=["triage"]): ("/agents/", "true", "/agents/"),
        reverse("agent-version-activate", args=["triage", 1]): ("/agents/", "true", "/agents/"),
        reverse("agent-create"): ("/agents/", "true", "/agents/new/"),
        reverse("model-endpoints"): ("/agents/", "true", "/agents/model-endpoints/"),
        reverse("tools"): ("/tools/", "page", "/tools/"),
        reverse("tool-detail", args=["payments.send"]): ("/tools/", "true", "/tools/"),
        reverse("tool-create"): ("/tools/", "true", "/tools/new/"),
        reverse("mcp-servers"): ("/tools/", "true", "/tools/mcp-servers/"),
    }
    for url, (section, current, next_url) in pages.items():
        html = alice_client.get(url).content.decode()
        state = nav_state(html)
        assert state[section] == current, url
        assert [href for href, value in state.items() if value] == [section], url
        assert switch_next(html) == next_url, url


def test_switching_project_on_a_detail_page_lands_on_the_section_list(
    alice_client, agent, admin_user
):
    project_create(slug="initech", name="Initech", creator=admin_user)
    html = alice_client.get(reverse("agent-detail", args=["triage"])).content.decode()
    response = alice_client.post(
        reverse("project-switch"), {"project": "initech", "next": switch_next(html)}
    )
    assert response["Location"] == reverse("agents")
    page = alice_client.get(response["Location"])
    assert page.status_code == 200 and b"Initech" in page.content
