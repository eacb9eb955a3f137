"""The agent runtime: one agent turn on pydantic-ai with every model and tool call governed.

``run_agent_turn`` (``turn.py``) is the entry point; ``GovernedModel``
(``governed_model.py``) and ``GovernedToolset`` (``toolset.py``) are the one place each for
model calls and tool calls; ``scripted.py`` is the scripted endpoint kind.
"""

from agents.runtime.turn import ApprovalDecision, Resume, TurnResult, run_agent_turn

__all__ = ["ApprovalDecision", "Resume", "TurnResult", "run_agent_turn"]
