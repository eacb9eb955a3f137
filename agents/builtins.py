"""Built-in tools: Python callables registered in code with ``@builtin_tool``.

A built-in receives the validated arguments as keyword arguments and returns a
JSON-able value. Register in a module imported at start-up (``agents.apps``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    name: str
    function: Callable[..., Any]
    description: str
    input_schema: dict


registry: dict[str, BuiltinTool] = {}


def builtin_tool(*, name: str, input_schema: dict, description: str = ""):
    """Register the decorated function as the built-in tool ``name``.

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
