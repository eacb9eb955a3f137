"""What one agent turn carries through its governed model and tool calls."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agents.models import AgentTurn, AgentVersion
from governance.engine import PolicySnapshot
from governance.pii import PiiPolicy
from governance.services import audit_batch

# The rule of a turn that ended because its ``should_stop`` check said stop.
STOPPED_RULE = "cancelled"


class TurnStopped(Exception):
    """The turn's ``should_stop`` check answered ``reason`` at a call boundary: nothing
    more is sent or executed; ``run_agent_turn`` ends the turn failed with rule
    ``cancelled``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def args_hash(arguments: Any) -> str:
    """SHA-256 of the canonical JSON of ``arguments`` (sorted keys, no spaces): what an
    approval is bound to."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TurnContext:
    """One turn's state, shared by ``GovernedModel`` and ``GovernedToolset``.

    ``run_id`` keys the per-run counters (a standalone turn uses ``turn-<id>``);
    ``events`` is the turn's transcript of decisions and calls (JSON-able dicts, also the
    ``agent_run`` command's output); ``pending`` the calls parked for approval;
    ``approved`` the pending entries of a resumed turn, by tool call id; ``depth`` 0 for
    a turn, 1 for a delegate's turn, and so on; ``should_stop`` (optional) is asked
    before each model request and each tool call (``stop_check``) and answers a reason
    to stop, or ``None``; ``key_scope`` (optional, e.g. ``flow-run:7:step:42``) makes
    tool calls' idempotency keys independent of the turn (``tool_key_source``).
    """

    version: AgentVersion
    turn: AgentTurn
    policy: PolicySnapshot
    run_id: str
    step_id: str = ""
    user: Any = None
    pii: bool = True
    depth: int = 0
    # The turn a delegation chain started from (None: this turn). Approval requests of a
    # delegate's calls name it, so whoever resumes parked turns resumes the top one, which
    # resumes its parked delegates (agents.runtime.delegation).
    root_turn_id: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    approved: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost_usd: Decimal = Decimal(0)
    tokens: int = 0
    model_requests: int = 0
    tool_calls: int = 0
    scanned: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Read once per turn (grants are immutable with their version): the granted tools'
    # grants by tool name (tool loaded), the user's role in the project, the budgets
    # that apply to the turn's model calls (None: not read yet).
    grants: dict[str, Any] = field(default_factory=dict)
    user_role: str | None = None
    budgets: list[Any] | None = None
    # None: a tool execution's outcome (breaker count and ``tool.executed`` audit event)
    # is written at once, in its own transaction. A list: the writes are appended as
    # callables and ride along with the turn's next commit (``batch``: the
    # next tool decision, model reservation or settlement, the turn's end; a flow tool
    # step records them with the step), one commit less per tool call. Decisions and
    # reservations are never deferred: they commit before the call they allow.
    deferred_writes: list[Callable[[], None]] | None = None
    should_stop: Callable[[], str | None] | None = None
    key_scope: str = ""
    # Executed calls per (tool name, arguments hash): the occurrence in key_scope's keys.
    call_occurrences: Counter = field(default_factory=Counter)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """An ``audit_batch`` that first writes the deferred writes: they commit with it, or,
        when it rolls back (an exception leaves the block), stay for the next batch."""
        writes = list(self.deferred_writes or ())
        if self.deferred_writes:
            self.deferred_writes.clear()
        try:
            with audit_batch():
                for write in writes:
                    write()
                yield
        except BaseException:
            if self.deferred_writes is not None:
                self.deferred_writes[:0] = writes
            raise

    @property
    def root_id(self) -> int:
        return self.root_turn_id or self.turn.pk

    @property
    def project(self):
        return self.version.agent.project

    @property
    def pii_policy(self) -> PiiPolicy:
        return self.policy.document.pii_policy

    def call_id(self, kind: str, index: int | str) -> str:
        """A call id unique per turn, run and step: the budget reservation, the cost entry
        and the idempotency key of the call."""
        return f"{kind}:{self.run_id}:{self.step_id or '-'}:{self.turn.pk}:{index}"

    def tool_key_source(self, name: str, arguments: Any, tool_call_id: str) -> str:
        """What the idempotency key of an executed tool call hashes. Without ``key_scope``
        (a standalone turn): ``call_id("tool", tool_call_id)`` (run, step, turn, call id).
        With it: ``tool:<key_scope>:<name>:<args_hash>:<n>``, ``n`` counting this turn's
        earlier executed calls of the same tool with the same arguments; so a turn run
        again for the same scope (a flow step re-run after its worker died) repeats the
        keys of the calls it repeats, whatever the model's call ids and whatever other
        calls it makes before them. Counts the call: ask once per execution."""
        if not self.key_scope:
            return self.call_id("tool", tool_call_id)
        digest = args_hash(arguments)
        occurrence = self.call_occurrences[(name, digest)]
        self.call_occurrences[(name, digest)] += 1
        return f"tool:{self.key_scope}:{name}:{digest}:{occurrence}"

    def stop_check(self, boundary: str, **data: Any) -> None:
        """Ask ``should_stop`` at a call boundary (``boundary``: ``model`` before a model
        request, ``tool`` before a tool call; ``data`` names the call). When it answers a
        reason: audit ``agent.turn.stopped`` (actor: the agent version) and raise
        ``TurnStopped``. Without ``should_stop``: nothing (no query)."""
        if self.should_stop is None:
            return
        reason = self.should_stop()
        if not reason:
            return
        from controlplane.context import ACTOR_AGENT_VERSION, Actor
        from governance.services import audit_record

        version = self.version
        payload = {
            "turn_id": self.turn.pk,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "boundary": boundary,
            "reason": reason,
            **data,
        }
        audit_record(
            action="agent.turn.stopped",
            obj=version,
            project=self.project,
            data=payload,
            actor=Actor(
                kind=ACTOR_AGENT_VERSION,
                name=f"agent:{version.agent.slug}@v{version.number}",
                ref=str(version.pk),
            ),
        )
        self.events.append({"event": "agent.turn.stopped", **payload})
        raise TurnStopped(reason)
