"""Policy replay, the registry's side: a draft (project policy YAML, agent version config or
grant set) and a time range in, what would have changed out.

``replay_draft_validate`` checks the draft (every error at its path: ``draft.document.caps
.max_tool_calls_per_run``, ``draft.config.grants.0.rules.1.when``, ``draft.grants.0.tool``);
``replay_job_create`` writes the ``ReplayJob`` row and queues ``agents.tasks.replay_job_run``
on commit; ``replay_job_run`` (the task's body) claims the row, reads the recorded calls
and hands them to ``governance.replay`` with the baseline and the draft of each.

What the record holds, and so what is re-decided (also listed in every report):

- tool calls: one ``tool.decision`` audit event each (tool, recorded effect and rule,
  policy version id, turn id, tool call id; the arguments only as a hash); the arguments
  themselves come from the turn's stored conversation (``AgentTurn.messages``), as the
  model proposed them after the ``model_output`` PII scan, i.e. as they were decided.
  A call whose arguments are not in the conversation is skipped (counted).
- model calls: one ``model.call`` audit event each (endpoint, model, prompt tokens as
  estimated, cost); what was sent and received comes from the conversation (the k-th
  request and response of the turn for call index k). Refused model calls are not
  replayed: their request was never answered.
- the CEL variables of the time are rebuilt from the record (run id and tool calls so far
  in the turn, the turn's usage so far, the user), except the user's role, which is read
  as it is now.

Only the replay's own ``replay.completed`` (or ``replay.failed``) audit event is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agents.config import AgentVersionConfig, GrantConfig, parse_config
from agents.governed import grant_spec, tool_spec
from agents.models import (
    Agent,
    AgentTurn,
    AgentVersion,
    ModelEndpoint,
    ReplayDraftKind,
    ReplayJob,
    ReplayStatus,
    Tool,
    ToolGrant,
)
from controlplane.context import Actor, acting_as
from controlplane.models import Membership
from governance.engine import GrantSpec, PolicySnapshot, ToolSpec
from governance.models import AuditEvent, Budget, Policy, PolicyVersion
from governance.policies import (
    DEFAULT_POLICY_SLUG,
    policy_snapshot,
    policy_version_active_at,
    validate_policy_text,
)
from governance.replay import (
    ModelSide,
    RecordedModelCall,
    RecordedToolCall,
    ReplayReport,
    ToolSide,
)
from governance.services import audit_record

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 25  # recorded calls between progress updates of the job row
MAX_RANGE_EVENTS = 200_000  # recorded calls one replay reads at most
VERSION_OBJECT_TYPE = "agents.agentversion"

LIMITATIONS = [
    "Tool call arguments are taken from the turn's stored conversation, as the model "
    "proposed them after the model_output PII scan (as they were decided); the audit log "
    "keeps only their hash.",
    "Per-run caps and rate limits are counted from the calls replayed, starting at zero "
    "at the range's start; calls of a run before the range do not count.",
    "Circuit breakers are not re-decided: a call the breaker refused stays refused.",
    "The user's role in CEL conditions is the role the user has now.",
    "Tools are decided with their current JSON Schema; budgets with their current limits, "
    "and spend as the cost ledger shows it before each call.",
    "Refused model calls are not replayed (their request was never answered).",
]


# --- drafts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """A validated draft: for ``policy`` the target policy (None: ``default`` not created
    yet) and its snapshot; for agent drafts the agent and the config (``grants`` drafts:
    ``config`` is None and ``grants`` replaces each recorded version's grants)."""

    kind: str
    target: str
    policy: Policy | None = None
    policy_snapshot: PolicySnapshot | None = None
    agent: Agent | None = None
    config: AgentVersionConfig | None = None
    grants: tuple[GrantConfig, ...] = ()
    endpoint: ModelEndpoint | None = None
    budget: Budget | None = None
    config_policy: Policy | None = None


def _prefixed(exc: ValidationError, prefix: str) -> ValidationError:
    if not hasattr(exc, "error_dict"):
        return ValidationError({prefix: exc.messages})
    return ValidationError(
        {
            (prefix if key in ("", "__all__", "non_field_errors") else f"{prefix}.{key}"): msgs
            for key, msgs in exc.message_dict.items()
        }
    )


def replay_draft_validate(*, project, kind: str, target: str, draft: Any) -> Draft:
    """Check a draft for ``project``. Raises ``ValidationError`` keyed by path: ``kind``,
    ``target``, ``draft`` or ``draft.<path>`` (``draft.document.caps.max_steps_per_run``,
    ``draft.config.grants.0.rules.1.when``, ``draft.grants.0.tool``)."""
    from agents.services import agent_config_resolve

    if kind not in ReplayDraftKind.values:
        raise ValidationError({"kind": [f"Choose one of: {', '.join(ReplayDraftKind.values)}."]})
    if not isinstance(draft, dict):
        raise ValidationError({"draft": ["Must be an object."]})
    if kind == ReplayDraftKind.POLICY:
        policy = Policy.objects.filter(project=project, slug=target).first()
        if policy is None and target != DEFAULT_POLICY_SLUG:
            raise ValidationError({"target": [f"No policy {target!r} in this project."]})
        document = draft.get("document")
        if set(draft) != {"document"} or not isinstance(document, str):
            raise ValidationError({"draft.document": ["The policy's YAML text is required."]})
        try:
            parsed = validate_policy_text(document)
        except ValidationError as exc:
            raise _prefixed(exc, "draft") from exc
        snapshot = PolicySnapshot(
            version_id=None, label=f"draft of {target}", document=parsed.document
        )
        return Draft(kind=kind, target=target, policy=policy, policy_snapshot=snapshot)

    agent = Agent.objects.filter(project=project, slug=target).select_related("active_version")
    agent = agent.first()
    if agent is None:
        raise ValidationError({"target": [f"No agent {target!r} in this project."]})
    if kind == ReplayDraftKind.GRANTS:
        if set(draft) != {"grants"} or not isinstance(draft["grants"], list):
            raise ValidationError({"draft.grants": ["Give the grant set as a list."]})
        if agent.active_version is None:
            raise ValidationError({"target": [f"Agent {target!r} has no active version."]})
        from agents.selectors import version_snapshot

        data = {**version_snapshot(agent.active_version), "grants": draft["grants"]}
        prefix = "draft"
    else:
        if set(draft) != {"config"}:
            raise ValidationError({"draft.config": ["Give the version's config."]})
        data, prefix = draft["config"], "draft.config"
    try:
        config = parse_config(data)
        endpoint, _tools, _delegates, policy, budget = agent_config_resolve(
            project, config, agent=agent
        )
    except ValidationError as exc:
        raise _prefixed(exc, prefix) from exc
    if kind == ReplayDraftKind.GRANTS:
        return Draft(kind=kind, target=target, agent=agent, grants=tuple(config.grants))
    return Draft(
        kind=kind,
        target=target,
        agent=agent,
        config=config,
        grants=tuple(config.grants),
        endpoint=endpoint,
        budget=budget,
        config_policy=policy,
    )


# --- the job ----------------------------------------------------------------------------------


def replay_job_create(
    *, project, kind: str, target: str, draft: Any, starts_at: datetime, ends_at: datetime, actor
) -> ReplayJob:
    """Validate the draft and the range, write the job row and queue it after commit.
    Raises ``ValidationError`` keyed by path (see ``replay_draft_validate``; ``ends_at``
    when the range is empty). Nothing is audited until the replay ends."""
    from agents.tasks import replay_job_run as replay_task

    replay_draft_validate(project=project, kind=kind, target=target, draft=draft)
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValidationError({"starts_at": ["Give times with a time zone."]})
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": ["Must be after starts_at."]})
    job = ReplayJob.objects.create(
        project=project,
        kind=kind,
        target=target,
        draft=draft,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    transaction.on_commit(lambda: _queue(job.pk, replay_task))
    return job


def _queue(job_id: int, task) -> None:
    try:
        task.delay(job_id)
    except Exception as exc:  # noqa: BLE001 - the broker is down: the job fails, visibly
        logger.exception("could not queue replay %s", job_id)
        ReplayJob.objects.filter(pk=job_id, status=ReplayStatus.QUEUED).update(
            status=ReplayStatus.FAILED,
            error=f"could not be queued ({type(exc).__name__}); try again",
            finished_at=timezone.now(),
        )


def replay_job_run(*, job_id: int) -> ReplayJob | None:
    """Run a queued job: claim it (conditional UPDATE queued -> running; None if another
    worker has it or it is gone), replay, store the result, audit ``replay.completed``
    (or ``replay.failed`` with the reason) as the user who asked for it."""
    claimed = ReplayJob.objects.filter(pk=job_id, status=ReplayStatus.QUEUED).update(
        status=ReplayStatus.RUNNING, started_at=timezone.now()
    )
    if claimed != 1:
        return None
    job = ReplayJob.objects.select_related("project", "created_by").get(pk=job_id)
    user = job.created_by
    actor = (
        Actor(kind="user", name=user.get_username(), user_id=user.pk, ref=str(user.pk))
        if user
        else None
    )
    try:
        draft = replay_draft_validate(
            project=job.project, kind=job.kind, target=job.target, draft=job.draft
        )
        report = replay(
            project=job.project,
            draft=draft,
            starts_at=job.starts_at,
            ends_at=job.ends_at,
            progress=lambda done, total: ReplayJob.objects.filter(pk=job.pk).update(
                done=done, total=total
            ),
        )
    except Exception as exc:  # noqa: BLE001 - the job fails with its reason, the task ends
        logger.exception("replay %s failed", job.pk)
        reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else type(exc).__name__
        ReplayJob.objects.filter(pk=job.pk).update(
            status=ReplayStatus.FAILED, error=reason[:2000], finished_at=timezone.now()
        )
        job.refresh_from_db()
        _audit(job, "replay.failed", {"error": reason[:300]}, actor)
        return job
    result = report.as_data()
    ReplayJob.objects.filter(pk=job.pk).update(
        status=ReplayStatus.COMPLETED,
        result=result,
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    _audit(job, "replay.completed", {"summary": result["summary"]}, actor)
    return job


def _audit(job: ReplayJob, action: str, data: dict[str, Any], actor: Actor | None) -> None:
    payload = {
        "kind": job.kind,
        "target": job.target,
        "starts_at": job.starts_at,
        "ends_at": job.ends_at,
        **data,
    }
    if actor is None:
        audit_record(action=action, obj=job, project=job.project, data=payload)
        return
    with acting_as(actor):
        audit_record(action=action, obj=job, project=job.project, data=payload)


# --- reading the record -----------------------------------------------------------------------


@dataclass
class _Turn:
    """A turn's stored conversation, indexed: tool call arguments by id, the k-th request's
    new prompt texts and the k-th response's text and tool call arguments."""

    turn: AgentTurn
    arguments: dict[str, Any]
    requests: list[tuple[str, ...]]
    responses: list[dict[str, Any]]
    tool_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    tokens: int = 0


def _load_turn(turn: AgentTurn) -> _Turn:
    from pydantic_ai.messages import (
        ModelMessagesTypeAdapter,
        ModelRequest,
        ModelResponse,
        RetryPromptPart,
        SystemPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    arguments: dict[str, Any] = {}
    requests: list[tuple[str, ...]] = []
    responses: list[dict[str, Any]] = []
    try:
        messages = ModelMessagesTypeAdapter.validate_python(turn.messages or [])
    except Exception:  # noqa: BLE001 - an unreadable conversation: its calls are skipped
        messages = []
    for message in messages:
        if isinstance(message, ModelRequest):
            texts = []
            for part in message.parts:
                if isinstance(part, UserPromptPart | SystemPromptPart) and isinstance(
                    part.content, str
                ):
                    texts.append(part.content)
                elif isinstance(part, ToolReturnPart):
                    texts.append(part.model_response_str())
                elif isinstance(part, RetryPromptPart):
                    texts.append(part.model_response())
            requests.append(tuple(texts))
        elif isinstance(message, ModelResponse):
            calls = []
            for part in message.parts:
                if isinstance(part, ToolCallPart):
                    args = part.args_as_dict()
                    arguments.setdefault(part.tool_call_id, args)
                    calls.append({"tool": part.tool_name, "arguments": args})
            text = [p.content for p in message.parts if isinstance(p, TextPart)]
            responses.append({"text": text, "tool_calls": calls})
    return _Turn(turn=turn, arguments=arguments, requests=requests, responses=responses)


class _Context:
    """Caches for one replay: turns, versions, grants, tools, policies, roles."""

    def __init__(self, project, draft: Draft):
        self.project = project
        self.draft = draft
        self.turns: dict[int, _Turn | None] = {}
        self.versions: dict[int, AgentVersion | None] = {}
        self.tools: dict[str, Tool | None] = {}
        self.grants: dict[tuple[int, int], GrantSpec | None] = {}
        self.policy_versions: dict[int, PolicySnapshot] = {}
        self.roles: dict[int, str] = {}
        self.policy_slugs: dict[int, str | None] = {}
        self.budgets: dict[tuple[int | None, int | None], tuple[Budget, ...]] = {}
        self.draft_grants = {
            grant.tool: GrantSpec(
                id=-(index + 1),
                effect=grant.effect,
                rules=tuple({"when": r.when, "then": r.then} for r in grant.rules),
                rate_limit_calls=grant.rate_limit_calls,
                rate_limit_window_seconds=grant.rate_limit_window_seconds,
                max_calls_per_run=grant.max_calls_per_run,
                approver_role=grant.approver_role,
                approval_quorum=grant.approval_quorum,
            )
            for index, grant in enumerate(draft.grants)
        }

    def turn(self, turn_id: Any) -> _Turn | None:
        if not isinstance(turn_id, int):
            return None
        if turn_id not in self.turns:
            turn = (
                AgentTurn.objects.filter(pk=turn_id, agent_version__agent__project=self.project)
                .select_related("user")
                .first()
            )
            self.turns[turn_id] = _load_turn(turn) if turn else None
        return self.turns[turn_id]

    def version(self, version_id: int) -> AgentVersion | None:
        if version_id not in self.versions:
            self.versions[version_id] = (
                AgentVersion.objects.filter(pk=version_id, agent__project=self.project)
                .select_related("agent", "model_endpoint", "policy", "budget")
                .first()
            )
        return self.versions[version_id]

    def tool(self, name: str) -> ToolSpec:
        if name not in self.tools:
            self.tools[name] = Tool.objects.filter(project=self.project, name=name).first()
        tool = self.tools[name]
        return tool_spec(tool) if tool else ToolSpec(id=0, name=name, input_schema={})

    def grant(self, version: AgentVersion, tool: ToolSpec) -> GrantSpec | None:
        key = (version.pk, tool.id)
        if key not in self.grants:
            row = ToolGrant.objects.filter(agent_version=version, tool_id=tool.id).first()
            self.grants[key] = grant_spec(row) if row else None
        return self.grants[key]

    def policy_version(self, version_id: int | None) -> PolicySnapshot:
        if version_id is None:
            return PolicySnapshot.defaults()
        if version_id not in self.policy_versions:
            row = PolicyVersion.objects.filter(pk=version_id).select_related("policy").first()
            self.policy_versions[version_id] = policy_snapshot(row)
        return self.policy_versions[version_id]

    def policy_at(self, policy: Policy | None, at: datetime) -> PolicySnapshot:
        """The snapshot of ``policy`` (None: the project's default) active at ``at``."""
        if policy is None:
            policy = Policy.objects.filter(project=self.project, slug=DEFAULT_POLICY_SLUG).first()
        if policy is None:
            return PolicySnapshot.defaults()
        version = policy_version_active_at(policy=policy, at=at)
        if version is None:
            return PolicySnapshot.defaults()
        return self.policy_version(version.pk)

    def policy_slug(self, snapshot: PolicySnapshot, version: AgentVersion) -> str:
        """The slug of the policy a snapshot belongs to (the built-in defaults stand in
        for the version's own policy, or ``default``)."""
        if snapshot.version_id is not None:
            if snapshot.version_id not in self.policy_slugs:
                row = PolicyVersion.objects.filter(pk=snapshot.version_id)
                self.policy_slugs[snapshot.version_id] = row.values_list(
                    "policy__slug", flat=True
                ).first()
            if self.policy_slugs[snapshot.version_id] is not None:
                return self.policy_slugs[snapshot.version_id]
        return version.policy.slug if version.policy_id else DEFAULT_POLICY_SLUG

    def role(self, user) -> str:
        if user is None:
            return ""
        if user.pk not in self.roles:
            self.roles[user.pk] = (
                Membership.objects.filter(user=user, project=self.project)
                .values_list("role", flat=True)
                .first()
                or ""
            )
        return self.roles[user.pk]

    # --- the two sides ---------------------------------------------------------------------

    def draft_policy_for(self, baseline: PolicySnapshot, version: AgentVersion, at: datetime):
        """The draft's policy for a call whose baseline policy is ``baseline``."""
        draft = self.draft
        if draft.kind == ReplayDraftKind.POLICY:
            return draft.policy_snapshot
        if draft.kind == ReplayDraftKind.GRANTS:
            return baseline
        named = draft.config_policy
        current = version.policy if version.policy_id else None
        if (named.pk if named else None) == (current.pk if current else None):
            return baseline
        return self.policy_at(named, at)

    def model_side(self, version: AgentVersion, policy: PolicySnapshot, user, *, draft: bool):
        from agents.pricing import endpoint_provider
        from governance.budgets import applicable_budgets
        from governance.pricing import estimate_worst_case_usd

        endpoint, model_name = version.model_endpoint, version.model_name
        max_output, budget = version.max_output_tokens, version.budget
        if draft and self.draft.kind == ReplayDraftKind.AGENT_VERSION:
            config = self.draft.config
            endpoint, model_name = self.draft.endpoint, config.model_name
            max_output, budget = config.max_output_tokens, self.draft.budget

        def price(prompt_tokens: int, max_output_tokens: int) -> Decimal:
            override = (endpoint.price_overrides or {}).get(model_name)
            return estimate_worst_case_usd(
                endpoint_provider(endpoint),
                model_name,
                prompt_tokens=prompt_tokens,
                max_output_tokens=max_output_tokens,
                override=override,
            ).cost_usd

        key = (getattr(user, "pk", None), getattr(budget, "pk", None))
        if key not in self.budgets:
            self.budgets[key] = tuple(applicable_budgets(self.project, user, budget))
        return ModelSide(
            policy=policy,
            endpoint=endpoint.name,
            max_output_tokens=max_output,
            budgets=self.budgets[key],
            price=price,
        )


def _recorded_events(project, draft: Draft, starts_at: datetime, ends_at: datetime):
    actions = ["tool.decision"]
    if draft.kind != ReplayDraftKind.GRANTS:  # grants change no model call
        actions.append("model.call")
    events = AuditEvent.objects.filter(
        project=project,
        action__in=actions,
        object_type=VERSION_OBJECT_TYPE,
        occurred_at__gte=starts_at,
        occurred_at__lt=ends_at,
    )
    if draft.agent is not None:
        ids = [str(pk) for pk in draft.agent.versions.values_list("pk", flat=True)]
        events = events.filter(object_id__in=ids)
    return events.order_by("sequence")


def replay(*, project, draft: Draft, starts_at: datetime, ends_at: datetime, progress=None):
    """Re-decide every recorded tool and model call of ``[starts_at, ends_at)`` that the
    draft concerns (its agent's, or those under its policy) and return the
    ``ReplayReport``. ``progress(done, total)`` is called every ``PROGRESS_EVERY`` calls.
    Writes nothing."""
    report = ReplayReport(limitations=list(LIMITATIONS))
    ctx = _Context(project, draft)
    events = _recorded_events(project, draft, starts_at, ends_at)
    total = min(events.count(), MAX_RANGE_EVENTS)
    if total == MAX_RANGE_EVENTS:
        report.limitations.append(
            f"Only the first {MAX_RANGE_EVENTS} recorded calls of the range were replayed."
        )
    if progress:
        progress(0, total)
    for done, event in enumerate(events[:MAX_RANGE_EVENTS].iterator(chunk_size=500), start=1):
        _replay_event(ctx, report, event)
        if progress and done % PROGRESS_EVERY == 0:
            progress(done, total)
    if progress:
        progress(total, total)
    return report


def _replay_event(ctx: _Context, report: ReplayReport, event: AuditEvent) -> None:
    data = event.data or {}
    if "withheld" in data:
        report.skip("audit data withheld by the PII policy")
        return
    version = ctx.version(int(event.object_id)) if event.object_id.isdigit() else None
    record = ctx.turn(data.get("turn_id"))
    if version is None or record is None:
        report.skip("turn or agent version no longer stored")
        return
    turn = record.turn
    ref = {
        "agent": version.agent.slug,
        "agent_version": version.number,
        "turn_id": turn.pk,
        "run_id": turn.run_id,
        "audit_sequence": event.sequence,
    }
    if event.action == "model.call":
        _replay_model_call(ctx, report, event, version, record, ref)
    else:
        _replay_tool_call(ctx, report, event, version, record, ref)


def _replay_tool_call(ctx, report, event, version, record: _Turn, ref) -> None:
    data = event.data
    tool_call_id = data.get("tool_call_id") or ""
    record.tool_calls += 1
    if tool_call_id not in record.arguments:
        report.skip("tool call arguments not in the stored conversation")
        return
    baseline_policy = ctx.policy_version(data.get("policy_version_id"))
    if ctx.draft.kind == ReplayDraftKind.POLICY and (
        ctx.policy_slug(baseline_policy, version) != ctx.draft.target
    ):
        return  # decided under another policy: the draft does not concern it
    tool = ctx.tool(str(data.get("tool", "")))
    turn = record.turn
    call = RecordedToolCall(
        project_id=ctx.project.pk,
        occurred_at=event.occurred_at,
        tool=tool,
        arguments=record.arguments[tool_call_id],
        agent={"slug": version.agent.slug, "version": version.number},
        run={
            "id": turn.run_id or f"turn-{turn.pk}",
            "trace_id": "",
            "tool_calls": record.tool_calls,
        },
        project={"slug": ctx.project.slug},
        user={
            "username": turn.user.get_username() if turn.user else "",
            "role": ctx.role(turn.user),
        },
        usage={"cost_usd": str(record.cost_usd), "tokens": record.tokens},
        recorded_effect=str(data.get("effect", "")),
        recorded_rule=str(data.get("rule", "")),
        ref={**ref, "tool": tool.name, "tool_call_id": tool_call_id},
    )
    baseline = ToolSide(grant=ctx.grant(version, tool), policy=baseline_policy)
    # A policy draft keeps the recorded grants; agent drafts bring their own.
    by_policy = ctx.draft.kind == ReplayDraftKind.POLICY
    draft_grant = baseline.grant if by_policy else ctx.draft_grants.get(tool.name)
    draft = ToolSide(
        grant=draft_grant,
        policy=ctx.draft_policy_for(baseline_policy, version, event.occurred_at),
    )
    report.add_tool_call(call, baseline, draft)


def _replay_model_call(ctx, report, event, version, record: _Turn, ref) -> None:
    data = event.data
    usage = data.get("usage") or {}
    try:
        record.cost_usd += Decimal(str(data.get("cost_usd", "0")))
        record.tokens += int(usage.get("input", 0)) + int(usage.get("output", 0))
    except (ArithmeticError, TypeError, ValueError):
        pass
    call_id = str(data.get("call_id", ""))
    index = call_id.rsplit(":", 1)[-1]
    if not index.isdigit() or int(index) >= min(len(record.requests), len(record.responses)):
        report.skip("model call not in the stored conversation")
        return
    index = int(index)
    turn = record.turn
    baseline_policy = ctx.policy_at(
        version.policy if version.policy_id else None, event.occurred_at
    )
    if ctx.draft.kind == ReplayDraftKind.POLICY and (
        ctx.policy_slug(baseline_policy, version) != ctx.draft.target
    ):
        return
    texts = record.requests[index]
    if index == 0 and version.instructions:
        texts = (version.instructions, *texts)
    call = RecordedModelCall(
        project_id=ctx.project.pk,
        occurred_at=event.occurred_at,
        request_texts=texts,
        response_data=record.responses[index],
        prompt_tokens=int(usage.get("input_estimated") or usage.get("input") or 0),
        user_id=turn.user_id,
        recorded_cost_usd=Decimal(str(data.get("cost_usd", "0"))),
        ref={**ref, "call_id": call_id, "endpoint": data.get("endpoint")},
    )
    baseline = ctx.model_side(version, baseline_policy, turn.user, draft=False)
    draft_policy = ctx.draft_policy_for(baseline_policy, version, event.occurred_at)
    draft = ctx.model_side(version, draft_policy, turn.user, draft=True)
    report.add_model_call(call, baseline, draft)
