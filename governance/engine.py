"""The policy engine: one decision per proposed tool call (steps 1-4 of the governed path).

``decide_tool_call(request) -> Decision`` runs, in order:

1. the tool exists and was not removed from its server;
2. the arguments validate against the tool's input JSON Schema (``jsonschema``; the
   compiled validator is cached per tool and schema);
3. grant lookup: no grant, no call (default deny);
4. the grant's ordered CEL rules (``governance.conditions``; compiled programs cached per
   grant: grants are immutable, so the grant id is the version); the first true rule
   decides, otherwise the grant's effect;
5. for allow / require_approval: the tool's circuit breaker, then the counters: the
   policy's per-run tool-call cap, the grant's max calls per run and its rate limit
   (fixed windows). Each counter is one atomic ``INSERT ... ON CONFLICT DO UPDATE ...
   RETURNING`` on ``UsageCounter``, never a read-then-write; when a later check denies,
   the counters this call took are given back.

Any exception inside the engine denies with rule ``policy.error`` and is audited as
``policy.error`` (fail closed). ``dry_run=True`` answers the same question with no side
effects: counters and breakers are read, not changed, and nothing is audited.

The request carries plain data (``ToolSpec``, ``GrantSpec``, ``PolicySnapshot``) built
by the registry (``agents``), which sits above this app and is never imported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jsonschema
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from governance.conditions import compile_condition, evaluate_rules, variables_used
from governance.models import BreakerState, CircuitBreaker, UsageCounter
from governance.policy import PolicyDocument

logger = logging.getLogger(__name__)

ALLOW, DENY, REQUIRE_APPROVAL = "allow", "deny", "require_approval"
MAX_SCHEMA_MESSAGES = 5


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """The tool being called: ``schema_key`` changes whenever ``input_schema`` does
    (e.g. the tool's ``updated_at``), so a cached validator is never stale."""

    id: int
    name: str
    input_schema: Mapping[str, Any]
    schema_key: str = ""
    removed: bool = False


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """An agent version's grant for the tool (immutable; ``id`` keys the CEL cache).

    ``rules`` is ``({"when": CEL, "then": effect}, ...)``; rate limit is
    ``rate_limit_calls`` per ``rate_limit_window_seconds``; ``None`` means no limit.
    """

    id: int
    effect: str
    rules: tuple[Mapping[str, str], ...] = ()
    rate_limit_calls: int | None = None
    rate_limit_window_seconds: int | None = None
    max_calls_per_run: int | None = None
    approver_role: str = "approver"
    approval_quorum: int = 1


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """The policy in force: ``version_id`` of its ``PolicyVersion`` (``None`` for the
    built-in defaults when the project has no policy yet) and a ``label`` for people."""

    version_id: int | None
    label: str
    document: PolicyDocument

    @classmethod
    def defaults(cls) -> PolicySnapshot:
        return cls(version_id=None, label="built-in defaults", document=PolicyDocument())


@dataclass(frozen=True)
class ToolCallRequest:
    """A proposed tool call. The mappings are the CEL variables (``governance.conditions``):
    ``agent`` ``{"slug", "version"}``, ``run`` ``{"id", "trace_id", "tool_calls"}``,
    ``project`` ``{"slug"}``, ``user`` ``{"username", "role"}``, ``usage``
    ``{"cost_usd", "tokens"}``. ``run["id"]`` keys the per-run counters (no run: no
    per-run caps). ``now`` defaults to the current time."""

    project_id: int
    tool: ToolSpec
    grant: GrantSpec | None
    arguments: Any
    policy: PolicySnapshot = field(default_factory=PolicySnapshot.defaults)
    agent: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    project: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Any] = field(default_factory=dict)
    now: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """The engine's answer.

    ``effect``: allow / deny / require_approval. ``rule`` names what decided:
    ``tool.removed``, ``schema``, ``grant.missing``, ``grant.rule.<n>`` (1-based),
    ``grant.effect``, ``breaker.open``, ``caps.max_tool_calls_per_run``,
    ``grant.max_calls_per_run``, ``grant.rate_limit`` or ``policy.error``.
    ``policy_version_id`` / ``policy_label`` identify the policy in force; ``messages``
    explain (safe to show and audit: they never contain argument values). For
    require_approval, ``approver_role`` and ``approval_quorum`` come from the grant (the
    quorum from the deciding rule when it names one).
    """

    effect: str
    rule: str
    policy_version_id: int | None
    policy_label: str
    messages: tuple[str, ...] = ()
    grant_id: int | None = None
    approver_role: str | None = None
    approval_quorum: int | None = None

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW

    def as_data(self) -> dict[str, Any]:
        """A JSON-able dict (for the audit log and the REST API)."""
        return {
            "effect": self.effect,
            "rule": self.rule,
            "policy_version_id": self.policy_version_id,
            "policy": self.policy_label,
            "messages": list(self.messages),
            "grant_id": self.grant_id,
            "approver_role": self.approver_role,
            "approval_quorum": self.approval_quorum,
        }


# --- caches -----------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _grant_programs(grant_id: int, expressions: tuple[str, ...]):
    """Compiled CEL programs of a grant's rules and the variables they read (grants are
    immutable; the expressions are part of the key so a reused id can never return
    another grant's programs)."""
    programs = tuple(compile_condition(expression) for expression in expressions)
    return programs, variables_used(programs)


_validators: dict[tuple[int, str], jsonschema.protocols.Validator] = {}
_validators_lock = threading.Lock()
MAX_CACHED_VALIDATORS = 4096


def _validator(tool: ToolSpec):
    key = (tool.id, tool.schema_key)
    validator = _validators.get(key)
    if validator is None:
        cls = jsonschema.validators.validator_for(tool.input_schema)
        validator = cls(tool.input_schema, format_checker=cls.FORMAT_CHECKER)
        with _validators_lock:
            if len(_validators) >= MAX_CACHED_VALIDATORS:
                _validators.clear()
            _validators[key] = validator
    return validator


def schema_errors(tool: ToolSpec, arguments: Any) -> list[str]:
    """Messages for the arguments' JSON Schema violations, each prefixed with its path
    (``$.amount: -5 is less than the minimum of 0``); empty when valid. At most
    ``MAX_SCHEMA_MESSAGES``. The offending values appear only as jsonschema words them,
    so callers that audit them must pass them through the PII scanner."""
    validator = _validator(tool)
    if validator.is_valid(arguments):
        return []
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    return [f"{error.json_path}: {error.message}" for error in errors[:MAX_SCHEMA_MESSAGES]]


# --- counters ---------------------------------------------------------------------------


def _counter_table() -> str:
    return connection.ops.quote_name(UsageCounter._meta.db_table)


def counter_increment(key: str, *, window_start: int = 0, expires_at: datetime | None) -> int:
    """Add one to the counter ``(key, window_start)`` and return the new count, in one
    atomic statement (see ``counters_increment``)."""
    return counters_increment([(key, window_start, expires_at)])[(key, window_start)]


def counters_increment(
    counters: list[tuple[str, int, datetime | None]],
) -> dict[tuple[str, int], int]:
    """Add one to each counter ``(key, window_start, expires_at)`` and return the new
    counts by ``(key, window_start)``: ONE atomic ``INSERT ... ON CONFLICT DO UPDATE ...
    RETURNING`` statement (PostgreSQL and SQLite >= 3.35), one round trip whatever the
    number of counters. Rows are written in (key, window) order, so concurrent callers
    lock them in the same order and never deadlock."""
    ordered = sorted(counters, key=lambda c: (c[0], c[1]))
    table = _counter_table()
    count = connection.ops.quote_name("count")
    values = ", ".join(["(%s, %s, 1, %s)"] * len(ordered))
    params = [value for counter in ordered for value in counter]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, window_start, {count}, expires_at) "  # noqa: S608 - names are ours
            f"VALUES {values} ON CONFLICT (key, window_start) "
            f"DO UPDATE SET {count} = {table}.{count} + 1 RETURNING key, window_start, {count}",
            params,
        )
        return {(row[0], int(row[1])): int(row[2]) for row in cursor.fetchall()}


def counter_decrement(key: str, *, window_start: int = 0) -> None:
    """Give back one unit of ``(key, window_start)`` (never below zero)."""
    UsageCounter.objects.filter(key=key, window_start=window_start, count__gt=0).update(
        count=F("count") - 1
    )


def counter_value(key: str, *, window_start: int = 0) -> int:
    """The current count (0 when the counter does not exist)."""
    row = UsageCounter.objects.filter(key=key, window_start=window_start).values("count").first()
    return row["count"] if row else 0


@dataclass(frozen=True, slots=True)
class _Counter:
    key: str
    window_start: int
    limit: int
    expires_at: datetime | None
    rule: str
    message: str


def _counters(request: ToolCallRequest, now: datetime) -> list[_Counter]:
    counters: list[_Counter] = []
    run_id = request.run.get("id") if request.run else None
    run_expiry = now + timedelta(days=30)
    caps = request.policy.document.caps
    grant = request.grant
    if run_id:
        if caps.max_tool_calls_per_run is not None:
            counters.append(
                _Counter(
                    f"run:{run_id}:tool_calls",
                    0,
                    caps.max_tool_calls_per_run,
                    run_expiry,
                    "caps.max_tool_calls_per_run",
                    f"the run reached the policy's cap of {caps.max_tool_calls_per_run} tool calls",
                )
            )
        if grant is not None and grant.max_calls_per_run is not None:
            counters.append(
                _Counter(
                    f"run:{run_id}:tool:{request.tool.id}",
                    0,
                    grant.max_calls_per_run,
                    run_expiry,
                    "grant.max_calls_per_run",
                    f"the run reached the grant's cap of {grant.max_calls_per_run} calls of "
                    f"{request.tool.name}",
                )
            )
    if grant is not None and grant.rate_limit_calls and grant.rate_limit_window_seconds:
        window = grant.rate_limit_window_seconds
        epoch = int(now.timestamp())
        start = epoch - epoch % window
        agent = request.agent.get("slug", "") if request.agent else ""
        counters.append(
            _Counter(
                f"rate:p{request.project_id}:a:{agent}:t{request.tool.id}",
                start,
                grant.rate_limit_calls,
                datetime.fromtimestamp(start + window, tz=UTC) + timedelta(seconds=window),
                "grant.rate_limit",
                f"rate limit of {grant.rate_limit_calls} calls per {window} s reached for "
                f"{request.tool.name}",
            )
        )
    return counters


def counter_windows(request: ToolCallRequest, now: datetime) -> list[tuple[str, int]]:
    """The ``(key, window_start)`` of every counter an allowed call of ``request`` takes
    (per-run caps and the rate limit window), e.g. for a replay's simulated counters."""
    return [(c.key, c.window_start) for c in _counters(request, now)]


# --- circuit breakers -------------------------------------------------------------------

BREAKER_CACHE_SECONDS = 1.0


class _BreakerSnapshot:
    """This process's view of the breakers that are not closed, reloaded with one query at
    most every ``BREAKER_CACHE_SECONDS``: a breaker opened by another worker is seen within
    that time, this process's own outcomes at once, and a decision on a tool whose breaker
    is closed (nearly all of them) costs no query."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.loaded_at = float("-inf")
        self.states: dict[str, tuple[str, datetime | None]] = {}

    def get(self, key: str) -> tuple[str, datetime | None]:
        if time.monotonic() - self.loaded_at >= BREAKER_CACHE_SECONDS:
            rows = CircuitBreaker.objects.exclude(state=BreakerState.CLOSED).values_list(
                "key", "state", "opened_at"
            )
            states = {row[0]: (row[1], row[2]) for row in rows}
            with self._lock:
                self.states, self.loaded_at = states, time.monotonic()
        return self.states.get(key, (BreakerState.CLOSED, None))

    def put(self, key: str, state: str, opened_at: datetime | None) -> None:
        with self._lock:
            states = dict(self.states)
            if state == BreakerState.CLOSED:
                states.pop(key, None)
            else:
                states[key] = (state, opened_at)
            self.states = states


_breaker_cache = _BreakerSnapshot()


def breaker_key(tool_id: int) -> str:
    return f"tool:{tool_id}"


def _breaker_check(request: ToolCallRequest, now: datetime, *, dry_run: bool) -> str | None:
    """None when the breaker lets the call through, else the reason it is denied."""
    key = breaker_key(request.tool.id)
    state, opened_at = _breaker_cache.get(key)
    if state == BreakerState.CLOSED:
        return None
    settings = request.policy.document.circuit_breaker
    cooldown = timedelta(seconds=settings.cooldown_seconds)
    if state == BreakerState.OPEN:
        if opened_at is not None and now < opened_at + cooldown:
            return f"the circuit breaker of {request.tool.name} is open until the cool-down ends"
        if dry_run:
            return None
        # Cool-down over: exactly one caller wins the conditional UPDATE and probes.
        won = CircuitBreaker.objects.filter(
            key=key, state=BreakerState.OPEN, opened_at__lte=now - cooldown
        ).update(state=BreakerState.HALF_OPEN, probe_started_at=now, updated_at=now)
        if won == 1:
            _breaker_cache.put(key, BreakerState.HALF_OPEN, opened_at)
            return None
        return f"the circuit breaker of {request.tool.name} is half-open; a probe call is running"
    # Half-open: a probe is in flight. A probe that never reported back (its worker died)
    # is replaced after another cool-down.
    row = CircuitBreaker.objects.filter(key=key).values("state", "probe_started_at").first()
    if row and row["state"] == BreakerState.HALF_OPEN and not dry_run:
        started = row["probe_started_at"]
        if started is None or now >= started + cooldown:
            won = CircuitBreaker.objects.filter(
                key=key, state=BreakerState.HALF_OPEN, probe_started_at=started
            ).update(probe_started_at=now, updated_at=now)
            if won == 1:
                return None
    if row is None or row["state"] == BreakerState.CLOSED:
        _breaker_cache.put(key, BreakerState.CLOSED, None)
        return None
    return f"the circuit breaker of {request.tool.name} is half-open; a probe call is running"


def record_tool_outcome(
    *,
    tool_id: int,
    ok: bool,
    policy: PolicySnapshot,
    project_id: int | None = None,
    label: str = "",
    now: datetime | None = None,
) -> str:
    """Count one finished call of the tool in its circuit breaker; return the new state.

    Closed: outcomes count in a fixed window of ``window_seconds``; at least
    ``min_calls`` with an error share >= ``error_rate`` opens it (audited
    ``breaker.opened``). Half-open: the probe's success closes it (``breaker.closed``),
    its failure opens it again. Runs in its own transaction with a row lock.
    """
    from governance.services import audit_record

    now = now or timezone.now()
    cfg = policy.document.circuit_breaker
    key = breaker_key(tool_id)
    if ok:
        # Fast path, one UPDATE: a success inside a closed breaker's current window only
        # counts (it lowers the error share, so it can never open the breaker).
        # SQL by hand: it runs after every tool call (the ORM's compile cost more than it).
        table = connection.ops.quote_name(CircuitBreaker._meta.db_table)
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET calls = calls + 1, updated_at = %s "  # noqa: S608
                "WHERE key = %s AND state = %s AND window_started_at > %s",
                [
                    adapt(now),
                    key,
                    BreakerState.CLOSED.value,
                    adapt(now - timedelta(seconds=cfg.window_seconds)),
                ],
            )
            counted = cursor.rowcount
        if counted:
            return BreakerState.CLOSED
    # No savepoint: nothing here catches a database error, it propagates to the caller.
    with transaction.atomic(savepoint=False):
        breaker, _ = CircuitBreaker.objects.select_for_update().get_or_create(
            key=key,
            defaults={"project_id": project_id, "label": label, "window_started_at": now},
        )
        before = breaker.state
        if breaker.state == BreakerState.HALF_OPEN:
            if ok:
                breaker.state, breaker.opened_at = BreakerState.CLOSED, None
            else:
                breaker.state, breaker.opened_at = BreakerState.OPEN, now
            breaker.calls, breaker.failures, breaker.window_started_at = 0, 0, now
            breaker.probe_started_at = None
        elif breaker.state == BreakerState.CLOSED:
            if now >= breaker.window_started_at + timedelta(seconds=cfg.window_seconds):
                breaker.calls, breaker.failures, breaker.window_started_at = 0, 0, now
            breaker.calls += 1
            breaker.failures += 0 if ok else 1
            if (
                breaker.calls >= cfg.min_calls
                and breaker.failures / breaker.calls >= cfg.error_rate
            ):
                breaker.state, breaker.opened_at = BreakerState.OPEN, now
        # Open: outcomes of calls that started before it opened change nothing.
        breaker.save()
        if breaker.state != before:
            action = {
                BreakerState.OPEN: "breaker.opened",
                BreakerState.CLOSED: "breaker.closed",
            }.get(breaker.state)
            if action:
                audit_record(
                    action=action,
                    obj=breaker,
                    project=breaker.project,
                    data={
                        "tool_id": tool_id,
                        "from": before,
                        "calls": breaker.calls,
                        "failures": breaker.failures,
                        "policy_version_id": policy.version_id,
                    },
                )
    _breaker_cache.put(breaker.key, breaker.state, breaker.opened_at)
    return breaker.state


# --- the decision -----------------------------------------------------------------------


def decide_tool_call(
    request: ToolCallRequest,
    *,
    dry_run: bool = False,
    counts: Callable[[str, int], int] | None = None,
    breakers: bool = True,
) -> Decision:
    """Decide a proposed tool call (see the module docstring for the steps).

    Never raises: an exception inside the engine becomes a ``deny`` with rule
    ``policy.error`` and, unless ``dry_run``, an audit event ``policy.error`` naming the
    exception type (not its arguments, which may carry call data).

    For a replay (``governance.replay``), a dry run may read the counters from ``counts``
    (``(key, window_start) -> count``, e.g. a simulation) instead of the database, and
    skip the circuit breakers (``breakers=False``): a past breaker state is a recorded
    fact, not something the policy being replayed decides.
    """
    if counts is not None and not dry_run:
        raise ValueError("counts replaces the stored counters only in a dry run")
    try:
        return _decide(request, dry_run=dry_run, counts=counts, breakers=breakers)
    except Exception as exc:  # noqa: BLE001 - fail closed on anything
        logger.exception("policy engine error", extra={"tool_id": request.tool.id})
        decision = Decision(
            effect=DENY,
            rule="policy.error",
            policy_version_id=request.policy.version_id,
            policy_label=request.policy.label,
            messages=(f"the policy engine failed ({type(exc).__name__}); the call is denied",),
            grant_id=request.grant.id if request.grant else None,
        )
        if not dry_run:
            _audit_engine_error(request, exc, decision)
        return decision


def _audit_engine_error(request: ToolCallRequest, exc: Exception, decision: Decision) -> None:
    from controlplane.models import Project
    from governance.services import audit_record

    try:
        audit_record(
            action="policy.error",
            project=Project(pk=request.project_id),
            object_type="agents.tool",
            object_id=str(request.tool.id),
            object_repr=request.tool.name,
            data={
                "error": type(exc).__name__,
                "agent": dict(request.agent),
                "run_id": request.run.get("id") if request.run else None,
                **decision.as_data(),
            },
        )
    except Exception:  # noqa: BLE001 - the call stays denied even if auditing fails
        logger.exception("could not audit a policy engine error")


def _decide(
    request: ToolCallRequest,
    *,
    dry_run: bool,
    counts: Callable[[str, int], int] | None = None,
    breakers: bool = True,
) -> Decision:
    policy = request.policy

    def decision(
        effect: str,
        rule: str,
        *messages: str,
        grant: GrantSpec | None = None,
        quorum: int | None = None,
    ):
        if grant and effect == REQUIRE_APPROVAL:
            quorum = quorum or grant.approval_quorum
        return Decision(
            effect=effect,
            rule=rule,
            policy_version_id=policy.version_id,
            policy_label=policy.label,
            messages=tuple(messages),
            grant_id=grant.id if grant else None,
            approver_role=grant.approver_role if grant and effect == REQUIRE_APPROVAL else None,
            approval_quorum=quorum if grant and effect == REQUIRE_APPROVAL else None,
        )

    tool, grant = request.tool, request.grant
    if tool.removed:
        return decision(DENY, "tool.removed", f"tool {tool.name} was removed from its server")
    errors = schema_errors(tool, request.arguments)
    if errors:
        return decision(DENY, "schema", *errors)
    if grant is None:
        return decision(DENY, "grant.missing", f"no grant for tool {tool.name} (default deny)")

    now = request.now or timezone.now()
    rules = tuple(grant.rules)
    programs, used = _grant_programs(grant.id, tuple(rule["when"] for rule in rules))
    variables = {
        "args": request.arguments,
        "agent": dict(request.agent),
        "run": dict(request.run),
        "project": dict(request.project),
        "user": dict(request.user),
        "usage": dict(request.usage),
    }
    if "now" in used:
        variables["now"] = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    outcome = evaluate_rules(
        rules, default_effect=grant.effect, variables=variables, programs=programs, used=used
    )
    rule = (
        f"grant.rule.{outcome.rule_index + 1}" if outcome.rule_index is not None else "grant.effect"
    )
    if outcome.effect == DENY:
        return decision(DENY, rule, outcome.reason, grant=grant)
    # A require_approval rule may name its own quorum (a larger amount, more approvers).
    quorum = rules[outcome.rule_index].get("quorum") if outcome.rule_index is not None else None

    blocked = _breaker_check(request, now, dry_run=dry_run) if breakers else None
    if blocked:
        return decision(DENY, "breaker.open", blocked, grant=grant)

    counters = _counters(request, now)
    if not counters:
        return decision(outcome.effect, rule, outcome.reason, grant=grant, quorum=quorum)
    if dry_run:
        read = counts or (lambda key, window_start: counter_value(key, window_start=window_start))
        for counter in counters:
            if read(counter.key, counter.window_start) >= counter.limit:
                return decision(DENY, counter.rule, counter.message, grant=grant)
        return decision(outcome.effect, rule, outcome.reason, grant=grant, quorum=quorum)
    counts = counters_increment([(c.key, c.window_start, c.expires_at) for c in counters])
    for counter in counters:
        if counts[(counter.key, counter.window_start)] > counter.limit:
            # Denied: give back every unit this call took, so it counts nowhere.
            for taken in counters:
                counter_decrement(taken.key, window_start=taken.window_start)
            return decision(DENY, counter.rule, counter.message, grant=grant)
    return decision(outcome.effect, rule, outcome.reason, grant=grant, quorum=quorum)


def consume_run_cap(
    *, run_id: str, cap: str, policy: PolicySnapshot, dry_run: bool = False
) -> Decision:
    """Take one unit of a per-run cap of the policy (``max_steps_per_run``,
    ``max_agent_invocations_per_run`` or ``max_tool_calls_per_run``); deny when the run
    has used them all. Atomic like the tool-call counters; fails closed on errors."""
    try:
        limit = getattr(policy.document.caps, cap)
        base = {"policy_version_id": policy.version_id, "policy_label": policy.label}
        if limit is None:
            return Decision(effect=ALLOW, rule=f"caps.{cap}", messages=("no cap",), **base)
        key = f"run:{run_id}:{cap.removeprefix('max_').removesuffix('_per_run')}"
        if dry_run:
            over = counter_value(key) >= limit
        else:
            count = counter_increment(key, expires_at=timezone.now() + timedelta(days=30))
            over = count > limit
            if over:
                counter_decrement(key)
        if over:
            return Decision(
                effect=DENY,
                rule=f"caps.{cap}",
                messages=(f"the run reached {cap}={limit}",),
                **base,
            )
        return Decision(effect=ALLOW, rule=f"caps.{cap}", **base)
    except Exception as exc:  # noqa: BLE001 - fail closed
        logger.exception("run cap check failed")
        return Decision(
            effect=DENY,
            rule="policy.error",
            policy_version_id=policy.version_id,
            policy_label=policy.label,
            messages=(f"the cap check failed ({type(exc).__name__}); denied",),
        )
