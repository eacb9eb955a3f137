"""Governed model calls, in one place: every request an agent's model makes goes through
``GovernedModel.request``.

Order (fail closed at each step): the turn's stop check (``TurnContext.stop_check``, when
the turn has one: ``TurnStopped``, nothing sent) -> the endpoint allowed by the policy
(``allowed_model_endpoints``) -> PII scan of the outgoing messages (``model_input``:
redact or block) -> budget reservation of the worst case (prompt tokens + the version's
``max_output_tokens``; no price, no call) -> the provider call -> settle the reservation and
write the ``CostEntry`` from the real usage -> PII scan of the response (``model_output``)
-> audit ``model.call`` with tokens, cost, latency and the model's stated reason.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from agents.pricing import endpoint_provider
from agents.runtime.context import TurnContext
from agents.runtime.tokens import messages_tokens
from governance.budgets import (
    applicable_budgets,
    budget_release,
    budget_reserve,
    budget_settle,
    cost_record,
)
from governance.pricing import estimate_worst_case_usd, price_usage
from governance.services import audit_record

REASON_MAX_CHARS = 500


class ModelCallRefused(Exception):
    """A model request governance refused (``rule``: ``model.endpoint_not_allowed``,
    ``pii.model_input``, ``pii.model_output``, ``budget.unpriced``, ``budget.exceeded``,
    ``budget.error``); the turn ends failed with this reason."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule
        self.message = message


def _scan_text(ctx: TurnContext, text: str, direction: str):
    """``governance.pii.scan`` of ``text`` once per turn and direction (the history is sent
    again with every request)."""
    from governance.pii import scan

    key = (direction, text)
    result = ctx.scanned.get(key)
    if result is None:
        result = scan(text, direction, ctx.pii_policy)
        ctx.scanned[key] = result
    return result


def _scan_parts(ctx: TurnContext, messages: list[ModelMessage]) -> tuple[list[ModelMessage], list]:
    """The messages with every prompt and tool return scanned for ``model_input``;
    returns the (possibly redacted) messages and the findings. Raises ``ModelCallRefused``
    on a block or a failed scan."""
    findings: list = []
    out: list[ModelMessage] = []
    for message in messages:
        if not isinstance(message, ModelRequest):
            out.append(message)
            continue
        parts = []
        for part in message.parts:
            if isinstance(part, UserPromptPart | SystemPromptPart) and isinstance(
                part.content, str
            ):
                text = part.content
            elif isinstance(part, ToolReturnPart):
                text = part.model_response_str()
            else:
                parts.append(part)
                continue
            result = _scan_text(ctx, text, "model_input")
            findings += list(result.findings)
            if result.action == "block" or result.error:
                raise ModelCallRefused(
                    "pii.model_input",
                    result.error or "the prompt holds data the policy blocks toward models",
                )
            if result.text_out != text:
                part = replace(part, content=result.text_out)
            parts.append(part)
        out.append(replace(message, parts=parts))
    return out, findings


def _scan_response(ctx: TurnContext, response: ModelResponse) -> tuple[ModelResponse, list]:
    from governance.pii import scan_data

    findings: list = []
    parts = []
    for part in response.parts:
        if isinstance(part, TextPart):
            result = _scan_text(ctx, part.content, "model_output")
            findings += list(result.findings)
            if result.action == "block" or result.error:
                raise ModelCallRefused("pii.model_output", "the response holds blocked data")
            if result.text_out != part.content:
                part = replace(part, content=result.text_out)
        elif isinstance(part, ToolCallPart):
            result = scan_data(part.args_as_dict(), "model_output", ctx.pii_policy)
            findings += list(result.findings)
            if result.action == "block" or result.error:
                raise ModelCallRefused("pii.model_output", "a tool call holds blocked data")
            if result.findings:
                part = replace(part, args=result.value_out)
        parts.append(part)
    return replace(response, parts=parts), findings


class GovernedModel(WrapperModel):
    """The agent's provider model behind the governed path (see the module docstring).

    Raises ``ModelCallRefused`` when governance refuses a request (nothing is sent) and
    re-raises provider errors after releasing the reservation. The provider receives the
    scanned (possibly redacted) messages, never the originals."""

    def __init__(self, wrapped, *, ctx: TurnContext):
        super().__init__(wrapped)
        self.ctx = ctx

    @property
    def model_name(self) -> str:
        return self.wrapped.model_name

    @property
    def system(self) -> str:
        return self.wrapped.system

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        ctx = self.ctx
        if ctx.should_stop is not None:  # raises TurnStopped: nothing is sent
            await sync_to_async(ctx.stop_check)("model", index=ctx.model_requests)
        index = ctx.model_requests
        ctx.model_requests += 1
        call_id = ctx.call_id("model", index)
        prepared = await sync_to_async(self._before)(messages, model_request_parameters, call_id)
        sent, findings_in, prompt_tokens = prepared
        started = time.monotonic()
        try:
            response = await self.wrapped.request(sent, model_settings, model_request_parameters)
        except Exception as exc:
            await sync_to_async(self._failed)(call_id, exc)
            raise
        latency_ms = (time.monotonic() - started) * 1000
        listed = {t.name for t in model_request_parameters.function_tools}
        return await sync_to_async(self._after)(
            response, call_id, findings_in, prompt_tokens, latency_ms, listed
        )

    # --- sync halves (database) ------------------------------------------------------------

    def _refuse(self, rule: str, message: str, **data: Any) -> None:
        ctx = self.ctx
        audit_record(
            action="model.call.refused",
            obj=ctx.version,
            project=ctx.project,
            data={
                "rule": rule,
                "message": message,
                "turn_id": ctx.turn.pk,
                "run_id": ctx.run_id,
                **data,
            },
        )
        ctx.events.append({"event": "model.refused", "rule": rule, "message": message})
        raise ModelCallRefused(rule, message)

    def _before(self, messages, params: ModelRequestParameters, call_id: str):
        ctx = self.ctx
        version, endpoint = ctx.version, ctx.version.model_endpoint
        if not ctx.policy.document.allows_model_endpoint(endpoint.name):
            self._refuse(
                "model.endpoint_not_allowed",
                f"the policy does not allow model endpoint {endpoint.name}",
            )
        findings: list = []
        if ctx.pii:
            try:
                messages, findings = _scan_parts(ctx, messages)
            except ModelCallRefused as exc:
                self._refuse(exc.rule, exc.message)
        prompt_tokens = messages_tokens(messages, version.instructions)
        override = (endpoint.price_overrides or {}).get(version.model_name)
        try:
            worst = estimate_worst_case_usd(
                endpoint_provider(endpoint),
                version.model_name,
                prompt_tokens=prompt_tokens,
                max_output_tokens=version.max_output_tokens,
                override=override,
            )
        except Exception as exc:  # noqa: BLE001 - no price, no call
            self._refuse("budget.unpriced", f"the model has no price ({type(exc).__name__})")
        from governance.budgets import BudgetExceeded

        try:
            if ctx.budgets is None:  # read once per turn
                ctx.budgets = list(applicable_budgets(ctx.project, ctx.user, version.budget))
            refused = None
            with ctx.batch():
                try:
                    budget_reserve(
                        call_id=call_id,
                        project=ctx.project,
                        budgets=ctx.budgets,
                        amount_usd=worst.cost_usd,
                    )
                except BudgetExceeded as exc:
                    # Inside the batch: its refusal event and the deferred writes commit.
                    refused = exc
            if refused is not None:
                raise refused
        except BudgetExceeded as exc:
            ctx.events.append(
                {"event": "model.refused", "rule": "budget.exceeded", "budget": exc.budget.name}
            )
            raise ModelCallRefused(
                "budget.exceeded", f"budget {exc.budget.name} would go over its limit"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - fail closed
            self._refuse("budget.error", f"the budget check failed ({type(exc).__name__})")
        return messages, findings, prompt_tokens

    def _failed(self, call_id: str, exc: Exception) -> None:
        ctx = self.ctx
        budget_release(call_id=call_id)
        audit_record(
            action="model.call.failed",
            obj=ctx.version,
            project=ctx.project,
            data={
                "call_id": call_id,
                "error": type(exc).__name__,
                "turn_id": ctx.turn.pk,
                "run_id": ctx.run_id,
                "endpoint": ctx.version.model_endpoint.name,
                "model": ctx.version.model_name,
            },
        )

    def _after(
        self, response: ModelResponse, call_id, findings_in, prompt_tokens, latency_ms, listed
    ):
        ctx = self.ctx
        version, endpoint = ctx.version, ctx.version.model_endpoint
        usage = response.usage
        priced = price_usage(
            endpoint_provider(endpoint),
            version.model_name,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            override=(endpoint.price_overrides or {}).get(version.model_name),
        )
        # The response is scanned first (no database), then the settlement, the ledger
        # entry and the model.call event commit together.
        findings_out: list = []
        refused = None
        if ctx.pii:
            try:
                response, findings_out = _scan_response(ctx, response)
            except ModelCallRefused as exc:
                refused = exc
        with ctx.batch():
            budget_settle(call_id=call_id, actual_usd=priced.cost_usd, project=ctx.project)
            cost_record(
                call_id=call_id,
                kind="model",
                project=ctx.project,
                priced=priced,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                provider=endpoint_provider(endpoint),
                model=version.model_name,
                user=ctx.user if getattr(ctx.user, "pk", None) else None,
                agent=version.agent,
                agent_version=version,
                run_id=ctx.run_id,
                step_id=ctx.step_id,
            )
            has_calls = any(isinstance(p, ToolCallPart) for p in response.parts)
            reason = " ".join(p.content for p in response.parts if isinstance(p, TextPart))
            data = {
                "call_id": call_id,
                "turn_id": ctx.turn.pk,
                "run_id": ctx.run_id,
                "endpoint": endpoint.name,
                "model": version.model_name,
                # Tokens under "usage": the audit log masks keys that contain "token".
                "usage": {
                    "input": usage.input_tokens,
                    "output": usage.output_tokens,
                    "input_estimated": prompt_tokens,
                },
                "cost_usd": priced.cost_usd,
                "latency_ms": round(latency_ms, 3),
                "tool_calls": [p.tool_name for p in response.parts if isinstance(p, ToolCallPart)],
                "reason": reason[:REASON_MAX_CHARS] if has_calls and reason else None,
                "pii_in": sorted({f.entity_type for f in findings_in}),
                "pii_out": sorted({f.entity_type for f in findings_out}),
                # Counts per type for the decision log (never the values).
                "pii_in_counts": dict(Counter(f.entity_type for f in findings_in)),
                "pii_out_counts": dict(Counter(f.entity_type for f in findings_out)),
            }
            audit_record(action="model.call", obj=version, project=ctx.project, data=data)
        ctx.cost_usd += Decimal(priced.cost_usd)
        ctx.tokens += usage.input_tokens + usage.output_tokens
        ctx.events.append({"event": "model.call", **data})
        if refused is not None:
            self._refuse(refused.rule, refused.message)
        for part in response.parts:
            if isinstance(part, ToolCallPart) and part.tool_name not in listed:
                self._unlisted_tool(part)
        return response

    def _unlisted_tool(self, part: ToolCallPart) -> None:
        """A call of a tool the agent was not given: pydantic-ai answers "unknown tool" to
        the model and never reaches the toolset, so its (deny) decision is audited here."""
        from agents.governed import decide_for_version
        from agents.runtime.context import args_hash

        ctx = self.ctx
        decision = decide_for_version(
            version=ctx.version,
            tool_name=part.tool_name,
            arguments=part.args_as_dict(),
            run={"id": ctx.run_id, "trace_id": "", "tool_calls": ctx.tool_calls},
            user=ctx.user,
            policy=ctx.policy,
            dry_run=True,
        )
        data = {
            "tool": part.tool_name,
            "tool_call_id": part.tool_call_id,
            "turn_id": ctx.turn.pk,
            "run_id": ctx.run_id,
            "args_hash": args_hash(part.args_as_dict()),
            **decision.as_data(),
        }
        audit_record(action="tool.decision", obj=ctx.version, project=ctx.project, data=data)
        ctx.events.append({"event": "tool.decision", **data})
