"""The flow definition schema (pydantic): steps, their kinds, retries and compensation; the
template and CEL helpers the engine evaluates them with.

A definition (YAML or JSON)::

    steps:
      - id: fetch
        kind: tool
        tool: http-get
        agent: fetcher
        arguments: {url: "{{ input.url }}"}
      - id: triage
        kind: router
        depends_on: [fetch]
        rules: [{when: "steps.fetch.size > 100", then: long}]
        default: short
        branches: {long: [summarize], short: [store]}
      - id: summarize
        kind: agent
        agent: summarizer
        input: "Summarize: {{ steps.fetch.body }}"
        retries: {max_attempts: 3, backoff_seconds: 2, max_delay_seconds: 30}
        fallback_agent: summarizer-small
        on_failure: [{id: undo, kind: tool, tool: delete-draft, agent: fetcher}]
      - id: each
        kind: map
        over: "input.items"
        max_parallel: 5
        step: {kind: tool, tool: enrich, agent: fetcher, arguments: {item: "{{ item }}"}}
      - id: gate
        kind: approval
        message: "Publish {{ input.title }}?"
        approver_role: approver
        depends_on: [summarize]
    output: {summary: "{{ steps.summarize }}"}

Templates (Jinja2, sandboxed, undefined names are errors) see ``input`` (the run input),
``steps`` (step id -> output of the succeeded steps), ``run`` (``{"id", "trace_id"}``) and,
inside a map's child step, ``item`` and ``index``. A string that is exactly one
``{{ expression }}`` keeps the expression's type (a list stays a list). Router rules are
CEL over ``input``, ``steps`` and ``run``; the first true rule picks its branch.

Every error names its path (``steps.2.retries.max_attempts``); ``parse_definition``
collects them all before raising one ``django.core.exceptions.ValidationError``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

import cel
import jinja2
import pydantic
import pydantic_core
import yaml
from django.core.exceptions import ValidationError
from jinja2.sandbox import SandboxedEnvironment

from governance.conditions import ConditionError, compile_condition

StepId = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
RoleName = Literal["viewer", "operator", "approver", "admin"]

# Error kinds a failed attempt is classified as (``StepRun.error_kind``); ``retry_on``
# names the retryable ones.
ERROR_KINDS = (
    "tool",  # the tool call failed (HTTP error, connection, tool raised)
    "model",  # the model endpoint failed
    "timeout",  # the step ran longer than its timeout_seconds
    "policy",  # governance refused the call (deny, cap, budget, PII block)
    "rejected",  # an approver rejected the step or its tool call
    "template",  # a template or expression failed on the run's data
    "output",  # the step's output was unusable (a router agent named no branch)
    "error",  # anything else
)
ErrorKind = Literal["tool", "model", "timeout", "policy", "rejected", "template", "output", "error"]
ROUTER_VARIABLES = ("input", "steps", "run")

_env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_SINGLE_EXPRESSION_RE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class TemplateError(ValueError):
    """A template or expression that does not parse, or fails on the run's data."""


def _custom(kind: str, message: str) -> pydantic_core.PydanticCustomError:
    return pydantic_core.PydanticCustomError(kind, "{message}", {"message": message})


@lru_cache(maxsize=2048)
def _compiled_template(text: str) -> jinja2.Template:
    return _env.from_string(text)


@lru_cache(maxsize=2048)
def _compiled_expression(text: str):
    return _env.compile_expression(text, undefined_to_none=False)


def check_template(text: str) -> None:
    """Raise ``TemplateError`` unless ``text`` parses as a template."""
    try:
        match = _SINGLE_EXPRESSION_RE.match(text)
        if match and "{{" not in match.group("expr"):
            _compiled_expression(match.group("expr").strip())
        else:
            _compiled_template(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error at line {exc.lineno}: {exc.message}") from exc


def check_expression(text: str) -> None:
    """Raise ``TemplateError`` unless ``text`` parses as an expression."""
    try:
        _compiled_expression(_strip_braces(text))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"expression syntax error: {exc.message}") from exc


def _strip_braces(text: str) -> str:
    match = _SINGLE_EXPRESSION_RE.match(text)
    return match.group("expr").strip() if match else text.strip()


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render the templates in ``value`` (strings, recursively in lists and dicts) over
    ``context``. A string that is exactly one ``{{ expression }}`` keeps the expression's
    type. Raises ``TemplateError``."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        try:
            match = _SINGLE_EXPRESSION_RE.match(value)
            if match and "{{" not in match.group("expr"):
                return _compiled_expression(match.group("expr").strip())(**context)
            return _compiled_template(value).render(**context)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any failure of user code is a template error
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def evaluate_expression(text: str, context: dict[str, Any]) -> Any:
    """Evaluate the expression ``text`` (``input.items`` or ``{{ input.items }}``) over
    ``context``. Raises ``TemplateError``."""
    try:
        return _compiled_expression(_strip_braces(text))(**context)
    except Exception as exc:  # noqa: BLE001
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def _walk_templates(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _walk_templates(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_templates(item)


def _templated(value: Any) -> Any:
    for text in _walk_templates(value):
        try:
            check_template(text)
        except TemplateError as exc:
            raise _custom("template", str(exc)) from exc
    return value


@lru_cache(maxsize=1024)
def compile_router_rule(expression: str) -> cel.Program:
    """Compile a router rule: CEL over ``input``, ``steps`` and ``run``. Syntax errors come
    from ``governance.conditions.compile_condition`` (with line and column); raises
    ``ConditionError``."""
    try:
        return compile_condition(expression)
    except ConditionError as exc:
        if not exc.message.startswith("Unknown variable"):
            raise
    # compile_condition checks the grant variables; a router sees the flow's instead.
    program = cel.compile(expression)
    bound = set(
        re.findall(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*(\w+)\s*,", expression)
    )
    unknown = sorted(set(program.variables()) - set(ROUTER_VARIABLES) - bound)
    if unknown:
        raise ConditionError(
            f"Unknown variable(s) {', '.join(unknown)}; a router rule may use "
            f"{', '.join(ROUTER_VARIABLES)}."
        )
    return program


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Retries(_Strict):
    """Retry policy of a step: up to ``max_attempts`` attempts in all; attempt n+1 waits
    ``min(max_delay_seconds, backoff_seconds * 2**(n-1))`` seconds, times a random factor
    in [0.5, 1] when ``jitter``; only failures whose kind is in ``retry_on`` retry."""

    max_attempts: int = pydantic.Field(default=1, ge=1, le=20)
    backoff_seconds: float = pydantic.Field(default=1.0, ge=0, le=3600)
    max_delay_seconds: float = pydantic.Field(default=300.0, ge=0, le=86400)
    jitter: bool = True
    retry_on: list[ErrorKind] = pydantic.Field(
        default_factory=lambda: ["tool", "model", "timeout", "error"]
    )


class _StepBase(_Strict):
    id: StepId
    name: str = ""
    depends_on: list[StepId] = pydantic.Field(default_factory=list)
    next: list[StepId] = pydantic.Field(default_factory=list)
    retries: Retries = pydantic.Field(default_factory=Retries)
    timeout_seconds: float | None = pydantic.Field(default=None, gt=0, le=86400)
    on_failure: list[CompensationStep] = pydantic.Field(default_factory=list)


class _AgentFields(pydantic.BaseModel):
    agent: str = pydantic.Field(min_length=1, max_length=50)
    input: str = ""
    fallback_agent: str | None = None

    @pydantic.field_validator("input")
    @classmethod
    def _input_parses(cls, value: str) -> str:
        return _templated(value)


class _ToolFields(pydantic.BaseModel):
    tool: str = pydantic.Field(min_length=1, max_length=64)
    # The agent whose grant for ``tool`` governs the call (default deny without one), and
    # whose audit trail records it.
    agent: str = pydantic.Field(min_length=1, max_length=50)
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("arguments")
    @classmethod
    def _arguments_parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _templated(value)


class AgentStep(_AgentFields, _StepBase):
    """Run ``agent`` (its active version at run start) on the rendered ``input``; when it
    fails for good, ``fallback_agent`` (if any) gets the same input. Output: the final text."""

    kind: Literal["agent"]


class ToolStep(_ToolFields, _StepBase):
    """Call ``tool`` (by name, in the run's project) with the rendered ``arguments``
    through the governed call path, as ``agent`` (its active version's grant decides, its
    audit trail records the call). Output: the tool's result."""

    kind: Literal["tool"]


class RouterRule(_Strict):
    when: str = pydantic.Field(min_length=1, max_length=2000)
    then: str = pydantic.Field(min_length=1)

    @pydantic.field_validator("when")
    @classmethod
    def _compiles(cls, when: str) -> str:
        try:
            compile_router_rule(when)
        except ConditionError as exc:
            raise _custom("cel_condition", exc.message) from exc
        return when


class RouterStep(_StepBase):
    """Pick one of ``branches`` (name -> the step ids it starts): by ``rules`` (first true
    wins, else ``default``) or by ``agent`` answering with a branch name to the rendered
    ``input``. The steps of unchosen branches, and steps that only depend on skipped
    steps, are skipped. Output: ``{"branch": name}``."""

    kind: Literal["router"]
    branches: dict[str, list[StepId]] = pydantic.Field(min_length=1)
    rules: list[RouterRule] = pydantic.Field(default_factory=list)
    default: str | None = None
    agent: str | None = None
    input: str = ""

    @pydantic.field_validator("input")
    @classmethod
    def _input_parses(cls, value: str) -> str:
        return _templated(value)

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> RouterStep:
        if bool(self.rules) == bool(self.agent):
            raise _custom("router", "a router needs either rules or an agent, not both")
        names = set(self.branches)
        for index, rule in enumerate(self.rules):
            if rule.then not in names:
                raise _custom("router", f"rules.{index}.then: no branch named {rule.then!r}")
        if self.default is not None and self.default not in names:
            raise _custom("router", f"default: no branch named {self.default!r}")
        return self


class MapAgentChild(_AgentFields, _Strict):
    kind: Literal["agent"]
    retries: Retries = pydantic.Field(default_factory=Retries)
    timeout_seconds: float | None = pydantic.Field(default=None, gt=0, le=86400)


class MapToolChild(_ToolFields, _Strict):
    kind: Literal["tool"]
    retries: Retries = pydantic.Field(default_factory=Retries)
    timeout_seconds: float | None = pydantic.Field(default=None, gt=0, le=86400)


MapChild = Annotated[MapAgentChild | MapToolChild, pydantic.Field(discriminator="kind")]


class MapStep(_StepBase):
    """Fan out: run ``step`` once per item of the list the expression ``over`` yields (the
    child's templates see ``item`` and ``index``), at most ``max_parallel`` at a time; fan
    in when all finish. Output: the children's outputs in item order. A child that fails
    for good fails the map."""

    kind: Literal["map"]
    over: str = pydantic.Field(min_length=1)
    max_parallel: int = pydantic.Field(default=10, ge=1, le=1000)
    step: MapChild

    @pydantic.field_validator("over")
    @classmethod
    def _over_parses(cls, value: str) -> str:
        try:
            check_expression(value)
        except TemplateError as exc:
            raise _custom("template", str(exc)) from exc
        return value


class ApprovalStep(_StepBase):
    """A human gate: an approval request with the rendered ``message``, decided by
    ``quorum`` distinct people holding at least ``approver_role``. Approved: the step
    succeeds with ``{"approved": true, "comment"}``; rejected or expired: it fails
    (kind ``rejected``)."""

    kind: Literal["approval"]
    message: str = pydantic.Field(min_length=1, max_length=2000)
    approver_role: RoleName = "approver"
    quorum: int = pydantic.Field(default=1, ge=1, le=10)

    @pydantic.field_validator("message")
    @classmethod
    def _message_parses(cls, value: str) -> str:
        return _templated(value)


class CompensationAgentStep(_AgentFields, _Strict):
    id: StepId
    kind: Literal["agent"]


class CompensationToolStep(_ToolFields, _Strict):
    id: StepId
    kind: Literal["tool"]


CompensationStep = Annotated[
    CompensationAgentStep | CompensationToolStep, pydantic.Field(discriminator="kind")
]

Step = Annotated[
    AgentStep | ToolStep | RouterStep | MapStep | ApprovalStep,
    pydantic.Field(discriminator="kind"),
]

for _model in (AgentStep, ToolStep, RouterStep, MapStep, ApprovalStep):
    _model.model_rebuild()


class FlowDefinition(_Strict):
    """A flow: its steps (a DAG through ``depends_on`` / ``next`` and router branches) and
    the run's ``output`` (templates over the final data; default: the outputs of the steps
    nothing depends on, by step id)."""

    description: str = ""
    steps: list[Step] = pydantic.Field(min_length=1, max_length=500)
    output: Any = None

    @pydantic.field_validator("output")
    @classmethod
    def _output_parses(cls, value: Any) -> Any:
        return _templated(value)

    # The graph: computed once per parsed definition.
    def step(self, step_id: str):
        return self._by_id()[step_id]

    def _by_id(self) -> dict[str, Any]:
        cache = self.__dict__.get("_by_id_cache")
        if cache is None:
            cache = {s.id: s for s in self.steps}
            object.__setattr__(self, "_by_id_cache", cache)
        return cache

    def dependencies(self) -> dict[str, set[str]]:
        """Step id -> the step ids it waits for (``depends_on``, ``next`` reversed, and the
        router of a branch's entry steps)."""
        cache = self.__dict__.get("_deps_cache")
        if cache is not None:
            return cache
        deps: dict[str, set[str]] = {s.id: set(s.depends_on) for s in self.steps}
        for s in self.steps:
            for target in s.next:
                if target in deps:
                    deps[target].add(s.id)
            if isinstance(s, RouterStep):
                for entries in s.branches.values():
                    for target in entries:
                        if target in deps:
                            deps[target].add(s.id)
        object.__setattr__(self, "_deps_cache", deps)
        return deps

    def dependents(self) -> dict[str, list[str]]:
        """Step id -> the ids of the steps that wait for it (``dependencies`` reversed, in
        definition order)."""
        cache = self.__dict__.get("_dependents_cache")
        if cache is None:
            cache = {}
            for step_id, needs in self.dependencies().items():
                for need in needs:
                    cache.setdefault(need, []).append(step_id)
            object.__setattr__(self, "_dependents_cache", cache)
        return cache

    def branch_of(self) -> dict[str, tuple[str, str]]:
        """Branch entry step id -> (router step id, branch name)."""
        result = {}
        for s in self.steps:
            if isinstance(s, RouterStep):
                for name, entries in s.branches.items():
                    for target in entries:
                        result[target] = (s.id, name)
        return result

    def sinks(self) -> list[str]:
        """Ids of the steps no other step waits for, in definition order."""
        waited = set().union(*self.dependencies().values())
        return [s.id for s in self.steps if s.id not in waited]

    def graph_errors(self) -> list[tuple[str, str]]:
        """(path, message) for duplicate ids, unknown references and cycles."""
        errors: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        all_ids: dict[str, str] = {}
        for index, s in enumerate(self.steps):
            if s.id in seen:
                errors.append((f"steps.{index}.id", f"duplicate step id {s.id!r}"))
            seen.setdefault(s.id, index)
            all_ids.setdefault(s.id, f"steps.{index}.id")
        for index, s in enumerate(self.steps):
            for c_index, comp in enumerate(s.on_failure):
                path = f"steps.{index}.on_failure.{c_index}.id"
                if comp.id in all_ids:
                    errors.append((path, f"duplicate step id {comp.id!r}"))
                all_ids.setdefault(comp.id, path)
        for index, s in enumerate(self.steps):
            for field in ("depends_on", "next"):
                for r_index, ref in enumerate(getattr(s, field)):
                    if ref not in seen:
                        errors.append((f"steps.{index}.{field}.{r_index}", f"no step {ref!r}"))
                    elif ref == s.id:
                        errors.append(
                            (f"steps.{index}.{field}.{r_index}", "a step cannot wait for itself")
                        )
            if isinstance(s, RouterStep):
                for name, entries in s.branches.items():
                    for e_index, ref in enumerate(entries):
                        if ref not in seen:
                            errors.append(
                                (f"steps.{index}.branches.{name}.{e_index}", f"no step {ref!r}")
                            )
                        elif ref == s.id:
                            errors.append(
                                (
                                    f"steps.{index}.branches.{name}.{e_index}",
                                    "a router cannot branch to itself",
                                )
                            )
        if errors:
            return errors
        # Cycles: depth-first search over the dependencies.
        deps = self.dependencies()
        state: dict[str, int] = {}
        for start in deps:
            if state.get(start):
                continue
            stack = [(start, iter(sorted(deps[start])))]
            path = [start]
            state[start] = 1
            while stack:
                node, children = stack[-1]
                child = next(children, None)
                if child is None:
                    state[node] = 2
                    stack.pop()
                    path.pop()
                    continue
                if state.get(child) == 1:
                    cycle = path[path.index(child) :] + [child]
                    errors.append(
                        (
                            f"steps.{seen[child]}.depends_on",
                            "cycle: " + " -> ".join(reversed(cycle)),
                        )
                    )
                    return errors
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(deps[child]))))
        return errors


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part not in _DISCRIMINATOR_TAGS)


_DISCRIMINATOR_TAGS = {"agent", "tool", "router", "map", "approval"}


def _pydantic_errors(exc: pydantic.ValidationError) -> list[tuple[str, str]]:
    result = []
    for error in exc.errors():
        loc = list(error["loc"])
        # Drop the discriminator tag pydantic puts after a union's index: steps.0.agent.input
        # -> steps.0.input (a step or field named like a kind is kept when not after an int).
        cleaned = []
        for i, part in enumerate(loc):
            if part in _DISCRIMINATOR_TAGS and i > 0 and isinstance(loc[i - 1], int):
                continue
            cleaned.append(str(part))
        result.append((".".join(cleaned) or "definition", error["msg"]))
    return result


def load_source(source: str | dict, source_format: str = "yaml") -> Any:
    """Parse definition text (YAML or JSON) to Python data; a dict passes through. Raises
    ``ValidationError`` keyed ``definition`` for text that does not parse."""
    if isinstance(source, dict):
        return source
    try:
        if source_format == "json":
            return json.loads(source)
        return yaml.safe_load(source)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValidationError(
            {"definition": [f"{source_format.upper()} does not parse: {exc}"]}
        ) from exc


def parse_definition(data: Any) -> FlowDefinition:
    """Validate ``data`` (already loaded) and return the ``FlowDefinition``. Raises one
    ``ValidationError`` whose ``message_dict`` maps each error's path
    (``definition.steps.1.depends_on.0``) to its messages, all errors at once."""
    if not isinstance(data, dict):
        raise ValidationError({"definition": ["A flow definition must be a mapping with 'steps'."]})
    try:
        definition = FlowDefinition.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = _pydantic_errors(exc)
        # Graph errors are reported too when the steps parse on their own.
        errors += _graph_errors_of_raw(data)
        raise _as_validation_error(errors) from exc
    errors = definition.graph_errors()
    if errors:
        raise _as_validation_error(errors)
    return definition


def _graph_errors_of_raw(data: dict) -> list[tuple[str, str]]:
    steps = data.get("steps")
    if not isinstance(steps, list):
        return []
    ids: dict[str, int] = {}
    errors = []
    for index, raw in enumerate(steps):
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            if raw["id"] in ids:
                errors.append((f"steps.{index}.id", f"duplicate step id {raw['id']!r}"))
            ids.setdefault(raw["id"], index)
    for index, raw in enumerate(steps):
        if not isinstance(raw, dict):
            continue
        for field in ("depends_on", "next"):
            refs = raw.get(field) or []
            if isinstance(refs, list):
                for r_index, ref in enumerate(refs):
                    if isinstance(ref, str) and ref not in ids:
                        errors.append((f"steps.{index}.{field}.{r_index}", f"no step {ref!r}"))
    return errors


def _as_validation_error(errors: list[tuple[str, str]]) -> ValidationError:
    by_path: dict[str, list[str]] = {}
    for path, message in errors:
        by_path.setdefault(f"definition.{path}" if path != "definition" else path, []).append(
            message
        )
    return ValidationError(by_path)


def definition_references(definition: FlowDefinition) -> tuple[dict[str, str], dict[str, str]]:
    """(agent slugs, tool names) the definition names, each mapped to the path of its first
    use, for checking they exist in the project."""
    agents: dict[str, str] = {}
    tools: dict[str, str] = {}

    def visit(step, path: str) -> None:
        for field in ("agent", "fallback_agent"):
            value = getattr(step, field, None)
            if value:
                agents.setdefault(value, f"{path}.{field}")
        value = getattr(step, "tool", None)
        if value:
            tools.setdefault(value, f"{path}.tool")
        child = getattr(step, "step", None)
        if child is not None:
            visit(child, f"{path}.step")
        for c_index, comp in enumerate(getattr(step, "on_failure", []) or []):
            visit(comp, f"{path}.on_failure.{c_index}")

    for index, step in enumerate(definition.steps):
        visit(step, f"steps.{index}")
    return agents, tools
