"""Small shared pieces of the flows UI/API/trigger tests: a light world (a built-in echo
tool and an agent granted it) and definitions that use it."""

from __future__ import annotations

from agents.services import tool_create
from flows.models import Flow
from flows.services import flow_create

from .conftest import TEXT_SCHEMA, make_agent

ECHO = """
description: Echo the topic twice.
steps:
  - id: first
    kind: tool
    tool: echo
    agent: operator
    arguments: {text: "{{ input.topic }}"}
  - id: second
    kind: tool
    tool: echo
    agent: operator
    depends_on: [first]
    arguments: {text: "again {{ steps.first.text }}"}
"""

# The step fails on purpose: echo's schema requires ``text``.
BROKEN = """
steps:
  - id: bad
    kind: tool
    tool: echo
    agent: operator
    arguments: {}
"""

INVALID = """
steps:
  - id: a
    kind: tool
    tool: nope
    agent: operator
    depends_on: [missing]
  - id: a
    kind: approval
"""


def echo_world(project, actor):
    """A built-in ``echo`` tool and the ``operator`` agent granted it (scripted model)."""
    tool_create(
        project=project, name="echo", kind="builtin", builtin_name="echo", input_schema=TEXT_SCHEMA
    )
    return make_agent(
        project,
        actor,
        "operator",
        script={"responses": [{"text": "ok"}]},
        grants=[{"tool": "echo"}],
    )


def echo_flow(project, actor, slug: str = "echo") -> Flow:
    return flow_create(project=project, slug=slug, source=ECHO, actor=actor)
