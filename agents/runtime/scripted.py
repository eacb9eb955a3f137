"""The ``scripted`` model endpoint kind: a deterministic model on pydantic-ai's ``FunctionModel``.

It answers from ``ModelEndpoint.script`` (``agents.config.ScriptedModelScript``), so tests,
demos and red-team scenarios drive exact tool-call sequences through the real governed
path. Its usage is counted with a real tokenizer (``agents.runtime.tokens``), so budgets
and the cost ledger see realistic numbers priced by the endpoint's price overrides.
"""

from __future__ import annotations

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


def script_response(script: ScriptedModelScript, messages: list[ModelMessage]) -> ScriptedResponse:
    """The scripted response for the next request of ``messages`` (see
    ``ScriptedModelScript`` for the rule)."""
    text, position = _latest_input(messages)
    responses = script.responses
    for branch in script.branches:
        if branch.input_contains.lower() in text.lower():
            responses = branch.responses
            break
    if position < len(responses):
        return responses[position]
    finals = [r for r in responses if r.text is not None]
    return finals[-1] if finals else ScriptedResponse(text=EXHAUSTED_TEXT)


def scripted_model(*, script: ScriptedModelScript, model_name: str) -> FunctionModel:
    """A ``FunctionModel`` answering from ``script``. Tool call ids are
    ``scripted-<message index>-<call index>``: unique in a conversation and stable, so a
    parked turn resumes with the same ids. Usage: input tokens = the instructions and every
    message part, output tokens = the response parts (cl100k_base)."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
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
