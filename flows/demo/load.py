"""``demo_load``: the demo project's tools, model endpoints, policy, budgets, agents, flows,
customers and knowledge base, from the data files next to this module. Idempotent: each
object is created when missing and changed (a new agent / flow / policy version) only when
it differs from the demo's data, so a second run changes nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction

from agents.builtins import registry as builtins
from agents.config import parse_config, parse_script
from agents.models import Agent, Customer, KnowledgeArticle, ModelEndpoint, Tool
from agents.selectors import version_snapshot
from agents.services import (
    agent_create,
    agent_version_create,
    model_endpoint_create,
    model_endpoint_update,
    tool_create,
)
from flows.definition import load_source, parse_definition
from flows.models import Flow
from flows.services import flow_create, flow_version_create
from governance.models import Budget, Policy
from governance.services import audit_record, budget_create, policy_create, policy_version_create

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
FLOWS = {
    "support-triage": ("Support triage", HERE / "flows" / "support-triage.yaml"),
    "document-review": ("Document review", HERE / "flows" / "document-review.yaml"),
}
SCRIPTED_MODEL = "demo-scripted"
LOCAL_ENDPOINT = "local-llm"
# The agents whose steps are free text: a local model drives them when LOCAL_LLM_BASE_URL is
# set (a 135M model cannot drive tool calls usefully: docs/bring-your-own-model.md).
LOCAL_LLM_AGENTS = ("drafter", "reviewer")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass
class LoadReport:
    """What ``demo_load`` did: one line per created or changed object (empty: nothing)."""

    changes: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.changes.append(text)


def provider_choice() -> dict[str, Any]:
    """Which endpoint the demo agents use, from the environment: ``OPENAI_API_KEY`` (every
    agent on OpenAI, ``DEMO_OPENAI_MODEL``, default gpt-4o-mini), else
    ``ANTHROPIC_API_KEY`` (``DEMO_ANTHROPIC_MODEL``, default claude-3-5-haiku-latest), else
    scripted; ``LOCAL_LLM_BASE_URL`` moves the free-text agents (drafter, reviewer) of the
    scripted setup to that OpenAI-compatible server. Returns ``{"endpoint": {...} | None,
    "model": name, "agents": slugs | "all"}``."""
    if os.environ.get("OPENAI_API_KEY"):
        model = os.environ.get("DEMO_OPENAI_MODEL", "gpt-4o-mini")
        return {
            "endpoint": {
                "name": "openai",
                "kind": "openai",
                "credential_env_var": "OPENAI_API_KEY",
                "genai_prices_provider": "openai",
                "default_model": model,
            },
            "model": model,
            "agents": "all",
        }
    if os.environ.get("ANTHROPIC_API_KEY"):
        model = os.environ.get("DEMO_ANTHROPIC_MODEL", "claude-3-5-haiku-latest")
        return {
            "endpoint": {
                "name": "anthropic",
                "kind": "anthropic",
                "credential_env_var": "ANTHROPIC_API_KEY",
                "genai_prices_provider": "anthropic",
                "default_model": model,
            },
            "model": model,
            "agents": "all",
        }
    base_url = getattr(settings, "LOCAL_LLM_BASE_URL", "")
    if base_url:
        model = getattr(settings, "LOCAL_LLM_MODEL", "smollm2-135m-instruct")
        return {
            "endpoint": {
                "name": LOCAL_ENDPOINT,
                "kind": "openai_compatible",
                "base_url": base_url,
                "default_model": model,
                # A local model costs nothing per token; priced at 0 so budgets still apply.
                "price_overrides": {model: {"input_per_mtok": "0", "output_per_mtok": "0"}},
            },
            "model": model,
            "agents": LOCAL_LLM_AGENTS,
        }
    return {"endpoint": None, "model": SCRIPTED_MODEL, "agents": ()}


def _endpoint(project, report: LoadReport, fields: dict[str, Any]) -> ModelEndpoint:
    existing = ModelEndpoint.objects.filter(project=project, name=fields["name"]).first()
    if existing is None:
        report.add(f"model endpoint {fields['name']} created")
        return model_endpoint_create(project=project, **fields)
    changed = {
        key: value
        for key, value in fields.items()
        if key != "name" and getattr(existing, key) != value
    }
    if changed:
        report.add(f"model endpoint {fields['name']} updated ({', '.join(sorted(changed))})")
        return model_endpoint_update(endpoint=existing, **changed)
    return existing


def _tools(project, report: LoadReport, specs: list[dict]) -> None:
    for spec in specs:
        if Tool.objects.filter(project=project, name=spec["name"]).exists():
            continue
        builtin = builtins[spec["builtin_name"]]
        tool_create(
            project=project,
            kind="builtin",
            description=builtin.description,
            input_schema=builtin.input_schema,
            **spec,
        )
        report.add(f"tool {spec['name']} created")


def _policy(project, report: LoadReport, actor) -> None:
    document = (HERE / "policy.yaml").read_text(encoding="utf-8")
    policy = Policy.objects.filter(project=project, slug="default").first()
    if policy is None:
        policy = policy_create(
            project=project, slug="default", description="The demo project's policy.", actor=actor
        )
        report.add("policy default created")
    active = policy.active_version
    if active is None or active.document != document:
        version = policy_version_create(
            policy=policy, document=document, change_note="demo_load", actor=actor
        )
        report.add(f"policy default version {version.number} created and activated")


def _budgets(project, report: LoadReport, specs: list[dict]) -> None:
    for spec in specs:
        if Budget.objects.filter(project=project, name=spec["name"]).exists():
            continue
        budget_create(project=project, **{**spec, "limit_usd": Decimal(spec["limit_usd"])})
        report.add(f"budget {spec['name']} created")


def _agents(project, report: LoadReport, specs: dict[str, dict], actor) -> None:
    choice = provider_choice()
    provider_endpoint = (
        _endpoint(project, report, choice["endpoint"]) if choice["endpoint"] else None
    )
    for slug, spec in specs.items():
        scripted = _endpoint(
            project,
            report,
            {
                "name": f"scripted-{slug}",
                "kind": "scripted",
                "default_model": SCRIPTED_MODEL,
                "price_overrides": DEMO_PRICES,
                "script": parse_script(spec["script"]).model_dump(
                    mode="json", exclude_defaults=True
                ),
            },
        )
        on_provider = provider_endpoint is not None and (
            choice["agents"] == "all" or slug in choice["agents"]
        )
        config = parse_config(
            {
                "model_endpoint": provider_endpoint.name if on_provider else scripted.name,
                "model_name": choice["model"] if on_provider else SCRIPTED_MODEL,
                "instructions": " ".join(spec["instructions"].split()),
                "max_output_tokens": 400,
                "max_tool_calls_per_turn": 6,
                # In the snapshot's order (by tool), so an unchanged agent compares equal.
                "grants": sorted(spec.get("grants", []), key=lambda grant: grant["tool"]),
                "budget": spec.get("budget"),
            }
        )
        agent = Agent.objects.filter(project=project, slug=slug).first()
        if agent is None:
            agent_create(
                project=project,
                slug=slug,
                description=spec["description"],
                config=config,
                actor=actor,
                change_note="demo_load",
            )
            report.add(f"agent {slug} created ({config.model_endpoint})")
            continue
        current = (
            parse_config(version_snapshot(agent.active_version)) if agent.active_version else None
        )
        if current is None or current.model_dump() != config.model_dump():
            version = agent_version_create(
                agent=agent, config=config, actor=actor, change_note="demo_load"
            )
            report.add(f"agent {slug} version {version.number} ({config.model_endpoint})")


def _flows(project, report: LoadReport, actor) -> None:
    for slug, (name, path) in FLOWS.items():
        source = path.read_text(encoding="utf-8")
        flow = Flow.objects.filter(project=project, slug=slug).first()
        if flow is None:
            flow_create(project=project, slug=slug, name=name, source=source, actor=actor)
            report.add(f"flow {slug} created")
            continue
        wanted = parse_definition(load_source(source)).model_dump(mode="json")
        if flow.active_version is None or flow.active_version.definition != wanted:
            version = flow_version_create(
                flow=flow, source=source, actor=actor, change_note="demo_load"
            )
            report.add(f"flow {slug} version {version.number} created")


def _rows(project, report: LoadReport) -> None:
    created = {}
    for model, key, path in (
        (Customer, "ref", DATA / "customers.yaml"),
        (KnowledgeArticle, "slug", DATA / "knowledge_base.yaml"),
    ):
        known = set(model.objects.filter(project=project).values_list(key, flat=True))
        new = [model(project=project, **row) for row in _yaml(path) if row[key] not in known]
        if new:
            model.objects.bulk_create(new)
            created[model._meta.model_name] = len(new)
            report.add(f"{len(new)} {model._meta.verbose_name_plural} created")
    if created:
        audit_record(
            action="demo.rows.created",
            project=project,
            object_type="controlplane.project",
            object_id=str(project.pk),
            object_repr=project.slug,
            data={"created": created},
        )


DEMO_PRICES = {SCRIPTED_MODEL: {"input_per_mtok": "3", "output_per_mtok": "15"}}


@transaction.atomic
def demo_load(*, project, actor=None) -> LoadReport:
    """Load the demo into ``project`` (see the module docstring). Raises
    ``ValidationError`` when the demo data does not validate (nothing is written then)."""
    report = LoadReport()
    spec = _yaml(HERE / "project.yaml")
    _tools(project, report, spec["tools"])
    _policy(project, report, actor)
    _budgets(project, report, spec["budgets"])
    _agents(project, report, spec["agents"], actor)
    _flows(project, report, actor)
    _rows(project, report)
    return report
