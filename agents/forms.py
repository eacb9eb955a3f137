"""UI forms of the agent registry: they check shape and build service arguments; services hold the rules.

The agent draft (create and edit pages) is a main form plus one grant row per tool
(``AgentDraft``). The services validate the assembled config with ``agents.config`` and
answer with errors keyed by dotted paths (``temperature``, ``grants.1.rules``);
``AgentDraft.add_service_errors`` puts each next to the input it concerns.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml
from django import forms
from django.core.exceptions import ValidationError

from agents.models import (
    HTTP_METHODS,
    Agent,
    GrantEffect,
    MCPTransport,
    ProviderKind,
    RiskLevel,
    Tool,
    ToolKind,
)
from agents.selectors import agents_for_project, model_endpoints_for_project, tools_for_project
from controlplane.models import Role
from governance.conditions import EFFECTS
from governance.models import Budget, BudgetScope, Policy

RULE_SEPARATOR = "=>"
_RULE_MESSAGE_RE = re.compile(r"^rules\[(\d+)\]\.(?:when|then):\s*")


def parse_json_field(text: str, *, required: bool) -> Any:
    """``text`` as JSON (None when empty and not required); errors say line and column."""
    if not text.strip():
        if required:
            raise ValidationError("This field is required.")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc


def rules_to_text(rules: list[dict[str, str]]) -> str:
    """Grant rules as the textarea shows them: one ``<CEL expression> => <effect>`` per line."""
    # One rule per line: a multi-line expression is joined (CEL ignores the whitespace).
    return "\n".join(
        f"{' '.join(rule['when'].split())} {RULE_SEPARATOR} {rule['then']}"
        + (f" quorum {rule['quorum']}" if rule.get("quorum") else "")
        for rule in rules
    )


_THEN_QUORUM_RE = re.compile(r"^require_approval\s+quorum\s+(\d{1,2})$")


# --- Agents ---------------------------------------------------------------------------------


class AgentFilterForm(forms.Form):
    """GET filters of the agent list (invalid values are ignored and shown on the form)."""

    q = forms.CharField(
        required=False,
        max_length=100,
        label="Search",
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Slug or description", "autocomplete": "off"}
        ),
    )
    endpoint = forms.ChoiceField(required=False, label="Model endpoint")

    def __init__(self, *args: Any, project, **kwargs: Any):
        super().__init__(*args, **kwargs)
        names = model_endpoints_for_project(project).values_list("name", flat=True)
        self.fields["endpoint"].choices = [("", "All endpoints"), *((n, n) for n in names)]


class AgentDraftForm(forms.Form):
    """The version-level part of a draft: model, instructions, parameters, delegates."""

    model_endpoint = forms.ChoiceField(label="Model endpoint")
    model_name = forms.CharField(
        max_length=200, label="Model name", help_text="As the provider names it."
    )
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}))
    temperature = forms.FloatField(
        required=False, help_text="0 to 2; leave empty for the provider's default."
    )
    max_output_tokens = forms.IntegerField(initial=1024, label="Max output tokens")
    max_tool_calls_per_turn = forms.IntegerField(initial=10, label="Max tool calls per turn")
    delegates = forms.MultipleChoiceField(
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
        help_text="Other agents this one may hand work to.",
    )
    policy = forms.ChoiceField(
        required=False, help_text="Empty: the project's default policy applies."
    )
    budget = forms.ChoiceField(
        required=False,
        help_text="An agent-scope budget its model calls count against (besides project and user budgets).",
    )

    def __init__(self, *args: Any, project, agent: Agent | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        endpoints = list(model_endpoints_for_project(project))
        self.fields["model_endpoint"].choices = [(e.name, e.name) for e in endpoints]
        if endpoints and not self.initial.get("model_endpoint"):
            self.initial.setdefault("model_endpoint", endpoints[0].name)
            self.initial.setdefault("model_name", endpoints[0].default_model)
        others = agents_for_project(project)
        if agent is not None:
            others = others.exclude(pk=agent.pk)
        self.fields["delegates"].choices = [(a.slug, a.slug) for a in others]
        policies = Policy.objects.filter(project=project).order_by("slug")
        self.fields["policy"].choices = [("", "Project default")] + [
            (p.slug, p.slug) for p in policies
        ]
        budgets = Budget.objects.filter(project=project, scope=BudgetScope.AGENT).order_by("name")
        self.fields["budget"].choices = [("", "None")] + [(b.name, b.name) for b in budgets]

    def config_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "model_endpoint": data["model_endpoint"],
            "model_name": data["model_name"],
            "instructions": data["instructions"],
            "temperature": data["temperature"],
            "max_output_tokens": data["max_output_tokens"],
            "max_tool_calls_per_turn": data["max_tool_calls_per_turn"],
            "delegates": list(data["delegates"]),
            "policy": data["policy"] or None,
            "budget": data["budget"] or None,
        }


class AgentCreateForm(AgentDraftForm):
    slug = forms.CharField(
        max_length=50,
        help_text="Permanent. Lowercase letters, digits and inner hyphens.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    field_order = ["slug", "description"]


class AgentVersionForm(AgentDraftForm):
    change_note = forms.CharField(
        required=False,
        max_length=500,
        label="Change note",
        help_text="Why this version: shown in the version history.",
    )
    activate = forms.BooleanField(required=False, initial=True, label="Make the new version active")


class GrantRowForm(forms.Form):
    """One tool's row in the grants table; only rows with ``granted`` checked are validated."""

    granted = forms.BooleanField(required=False)
    effect = forms.ChoiceField(choices=GrantEffect.choices, initial=GrantEffect.ALLOW)
    rules = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "No rules: the effect applies to every call."}
        ),
    )
    rate_limit_calls = forms.IntegerField(required=False)
    rate_limit_window_seconds = forms.IntegerField(required=False)
    max_calls_per_run = forms.IntegerField(required=False)
    approver_role = forms.ChoiceField(choices=Role.choices, initial=Role.APPROVER)
    approval_quorum = forms.IntegerField(initial=1)

    def __init__(self, *args: Any, tool: Tool, **kwargs: Any):
        kwargs.setdefault("prefix", f"grant-{tool.pk}")
        super().__init__(*args, **kwargs)
        self.tool = tool
        self.rule_lines: list[int] = []  # 1-based textarea line of each parsed rule

    @property
    def is_granted(self) -> bool:
        if self.is_bound:
            return bool(self["granted"].data)
        return bool(self.initial.get("granted"))

    def clean_rules(self) -> list[dict[str, str]]:
        """Parse one ``<CEL expression> => <effect>`` per line (blank lines skipped); the CEL
        itself is checked by the service."""
        rules, problems, self.rule_lines = [], [], []
        for number, line in enumerate(self.cleaned_data["rules"].splitlines(), start=1):
            if not line.strip():
                continue
            when, separator, then = line.rpartition(RULE_SEPARATOR)
            quorum = _THEN_QUORUM_RE.match(then.strip())
            if not separator or not when.strip() or (then.strip() not in EFFECTS and not quorum):
                problems.append(
                    f"Line {number}: write <CEL expression> {RULE_SEPARATOR} <effect>, "
                    f"with effect {', '.join(EFFECTS)} (or require_approval quorum <n>)."
                )
                continue
            if quorum:
                rules.append(
                    {"when": when.strip(), "then": "require_approval", "quorum": int(quorum[1])}
                )
            else:
                rules.append({"when": when.strip(), "then": then.strip()})
            self.rule_lines.append(number)
        if problems:
            raise ValidationError(problems)
        return rules

    def grant(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "tool": self.tool.name,
            "effect": data["effect"],
            "rules": data["rules"],
            "rate_limit_calls": data["rate_limit_calls"],
            "rate_limit_window_seconds": data["rate_limit_window_seconds"],
            "max_calls_per_run": data["max_calls_per_run"],
            "approver_role": data["approver_role"],
            "approval_quorum": data["approval_quorum"],
        }

    def add_rule_errors(self, rule_index: int | None, messages: list[str]) -> None:
        """Errors of the service about ``rules`` (or rule ``rule_index``), located by line."""
        located = []
        for message in messages:
            match = _RULE_MESSAGE_RE.match(message)
            index = int(match.group(1)) if match else rule_index
            text = message[match.end() :] if match else message
            if index is not None and index < len(self.rule_lines):
                text = f"Line {self.rule_lines[index]}: {text}"
            located.append(text)
        self.add_error("rules", located)


class AgentDraft:
    """The draft of an agent version on a page: ``form`` plus a ``GrantRowForm`` per tool.

    Rows cover the project's tools that are not removed, plus any tool the base snapshot
    grants (so a grant of a removed tool is shown with the service's error, not dropped).
    """

    def __init__(self, form: AgentDraftForm, rows: list[GrantRowForm]):
        self.form = form
        self.rows = rows
        self._granted: list[GrantRowForm] = []

    @classmethod
    def build(
        cls,
        form_class: type[AgentDraftForm],
        *,
        project,
        data=None,
        agent: Agent | None = None,
        snapshot: dict[str, Any] | None = None,
    ) -> AgentDraft:
        initial: dict[str, Any] = {}
        grants: dict[str, dict[str, Any]] = {}
        if snapshot is not None:
            initial = {k: v for k, v in snapshot.items() if k != "grants"}
            grants = {g["tool"]: g for g in snapshot["grants"]}
        form = form_class(data, project=project, agent=agent, initial=initial)
        tools = tools_for_project(project).order_by("name")
        rows = []
        for tool in tools:
            grant = grants.get(tool.name)
            if tool.removed_at is not None and grant is None:
                continue
            row_initial = {}
            if grant is not None:
                row_initial = {**grant, "granted": True, "rules": rules_to_text(grant["rules"])}
            rows.append(GrantRowForm(data, tool=tool, initial=row_initial))
        return cls(form, rows)

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        self._granted = [row for row in self.rows if row.is_granted]
        for row in self._granted:
            valid = row.is_valid() and valid
        return valid

    def config(self) -> dict[str, Any]:
        """The ``AgentVersionConfig`` dict for the services (after ``is_valid``)."""
        return {**self.form.config_fields(), "grants": [row.grant() for row in self._granted]}

    def add_service_errors(self, error: ValidationError) -> None:
        """Put each of the service's errors next to its input.

        ``grants.<i>.<field>...`` goes to the row of the i-th granted tool, ``delegates.<i>``
        to the delegates field, other known fields to themselves, the rest on top.
        """
        if not hasattr(error, "error_dict"):
            self.form.add_error(None, error.messages)
            return
        for key, messages in error.message_dict.items():
            parts = key.split(".")
            if parts[0] == "grants" and len(parts) > 1 and parts[1].isdigit():
                index = int(parts[1])
                if index < len(self._granted):
                    self._add_row_error(self._granted[index], parts[2:], messages)
                    continue
            field = parts[0]
            self.form.add_error(field if field in self.form.fields else None, messages)

    @staticmethod
    def _add_row_error(row: GrantRowForm, path: list[str], messages: list[str]) -> None:
        field = path[0] if path else None
        if field == "rules":
            rule_index = int(path[1]) if len(path) > 1 and path[1].isdigit() else None
            row.add_rule_errors(rule_index, messages)
        else:
            row.add_error(field if field in row.fields else None, messages)

    @property
    def has_row_errors(self) -> bool:
        return any(row.errors for row in self.rows if row.is_bound and row.is_granted)


class VersionDiffForm(forms.Form):
    """Pick two versions of an agent to compare (``a`` before, ``b`` after)."""

    a = forms.TypedChoiceField(coerce=int, label="From version")
    b = forms.TypedChoiceField(coerce=int, label="To version")

    def __init__(self, *args: Any, numbers: list[int], **kwargs: Any):
        kwargs.setdefault("auto_id", "id_diff_%s")
        super().__init__(*args, **kwargs)
        choices = [(n, f"Version {n}") for n in numbers]
        self.fields["a"].choices = choices
        self.fields["b"].choices = choices


# --- Tools, MCP servers, model endpoints ------------------------------------------------------


class ToolCreateForm(forms.Form):
    """An HTTP or built-in tool (MCP tools come from syncing their server)."""

    name = forms.CharField(
        max_length=64,
        help_text="Permanent. Start with a letter; letters, digits, '_', '.' or '-'.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(
        choices=[(ToolKind.HTTP, ToolKind.HTTP.label), (ToolKind.BUILTIN, ToolKind.BUILTIN.label)]
    )
    risk = forms.ChoiceField(choices=RiskLevel.choices, initial=RiskLevel.READ)
    idempotent = forms.BooleanField(required=False, help_text="Safe to retry.")
    input_schema = forms.CharField(
        required=False,
        label="Input schema (JSON Schema)",
        widget=forms.Textarea(
            attrs={"rows": 8, "spellcheck": "false", "class": "mono"},
        ),
        help_text='An object schema, e.g. {"type": "object", "properties": {...}}. '
        "For a built-in tool, leave empty to use the built-in's own schema.",
    )
    output_schema = forms.CharField(
        required=False,
        label="Output schema (optional)",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
    )
    http_url = forms.URLField(required=False, label="URL (HTTP)", assume_scheme="https")
    http_method = forms.ChoiceField(
        choices=[(m, m) for m in HTTP_METHODS], initial="POST", label="Method (HTTP)"
    )
    http_headers = forms.CharField(
        required=False,
        label="Headers (HTTP, JSON)",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"}),
        help_text='{"X-Team": {"value": "ops"}, "Authorization": {"secret_env": "API_TOKEN"}}',
    )
    builtin_name = forms.ChoiceField(required=False, label="Built-in")
    timeout_seconds = forms.FloatField(initial=30.0, label="Timeout (seconds)")
    cost_per_call_usd = forms.DecimalField(
        required=False, max_digits=12, decimal_places=6, label="Cost per call (USD)"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        from agents.builtins import registry

        self.builtins = registry
        self.fields["builtin_name"].choices = [("", "—"), *((n, n) for n in sorted(registry))]

    def clean_input_schema(self) -> Any:
        return parse_json_field(self.cleaned_data["input_schema"], required=False)

    def clean_output_schema(self) -> Any:
        return parse_json_field(self.cleaned_data["output_schema"], required=False)

    def clean_http_headers(self) -> Any:
        return parse_json_field(self.cleaned_data["http_headers"], required=False) or {}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "input_schema" in data and data["input_schema"] is None:
            builtin = self.builtins.get(data.get("builtin_name") or "")
            if data.get("kind") == ToolKind.BUILTIN and builtin is not None:
                data["input_schema"] = builtin.input_schema
            else:
                self.add_error("input_schema", "Give the JSON Schema of the tool's arguments.")
        return data

    def service_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``tool_create`` (only the chosen kind's settings)."""
        data = self.cleaned_data
        fields = {
            name: data[name]
            for name in (
                "name",
                "description",
                "kind",
                "risk",
                "idempotent",
                "input_schema",
                "output_schema",
                "timeout_seconds",
                "cost_per_call_usd",
            )
        }
        if data["kind"] == ToolKind.HTTP:
            fields.update(
                http_url=data["http_url"],
                http_method=data["http_method"],
                http_headers=data["http_headers"],
            )
        else:
            fields["builtin_name"] = data["builtin_name"]
        return fields


class MCPServerCreateForm(forms.Form):
    name = forms.CharField(
        max_length=50, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )
    transport = forms.ChoiceField(choices=MCPTransport.choices)
    url = forms.URLField(required=False, label="URL (streamable HTTP)", assume_scheme="https")
    command = forms.CharField(
        required=False,
        label="Command (stdio)",
        help_text="A command line, e.g. uvx mcp-server-fetch (split like a shell does).",
        widget=forms.TextInput(attrs={"spellcheck": "false"}),
    )
    auth_env_var = forms.CharField(
        required=False,
        max_length=128,
        label="Bearer token variable",
        help_text="Environment variable holding the token for HTTP servers.",
    )

    def clean_command(self) -> list[str]:
        try:
            return shlex.split(self.cleaned_data["command"])
        except ValueError as exc:
            raise ValidationError(f"Cannot split this command line: {exc}.") from exc


class ModelEndpointCreateForm(forms.Form):
    name = forms.CharField(
        max_length=50, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )
    kind = forms.ChoiceField(choices=ProviderKind.choices)
    base_url = forms.URLField(
        required=False,
        label="Base URL",
        assume_scheme="https",
        help_text="Needed for OpenAI-compatible servers, e.g. http://localhost:11434/v1.",
    )
    default_model = forms.CharField(required=False, max_length=200, label="Default model")
    credential_env_var = forms.CharField(
        required=False,
        max_length=128,
        label="API key variable",
        help_text="Name of the environment variable holding the key, e.g. OPENAI_API_KEY.",
    )
    # Write-only: PasswordInput never renders a value back, not even after an error.
    api_key = forms.CharField(
        required=False,
        strip=True,
        label="Or store an API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Give this or a variable, not both.",
    )
    genai_prices_provider = forms.CharField(
        required=False,
        max_length=64,
        label="genai-prices provider",
        help_text="Provider id for pricing, e.g. openai, anthropic.",
    )
    script = forms.CharField(
        required=False,
        label="Script (scripted model only)",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
        help_text=(
            "JSON or YAML: ordered responses, each tool calls or final text, e.g. "
            '{"responses": [{"tool_calls": [{"name": "lookup", "arguments": {"id": 7}}]}, '
            '{"text": "Done."}]}. A scripted model is not a language model.'
        ),
    )

    def clean_script(self) -> dict:
        text = self.cleaned_data["script"].strip()
        if not text:
            return {}
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise forms.ValidationError(f"Not valid JSON or YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise forms.ValidationError("The script must be an object with responses.")
        return data

    def service_fields(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class DryRunForm(forms.Form):
    """A hypothetical tool call for the agent page's dry run."""

    tool = forms.ChoiceField()
    arguments = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "code"}),
        initial="{}",
        help_text="JSON, checked against the tool's input schema.",
    )
    version = forms.ChoiceField(required=False, help_text="Default: the active version.")

    def __init__(self, *args: Any, project, agent: Agent, **kwargs: Any):
        super().__init__(*args, **kwargs)
        names = tools_for_project(project).order_by("name").values_list("name", flat=True)
        self.fields["tool"].choices = [(name, name) for name in names]
        numbers = agent.versions.order_by("-number").values_list("number", flat=True)
        self.fields["version"].choices = [("", "Active version")] + [
            (str(n), f"Version {n}") for n in numbers
        ]

    def clean_arguments(self) -> Any:
        try:
            return json.loads(self.cleaned_data["arguments"])
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from exc
