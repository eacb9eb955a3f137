"""Serializers for the agent registry API. They parse and shape data; rules live in the
models, the ``AgentVersionConfig`` schema and the services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.api import schema  # noqa: F401  (registers the pydantic schema extension)
from agents.config import AgentVersionConfig
from agents.models import Agent, AgentVersion, MCPServer, ModelEndpoint, Tool
from agents.selectors import version_snapshot

# --- Model endpoints ------------------------------------------------------------------------


class ModelEndpointSerializer(serializers.ModelSerializer):
    """An endpoint as shown and created. ``api_key`` is write-only: it is stored encrypted
    and never returned, not even masked; ``has_stored_key`` says whether one is stored."""

    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        style={"input_type": "password"},
        help_text="Provider API key, stored encrypted. Write-only; or give credential_env_var.",
    )
    clear_api_key = serializers.BooleanField(
        write_only=True,
        required=False,
        help_text="On update: remove the stored API key (ignored on create).",
    )
    has_stored_key = serializers.SerializerMethodField(
        help_text="Whether an encrypted API key is stored."
    )

    class Meta:
        model = ModelEndpoint
        fields = [
            "name",
            "kind",
            "base_url",
            "default_model",
            "genai_prices_provider",
            "credential_env_var",
            "api_key",
            "clear_api_key",
            "has_stored_key",
            "price_overrides",
            "script",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_has_stored_key(self, endpoint: ModelEndpoint) -> bool:
        return bool(endpoint.credential_encrypted)


class ConnectionTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    models = serializers.ListField(
        child=serializers.CharField(), help_text="Model names the endpoint offers."
    )


# --- MCP servers ----------------------------------------------------------------------------


class MCPServerSerializer(serializers.ModelSerializer):
    command = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text='argv for the stdio transport, e.g. ["uvx", "my-server"].',
    )

    class Meta:
        model = MCPServer
        fields = [
            "name",
            "transport",
            "url",
            "command",
            "auth_env_var",
            "last_synced_at",
            "last_sync_error",
            "created_at",
        ]
        read_only_fields = ["last_synced_at", "last_sync_error", "created_at"]


class SyncResultSerializer(serializers.Serializer):
    """Tool names per outcome of one sync; ``error`` is empty on success."""

    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    removed = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_blank=True)


# --- Tools ----------------------------------------------------------------------------------


class ProjectNameRelatedField(serializers.SlugRelatedField):
    """A related object of the request's project, referenced by its ``name``."""

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "name")
        super().__init__(**kwargs)

    def get_queryset(self):
        project = self.context.get("project")
        model = self.queryset.model
        return model.objects.filter(project=project) if project else model.objects.none()


class ToolSerializer(serializers.ModelSerializer):
    """A tool. Its name is permanent: changing it on update is refused by the service."""

    mcp_server = ProjectNameRelatedField(
        queryset=MCPServer.objects.all(),
        required=False,
        allow_null=True,
        help_text="Name of the MCP server (kind mcp).",
    )
    input_schema = serializers.JSONField(
        required=False, help_text="JSON Schema (draft 2020-12) of the arguments: an object schema."
    )
    output_schema = serializers.JSONField(
        required=False, allow_null=True, help_text="JSON Schema of the result, if known."
    )

    class Meta:
        model = Tool
        fields = [
            "name",
            "description",
            "kind",
            "input_schema",
            "output_schema",
            "http_url",
            "http_method",
            "http_headers",
            "timeout_seconds",
            "mcp_server",
            "mcp_tool_name",
            "builtin_name",
            "risk",
            "idempotent",
            "cost_per_call_usd",
            "removed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["removed_at", "created_at", "updated_at"]


# --- Agents and versions --------------------------------------------------------------------


@extend_schema_field(AgentVersionConfig)
class AgentConfigField(serializers.JSONField):
    """An ``AgentVersionConfig`` document (validated by the service, errors keyed by path)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.")
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "description": "Top-level AgentVersionConfig fields to replace in the active "
        "version's config (a list such as grants is replaced whole).",
    }
)
class ConfigChangesField(AgentConfigField):
    pass


class AgentVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Username of the author."
    )
    is_active = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField()

    class Meta:
        model = AgentVersion
        fields = ["number", "created_by", "created_at", "change_note", "is_active", "config"]
        read_only_fields = fields

    def get_is_active(self, version: AgentVersion) -> bool:
        # The versions viewset passes the id, sparing a query per version.
        if "active_version_id" in self.context:
            return self.context["active_version_id"] == version.pk
        return version.agent.active_version_id == version.pk

    @extend_schema_field(AgentVersionConfig)
    def get_config(self, version: AgentVersion) -> dict[str, Any]:
        return version_snapshot(version)


class AgentVersionCreateSerializer(serializers.Serializer):
    """Give ``config`` (a full draft) or ``changes`` (copy the active version with changes)."""

    config = AgentConfigField(required=False)
    changes = ConfigChangesField(required=False)
    change_note = serializers.CharField(max_length=500, required=False, allow_blank=True)
    activate = serializers.BooleanField(
        default=True, help_text="Make the new version active (default true)."
    )


class AgentSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Username of the owner."
    )
    # A plain integer: the model field's range differs between SQLite and PostgreSQL, and
    # the committed schema must be the same on both.
    active_version = serializers.IntegerField(
        source="active_version.number",
        read_only=True,
        allow_null=True,
        help_text="Number of the active version.",
    )
    config = serializers.SerializerMethodField(help_text="The active version's configuration.")

    class Meta:
        model = Agent
        fields = [
            "slug",
            "description",
            "owner",
            "active_version",
            "config",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(AgentVersionConfig)
    def get_config(self, agent: Agent) -> dict[str, Any] | None:
        return version_snapshot(agent.active_version) if agent.active_version else None


class AgentCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=50)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    config = AgentConfigField(help_text="The configuration of version 1.")
    change_note = serializers.CharField(max_length=500, required=False, allow_blank=True)


class AgentUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(allow_blank=True)


class ConfigChangeSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="A config field, or grants.<tool> for one grant.")
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


# ``from`` is a Python keyword, so the class is built with type().
AgentDiffSerializer = type(
    "AgentDiffSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "Differences going from version ``from`` to version ``to``.",
        "from": serializers.IntegerField(),
        "to": serializers.IntegerField(),
        "changes": ConfigChangeSerializer(many=True),
    },
)


class AgentActiveAtSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    version = AgentVersionSerializer(
        allow_null=True, help_text="The version active at that time; null before the first."
    )


class DryRunSerializer(serializers.Serializer):
    """A hypothetical tool call of an agent version, decided with no side effects."""

    tool = serializers.CharField(max_length=64, help_text="The tool's name in the project.")
    arguments = serializers.JSONField(help_text="The call's arguments (checked by the schema).")
    version = serializers.IntegerField(
        required=False, min_value=1, help_text="A version number; default: the active one."
    )
    run_id = serializers.CharField(
        required=False,
        max_length=100,
        help_text="Count per-run caps against this run's calls so far (read, not changed).",
    )


class DecisionSerializer(serializers.Serializer):
    """The policy engine's decision (``governance.engine.Decision``)."""

    effect = serializers.ChoiceField(choices=["allow", "deny", "require_approval"])
    rule = serializers.CharField(help_text="What decided, e.g. grant.rule.2, grant.missing.")
    policy_version_id = serializers.IntegerField(allow_null=True)
    policy = serializers.CharField(help_text="The policy in force, e.g. 'default v3'.")
    messages = serializers.ListField(child=serializers.CharField())
    grant_id = serializers.IntegerField(allow_null=True)
    approver_role = serializers.CharField(allow_null=True)
    approval_quorum = serializers.IntegerField(allow_null=True)
    version = serializers.IntegerField(help_text="The agent version decided for.")
