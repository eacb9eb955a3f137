"""Built-in tools: Python callables registered in code with ``@builtin_tool``.

A built-in receives the validated arguments as keyword arguments and returns a
JSON-able value. Register in a module imported at start-up (``agents.apps``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BuiltinCall:
    """What a built-in registered with ``takes_call=True`` receives as ``call``: the
    project of the tool, the tool's name and the governed call's idempotency key ("" when
    the caller gave none)."""

    project_id: int
    tool_name: str
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    name: str
    function: Callable[..., Any]
    description: str
    input_schema: dict
    takes_call: bool = False


registry: dict[str, BuiltinTool] = {}


def builtin_tool(*, name: str, input_schema: dict, description: str = "", takes_call: bool = False):
    """Register the decorated function as the built-in tool ``name``. With ``takes_call``
    it also receives ``call`` (a ``BuiltinCall``: project, idempotency key).

    Raises ``ValueError`` if ``name`` is already taken by another function.
    """

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        existing = registry.get(name)
        if existing is not None and existing.function is not function:
            raise ValueError(f"built-in tool {name!r} is already registered")
        registry[name] = BuiltinTool(
            name=name,
            function=function,
            description=description or (function.__doc__ or "").strip().split("\n")[0],
            input_schema=input_schema,
            takes_call=takes_call,
        )
        return function

    return register


@builtin_tool(
    name="echo",
    description="Return the given text unchanged (for tests and demos).",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
def echo(*, text: str) -> dict:
    return {"text": text}


@builtin_tool(
    name="calculator.add",
    description="Add two numbers.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
)
def add(*, a: float, b: float) -> dict:
    return {"sum": a + b}


# The demo's tools (kb_search, customer_lookup, issue_refund, send_email, pii_scan,
# pii_report): registered on import, like the ones above.
from agents import demo_tools  # noqa: E402, F401
