"""The agent registry: model endpoints, MCP servers, tools, agents, immutable agent versions, grants."""

from __future__ import annotations

import jsonschema
import pydantic
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from agents.config import PriceOverride, parse_script
from controlplane.immutable import ImmutableError, ImmutableModel
from controlplane.models import Role, slug_validator
from controlplane.secrets import ENV_VAR_NAME_RE
from governance.conditions import EFFECTS, ConditionError, compile_condition

tool_name_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
    "Start with a letter; use up to 64 letters, digits, '_', '.' or '-'.",
)

# Fixed path segments next to ``<slug>`` / ``<name>`` in the UI (``agents/urls.py``) and the
# API: an agent or tool named like one could not be opened, so new ones are refused.
# ``tests/agents/test_pages.py`` checks that every fixed segment of the URLconf is here.
RESERVED_AGENT_SLUGS = frozenset({"new", "model-endpoints", "mcp-servers", "tools"})
RESERVED_TOOL_NAMES = frozenset({"new", "mcp-servers", "outbox"})


def _check_reserved(instance: models.Model, field: str, reserved: frozenset[str]) -> None:
    # Only new rows: names are permanent, and an older row must stay editable.
    value = getattr(instance, field)
    if instance._state.adding and value in reserved:
        raise ValidationError(
            {field: f"'{value}' is reserved for a page address; choose another name."}
        )


def _check_env_var(value: str, field: str) -> None:
    if value and not ENV_VAR_NAME_RE.match(value):
        raise ValidationError({field: "Use an environment variable name such as OPENAI_API_KEY."})


# Raised when code tries to change or delete an agent version or its grants.
VersionImmutableError = ImmutableError


class UniqueFieldErrorsMixin:
    """Key a violated multi-field ``UniqueConstraint`` by its last field, not ``__all__``.

    ``(project, name)`` taken: ``{"name": ["Name 'docs' is already taken in this
    project."]}``, so the API answers 400 under ``name`` and forms show the error at the
    field. Other constraint errors are left as Django raises them.
    """

    def validate_constraints(self, exclude=None) -> None:
        try:
            super().validate_constraints(exclude=exclude)
        except ValidationError as exc:
            errors: dict[str, list[ValidationError]] = {}
            for key, messages in exc.error_dict.items():
                for error in messages:
                    unique_check = (error.params or {}).get("unique_check", ())
                    if key != NON_FIELD_ERRORS or error.code != "unique_together":
                        errors.setdefault(key, []).append(error)
                        continue
                    *scope, field = unique_check
                    errors.setdefault(field, []).append(self._taken(field, scope[-1]))
            raise ValidationError(errors) from exc

    def _taken(self, field: str, scope: str) -> ValidationError:
        opts = self._meta
        label = str(opts.get_field(field).verbose_name).capitalize()
        return ValidationError(
            "%(label)s %(value)r is already taken in this %(scope)s.",
            code="unique",
            params={
                "label": label,
                "value": getattr(self, field),
                "scope": opts.get_field(scope).verbose_name,
            },
        )


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (Ollama, vLLM, llama.cpp)"
    SCRIPTED = "scripted", "Scripted (deterministic tests and demos)"


class ModelEndpoint(UniqueFieldErrorsMixin, models.Model):
    """Where model calls go: a provider, its credentials and optional price overrides.

    The credential is either the name of an environment variable holding the API key
    (``credential_env_var``) or the key encrypted with ``controlplane.secrets``
    (``credential_encrypted``); never plain text, never returned by the API.
    ``price_overrides`` maps a model name to USD per million tokens, as decimal strings:
    ``{"llama3.1:8b": {"input_per_mtok": "0", "output_per_mtok": "0"}}``, both keys
    required (``agents.config.PriceOverride``); models without an override are priced by
    genai-prices under ``genai_prices_provider``.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="model_endpoints"
    )
    name = models.SlugField(max_length=50, validators=[slug_validator])
    kind = models.CharField(max_length=32, choices=ProviderKind.choices)
    base_url = models.URLField(blank=True)
    default_model = models.CharField(max_length=200, blank=True)
    genai_prices_provider = models.CharField(
        max_length=64, blank=True, help_text="genai-prices provider id, e.g. openai, anthropic."
    )
    credential_env_var = models.CharField(max_length=128, blank=True)
    credential_encrypted = models.TextField(blank=True, editable=False)
    price_overrides = models.JSONField(default=dict, blank=True)
    script = models.JSONField(
        default=dict,
        blank=True,
        help_text="Scripted endpoints only: the responses (agents.config.ScriptedModelScript).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="endpoint_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_env_var or self.credential_encrypted)

    def clean(self) -> None:
        if self.kind == ProviderKind.OPENAI_COMPATIBLE and not self.base_url:
            raise ValidationError({"base_url": "An OpenAI-compatible endpoint needs a base URL."})
        _check_env_var(self.credential_env_var, "credential_env_var")
        if self.credential_env_var and self.credential_encrypted:
            raise ValidationError(
                {"credential_env_var": "Give an environment variable or a stored key, not both."}
            )
        if not isinstance(self.price_overrides, dict):
            raise ValidationError({"price_overrides": "Must be an object keyed by model name."})
        problems = []
        for model_name, prices in self.price_overrides.items():
            try:
                PriceOverride.model_validate(prices)
            except pydantic.ValidationError as exc:
                problems += [
                    f"{model_name!r}{''.join(f'.{part}' for part in e['loc'])}: {e['msg']}"
                    for e in exc.errors()
                ]
        if problems:
            raise ValidationError({"price_overrides": problems})
        if self.kind == ProviderKind.SCRIPTED:
            parse_script(self.script)
        elif self.script:
            raise ValidationError({"script": "Only a scripted endpoint has a script."})


class MCPTransport(models.TextChoices):
    STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
    STDIO = "stdio", "stdio (local command)"


def mcp_server_write_role(*transports: str) -> Role:
    """The project role needed to create or change an MCP server whose transport is, or
    becomes, any of ``transports``: ``admin`` when one is stdio (the server is a command
    run on the control plane's host as its OS user), else ``operator``."""
    return Role.ADMIN if MCPTransport.STDIO in transports else Role.OPERATOR


class MCPServer(UniqueFieldErrorsMixin, models.Model):
    """A Model Context Protocol server whose tools can be synced into the registry.

    A stdio server is launched from ``command`` (argv); it is synced or called only when
    ``command[0]`` is in ``settings.MCP_STDIO_COMMANDS_ALLOWED`` (see
    ``agents.connectors``), and only project admins may create or change one
    (``mcp_server_write_role``).
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="mcp_servers"
    )
    name = models.SlugField(max_length=50, validators=[slug_validator])
    transport = models.CharField(max_length=20, choices=MCPTransport.choices)
    url = models.URLField(blank=True)
    command = models.JSONField(default=list, blank=True, help_text='argv, e.g. ["uvx", "srv"]')
    auth_env_var = models.CharField(
        max_length=128, blank=True, help_text="Bearer token for HTTP, from this variable."
    )
    last_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sync_error = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="mcp_server_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        _check_env_var(self.auth_env_var, "auth_env_var")
        if self.transport == MCPTransport.STREAMABLE_HTTP and not self.url:
            raise ValidationError({"url": "A streamable HTTP server needs a URL."})
        if self.transport == MCPTransport.STDIO and (
            not isinstance(self.command, list)
            or not self.command
            or not all(isinstance(a, str) and a for a in self.command)
        ):
            raise ValidationError({"command": "Give the command as a non-empty list of strings."})


class ToolKind(models.TextChoices):
    HTTP = "http", "HTTP"
    MCP = "mcp", "MCP"
    BUILTIN = "builtin", "Built-in"


class RiskLevel(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    FINANCIAL = "financial", "Financial"
    DESTRUCTIVE = "destructive", "Destructive"


HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def check_json_schema(schema, field: str) -> None:
    """Raise ``ValidationError`` on ``field`` unless ``schema`` is a valid JSON Schema
    (draft 2020-12) describing an object."""
    if not isinstance(schema, dict):
        raise ValidationError({field: "A JSON Schema must be an object."})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValidationError({field: f"Invalid JSON Schema at {where}: {exc.message}"}) from exc
    if schema.get("type", "object") != "object":
        raise ValidationError({field: "Tool arguments must be described by an object schema."})


class Tool(UniqueFieldErrorsMixin, models.Model):
    """Something an agent can call: an HTTP endpoint, an MCP server's tool, or built-in code.

    ``http_headers`` maps header names to ``{"value": "..."}`` (not secret) or
    ``{"secret_env": "VAR"}`` (read from the environment at call time). ``removed_at`` is
    set when a synced MCP tool disappears from its server: kept for history, not callable.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="tools"
    )
    name = models.CharField(max_length=64, validators=[tool_name_validator])
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=ToolKind.choices)
    input_schema = models.JSONField(default=dict)
    output_schema = models.JSONField(null=True, blank=True)
    http_url = models.URLField(blank=True)
    http_method = models.CharField(max_length=8, blank=True, default="POST")
    http_headers = models.JSONField(default=dict, blank=True)
    timeout_seconds = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.1), MaxValueValidator(600)]
    )
    mcp_server = models.ForeignKey(
        MCPServer, on_delete=models.PROTECT, null=True, blank=True, related_name="tools"
    )
    mcp_tool_name = models.CharField(max_length=200, blank=True)
    builtin_name = models.CharField(max_length=100, blank=True)
    risk = models.CharField(max_length=16, choices=RiskLevel.choices, default=RiskLevel.READ)
    idempotent = models.BooleanField(default=False)
    cost_per_call_usd = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    removed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="tool_unique_name")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        _check_reserved(self, "name", RESERVED_TOOL_NAMES)
        check_json_schema(self.input_schema, "input_schema")
        if self.output_schema is not None:
            if not isinstance(self.output_schema, dict):
                raise ValidationError({"output_schema": "A JSON Schema must be an object."})
            try:
                jsonschema.Draft202012Validator.check_schema(self.output_schema)
            except jsonschema.SchemaError as exc:
                raise ValidationError(
                    {"output_schema": f"Invalid JSON Schema: {exc.message}"}
                ) from exc
        if self.kind == ToolKind.HTTP:
            if not self.http_url:
                raise ValidationError({"http_url": "An HTTP tool needs a URL."})
            if self.http_method not in HTTP_METHODS:
                raise ValidationError({"http_method": f"Use one of {', '.join(HTTP_METHODS)}."})
            if not isinstance(self.http_headers, dict):
                raise ValidationError({"http_headers": "Headers must be an object."})
            for header, spec in self.http_headers.items():
                if (
                    not isinstance(spec, dict)
                    or len(spec) != 1
                    or next(iter(spec))
                    not in (
                        "value",
                        "secret_env",
                    )
                ):
                    raise ValidationError(
                        {
                            "http_headers": f"{header}: use {{'value': ...}} or {{'secret_env': VAR}}."
                        }
                    )
                if "secret_env" in spec:
                    _check_env_var(spec["secret_env"], "http_headers")
        elif self.kind == ToolKind.MCP:
            # The related object, not its id: a server created in the same batch (a registry
            # file) is validated before it is saved.
            try:
                server = self.mcp_server
            except MCPServer.DoesNotExist:
                server = None  # an unknown id: clean_fields() names it
            if server is None or not self.mcp_tool_name:
                raise ValidationError({"mcp_server": "An MCP tool needs a server and a tool name."})
            if server.project_id != self.project_id:
                raise ValidationError({"mcp_server": "The MCP server belongs to another project."})
        elif self.kind == ToolKind.BUILTIN:
            from agents.builtins import registry

            if self.builtin_name not in registry:
                raise ValidationError(
                    {
                        "builtin_name": f"No built-in tool {self.builtin_name!r}; "
                        f"registered: {', '.join(sorted(registry)) or 'none'}."
                    }
                )


class Agent(UniqueFieldErrorsMixin, models.Model):
    """A named agent in a project. Its configuration lives in immutable versions; exactly one
    version is active (``active_version``), and activating an older one is a rollback."""

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="agents"
    )
    slug = models.SlugField(max_length=50, validators=[slug_validator])
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    active_version = models.ForeignKey(
        "AgentVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="agent_unique_slug")
        ]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        _check_reserved(self, "slug", RESERVED_AGENT_SLUGS)


class AgentVersion(ImmutableModel):
    """One immutable configuration of an agent: model, instructions, parameters, grants,
    delegates, its policy and budget references. ``number`` counts from 1 per agent. Create with
    ``agents.services.agent_version_create``; never edited afterwards."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    model_endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.PROTECT, related_name="+")
    model_name = models.CharField(max_length=200)
    instructions = models.TextField()
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(2)]
    )
    max_output_tokens = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    max_tool_calls_per_turn = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(0), MaxValueValidator(1000)]
    )
    delegates = models.ManyToManyField(Agent, blank=True, related_name="delegated_by")
    policy = models.ForeignKey(
        "governance.Policy",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The policy for this agent; none: the project's default policy.",
    )
    budget = models.ForeignKey(
        "governance.Budget",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="An agent-scope budget every model call of this agent counts against.",
    )
    change_note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="agent_version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}@v{self.number}"


class GrantEffect(models.TextChoices):
    ALLOW = "allow", "Allow"
    REQUIRE_APPROVAL = "require_approval", "Require approval"
    DENY = "deny", "Deny"


class ToolGrant(ImmutableModel):
    """Permission for an agent version to call one tool (default deny: no grant, no call).

    ``effect`` applies when no rule matches. ``rules`` is an ordered list of
    ``{"when": CEL, "then": effect}`` (a require_approval rule may add ``"quorum": n``,
    overriding ``approval_quorum``); the first true rule decides (see
    ``governance.conditions`` for the variables). ``rate_limit_calls`` per
    ``rate_limit_window_seconds``, ``max_calls_per_run``; for require_approval the
    approver needs ``approver_role`` and ``approval_quorum`` distinct approvers decide.
    """

    agent_version = models.ForeignKey(AgentVersion, on_delete=models.CASCADE, related_name="grants")
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, related_name="grants")
    effect = models.CharField(max_length=20, choices=GrantEffect.choices, default=GrantEffect.ALLOW)
    rules = models.JSONField(default=list, blank=True)
    rate_limit_calls = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_window_seconds = models.PositiveIntegerField(null=True, blank=True)
    max_calls_per_run = models.PositiveIntegerField(null=True, blank=True)
    approver_role = models.CharField(max_length=16, choices=Role.choices, default=Role.APPROVER)
    approval_quorum = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )

    class Meta:
        ordering = ["agent_version", "tool__name"]
        constraints = [
            models.UniqueConstraint(fields=["agent_version", "tool"], name="grant_unique_tool")
        ]

    def __str__(self) -> str:
        return f"{self.agent_version} -> {self.tool.name} ({self.effect})"

    def clean(self) -> None:
        if not isinstance(self.rules, list):
            raise ValidationError({"rules": "Rules must be a list."})
        for index, rule in enumerate(self.rules):
            if not isinstance(rule, dict) or not (
                {"when", "then"} <= set(rule) <= {"when", "then", "quorum"}
            ):
                raise ValidationError(
                    {
                        "rules": f"rules[{index}]: each rule needs 'when' and 'then' "
                        "(and optionally 'quorum')."
                    }
                )
            if rule["then"] not in EFFECTS:
                raise ValidationError(
                    {"rules": f"rules[{index}].then: use one of {', '.join(EFFECTS)}."}
                )
            quorum = rule.get("quorum")
            if quorum is not None and (
                rule["then"] != "require_approval"
                or not isinstance(quorum, int)
                or isinstance(quorum, bool)
                or not 1 <= quorum <= 10
            ):
                raise ValidationError(
                    {"rules": f"rules[{index}].quorum: 1-10, for a require_approval rule only."}
                )
            try:
                compile_condition(rule["when"])
            except ConditionError as exc:
                raise ValidationError({"rules": f"rules[{index}].when: {exc.message}"}) from exc
        if (self.rate_limit_calls is None) != (self.rate_limit_window_seconds is None):
            raise ValidationError(
                {"rate_limit_calls": "Give both the number of calls and the window, or neither."}
            )
        if self.rate_limit_window_seconds == 0 or self.rate_limit_calls == 0:
            raise ValidationError({"rate_limit_calls": "Rate limit values must be positive."})


class AgentActivation(models.Model):
    """Append-only record that ``version`` became the active version of ``agent`` at
    ``activated_at``; answers "which version was active at time T"."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="activations")
    version = models.ForeignKey(AgentVersion, on_delete=models.CASCADE, related_name="+")
    activated_at = models.DateTimeField(default=timezone.now, db_index=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["agent", "-activated_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.version} active from {self.activated_at:%Y-%m-%d %H:%M:%S}"


class TurnStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    PARKED = "parked", "Parked for approval"
    FAILED = "failed", "Failed"


class AgentTurn(models.Model):
    """One agent turn run by ``agents.runtime``: an agent version on one input, for a flow
    step (``run_id`` / ``step_id``) or standalone.

    ``messages`` is the conversation as pydantic-ai's ``ModelMessagesTypeAdapter`` JSON
    (a parked turn resumes from it in any worker); ``pending`` lists the tool calls waiting
    for approval: ``[{"tool_call_id", "tool_name", "arguments", "args_hash",
    "policy_version_id", "approval_request_id"}]``. ``cost_usd`` is Decimal USD of the
    turn's model calls; ``model_requests`` and ``tool_calls`` count what it made.
    """

    agent_version = models.ForeignKey(AgentVersion, on_delete=models.PROTECT, related_name="turns")
    run_id = models.CharField(max_length=64, blank=True, db_index=True)
    step_id = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    input = models.TextField()
    status = models.CharField(
        max_length=16, choices=TurnStatus.choices, default=TurnStatus.RUNNING, db_index=True
    )
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    messages = models.JSONField(default=list, blank=True)
    pending = models.JSONField(default=list, blank=True)
    model_requests = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"turn {self.pk} of {self.agent_version} ({self.status})"


class ReplayDraftKind(models.TextChoices):
    POLICY = "policy", "Project policy (YAML not yet stored)"
    AGENT_VERSION = "agent_version", "Agent version (config not yet activated)"
    GRANTS = "grants", "Grant set of an agent"


class ReplayStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class ReplayJob(models.Model):
    """A policy replay (``agents.replay``): the recorded tool and model calls of
    ``[starts_at, ends_at)`` decided again under a draft, with no side effects.

    ``kind`` and ``target`` name what the draft replaces (a policy slug, or an agent slug
    for ``agent_version`` and ``grants``); ``draft`` is ``{"document": YAML}``,
    ``{"config": AgentVersionConfig}`` or ``{"grants": [GrantConfig, ...]}``. A Celery task
    runs it; ``done`` of ``total`` recorded calls gives the progress; ``result`` is
    ``governance.replay.ReplayReport.as_data()``.
    """

    project = models.ForeignKey(
        "controlplane.Project", on_delete=models.CASCADE, related_name="replay_jobs"
    )
    kind = models.CharField(max_length=16, choices=ReplayDraftKind.choices)
    target = models.CharField(max_length=50)
    draft = models.JSONField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=ReplayStatus.choices, default=ReplayStatus.QUEUED, db_index=True
    )
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"replay {self.pk} of {self.kind} {self.target} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == ReplayStatus.COMPLETED:
            return 100
        return int(100 * self.done / self.total) if self.total else 0


# The demo's tables live in their own module (imported here so Django registers them).
from agents.demo_models import (  # noqa: E402, F401
    Customer,
    KnowledgeArticle,
    OutboxEmail,
    RefundEntry,
)
