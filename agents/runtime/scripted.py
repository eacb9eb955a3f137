"""The ``scripted`` model endpoint kind: a deterministic model on pydantic-ai's ``FunctionModel``.

It answers from ``ModelEndpoint.script`` (``agents.config.ScriptedModelScript``), so tests,
demos and red-team scenarios drive exact tool-call sequences through the real governed
path. Its usage is counted with a real tokenizer (``agents.runtime.tokens``), so budgets
and the cost ledger see realistic numbers priced by the endpoint's price overrides.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from agents.config import ScriptedModelScript, ScriptedResponse
from agents.runtime.tokens import count_tokens, messages_tokens, part_text
from agents.runtime.toolset import provider_safe_name

EXHAUSTED_TEXT = "(the script has no more responses)"


def _latest_input(messages: list[ModelMessage]) -> tuple[str, int]:
    """The latest user input and how many model responses came after it."""
    text, responses = "", 0
    for message in messages:
        if isinstance(message, ModelRequest):
            prompts = [p for p in message.parts if isinstance(p, UserPromptPart)]
            if prompts:
                text = " ".join(p.content if isinstance(p.content, str) else "" for p in prompts)
                responses = 0
        elif isinstance(message, ModelResponse):
            responses += 1
    return text, responses


class ScriptCaptureMissing(ValueError):
    """A response uses ``${name}`` but the capture ``name`` did not match the input."""


_PLACEHOLDER_RE = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


def _branch_matches(branch, text: str) -> bool:
    if branch.input_contains is not None:
        return branch.input_contains.lower() in text.lower()
    return re.search(branch.input_matches, text, re.IGNORECASE) is not None


def script_captures(script: ScriptedModelScript, text: str) -> dict[str, str]:
    """The script's ``captures`` found in ``text``: name -> first group (or whole match)."""
    found = {}
    for name, pattern in script.captures.items():
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            found[name] = match.group(1) if match.re.groups else match.group(0)
    return found


def _fill(value: Any, captures: dict[str, str]) -> Any:
    if isinstance(value, str):

        def replace_one(match: re.Match) -> str:
            name = match.group(1)
            if name not in captures:
                raise ScriptCaptureMissing(
                    f"the script's capture {name!r} found nothing in the input"
                )
            return captures[name]

        return _PLACEHOLDER_RE.sub(replace_one, value)
    if isinstance(value, list):
        return [_fill(item, captures) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, captures) for key, item in value.items()}
    return value


def script_response(script: ScriptedModelScript, messages: list[ModelMessage]) -> ScriptedResponse:
    """The scripted response for the next request of ``messages`` (see
    ``ScriptedModelScript`` for the rule), with ``${capture}`` placeholders filled from the
    latest input. Raises ``ScriptCaptureMissing``."""
    text, position = _latest_input(messages)
    responses = script.responses
    for branch in script.branches:
        if _branch_matches(branch, text):
            responses = branch.responses
            break
    if position < len(responses):
        chosen = responses[position]
    else:
        finals = [r for r in responses if r.text is not None]
        chosen = finals[-1] if finals else ScriptedResponse(text=EXHAUSTED_TEXT)
    if not script.captures:
        return chosen
    captures = script_captures(script, text)
    return chosen.model_copy(
        update={
            "text": _fill(chosen.text, captures),
            "tool_calls": [
                call.model_copy(update={"arguments": _fill(call.arguments, captures)})
                for call in chosen.tool_calls
            ],
        }
    )


def _record(model_name: str, messages: list[ModelMessage], instructions: str | None) -> None:
    """Append what the model received to ``settings.SCRIPTED_MODEL_RECORD_FILE`` (one JSON
    line per request: model name, instructions, every request part's text), when set: the
    demo's tests check no blocked value ever reaches a model."""
    path = getattr(settings, "SCRIPTED_MODEL_RECORD_FILE", "")
    if not path:
        return
    texts = [
        part_text(part)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
    ]
    line = json.dumps({"model": model_name, "instructions": instructions or "", "parts": texts})
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def scripted_model(*, script: ScriptedModelScript, model_name: str) -> FunctionModel:
    """A ``FunctionModel`` answering from ``script``. Tool call ids are
    ``scripted-<message index>-<call index>``: unique in a conversation and stable, so a
    parked turn resumes with the same ids. Usage: input tokens = the instructions and every
    message part, output tokens = the response parts (cl100k_base)."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        _record(model_name, messages, info.instructions)
        chosen = script_response(script, messages)
        # Scripts name tools as registered; the model is offered provider-safe names.
        offered = {t.name for t in info.function_tools}
        if chosen.tool_calls:
            parts = [
                ToolCallPart(
                    tool_name=call.name
                    if call.name in offered or provider_safe_name(call.name) not in offered
                    else provider_safe_name(call.name),
                    args=dict(call.arguments),
                    tool_call_id=f"scripted-{len(messages)}-{index}",
                )
                for index, call in enumerate(chosen.tool_calls)
            ]
        else:
            parts = [TextPart(content=chosen.text or "")]
        usage = RequestUsage(
            input_tokens=messages_tokens(messages, info.instructions),
            output_tokens=sum(count_tokens(part_text(part)) for part in parts),
        )
        return ModelResponse(parts=parts, usage=usage, model_name=model_name)

    return FunctionModel(respond, model_name=model_name)
