"""Registry model rules: names taken or reserved (errors at the field), MCP tools of unsaved
servers, price overrides."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.models import MCPServer, ModelEndpoint, Tool
from agents.services import mcp_server_create
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

ANY = {"type": "object"}


def errors_of(instance) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        instance.full_clean()
    return info.value.message_dict


def test_a_taken_name_is_an_error_of_the_name_field(project, endpoint):
    errors = errors_of(ModelEndpoint(project=project, name="scripted", kind="scripted"))
    assert errors == {"name": ["Name 'scripted' is already taken in this project."]}
    # The same name in another project is free.
    ModelEndpoint(project=ProjectFactory(), name="scripted", kind="scripted").full_clean()


def test_a_reserved_name_is_refused_for_new_rows_only(project, tools):
    new = Tool(project=project, name="new", kind="builtin", builtin_name="echo", input_schema=ANY)
    assert errors_of(new) == {
        "name": ["'new' is reserved for a page address; choose another name."]
    }
    # A row saved before the rule stays editable (names are permanent).
    legacy = tools["echo"]
    Tool.objects.filter(pk=legacy.pk).update(name="new")
    legacy.refresh_from_db()
    legacy.description = "still editable"
    legacy.full_clean()


def test_an_mcp_tool_may_name_a_server_not_saved_yet(project):
    server = MCPServer(project=project, name="docs", transport="stdio", command=["uvx", "docs"])
    fields = {"name": "docs.search", "kind": "mcp", "mcp_tool_name": "search", "input_schema": ANY}
    Tool(project=project, mcp_server=server, **fields).full_clean()
    assert errors_of(Tool(project=project, **fields)) == {
        "mcp_server": ["An MCP tool needs a server and a tool name."]
    }
    elsewhere = mcp_server_create(
        project=ProjectFactory(), name="docs", transport="stdio", command=["uvx"]
    )
    assert errors_of(Tool(project=project, mcp_server=elsewhere, **fields)) == {
        "mcp_server": ["The MCP server belongs to another project."]
    }


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        ({"m": {"input_per_mtok": "1", "output_per_mtok": 2.5}}, None),
        ({"m": {"input_per_mtok": "0"}}, ["'m'.output_per_mtok: Field required"]),
        (
            {"m": {}, "n.1": {"input_per_mtok": "x", "output_per_mtok": "1"}},
            [
                "'m'.input_per_mtok: Field required",
                "'m'.output_per_mtok: Field required",
                "'n.1'.input_per_mtok: Input should be a valid decimal",
            ],
        ),
        (
            {"m": {"input_per_mtok": "NaN", "output_per_mtok": "1"}},
            ["'m'.input_per_mtok: Input should be a finite number"],
        ),
        ({"m": "free"}, ["'m': Input should be a valid dictionary or instance of PriceOverride"]),
        (["m"], ["Must be an object keyed by model name."]),
    ],
)
def test_price_overrides_need_both_prices_per_model(project, overrides, messages):
    endpoint = ModelEndpoint(project=project, name="oai", kind="openai", price_overrides=overrides)
    if messages is None:
        endpoint.full_clean()
    else:
        assert errors_of(endpoint) == {"price_overrides": messages}
