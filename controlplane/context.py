"""Who is acting and under which request/trace: ContextVars read by the audit log and the logs.

The web middleware binds the current request; Celery tasks start a system context
(``begin_task_context``) and services may narrow it with ``acting_as(...)``, e.g. an
agent version acting inside a run.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog

ACTOR_USER = "user"
ACTOR_AGENT_VERSION = "agent_version"
ACTOR_API_TOKEN = "api_token"  # noqa: S105 - an actor kind, not a secret
ACTOR_SYSTEM = "system"
ACTOR_KINDS = (ACTOR_USER, ACTOR_AGENT_VERSION, ACTOR_API_TOKEN, ACTOR_SYSTEM)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, frozen at the time it was done.

    ``kind`` is one of ``ACTOR_KINDS``; ``name`` is a human-readable frozen name
    (username, ``token:<prefix>``, ``agent:<slug>@v3``, ``system:<task>``); ``user_id``
    links a user when there is one (tokens act for the user who created them);
    ``ref`` is the frozen id of the acting object (token prefix, agent version id).
    """

    kind: str
    name: str
    user_id: int | None = None
    ref: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ACTOR_KINDS:
            raise ValueError(f"unknown actor kind {self.kind!r}")


SYSTEM = Actor(kind=ACTOR_SYSTEM, name="system")

_actor: ContextVar[Actor | None] = ContextVar("controlplane_actor", default=None)
_request: ContextVar[Any] = ContextVar("controlplane_request", default=None)
_request_id: ContextVar[str] = ContextVar("controlplane_request_id", default="")
_trace_id: ContextVar[str] = ContextVar("controlplane_trace_id", default="")


def new_request_id() -> str:
    return uuid.uuid4().hex


def new_trace_id() -> str:
    """A W3C trace id: 32 lowercase hex characters, never all zeros."""
    return secrets.token_hex(16)


def clean_request_id(value: str | None) -> str:
    """Accept a client-supplied X-Request-ID only if it is short and plain; else make one."""
    if value and _REQUEST_ID_RE.match(value):
        return value
    return new_request_id()


def trace_id_from_traceparent(value: str | None) -> str:
    """Take the trace id from a W3C ``traceparent`` header, or start a new trace."""
    if value:
        match = _TRACEPARENT_RE.match(value.strip().lower())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    return new_trace_id()


def actor_for_request(request: Any) -> Actor | None:
    """The actor of an authenticated request: an API token acts for its creator."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    token = getattr(request, "auth", None)
    prefix = getattr(token, "prefix", None)
    if prefix:
        return Actor(
            kind=ACTOR_API_TOKEN,
            name=f"{user.get_username()} via token:{prefix}",
            user_id=user.pk,
            ref=prefix,
        )
    return Actor(kind=ACTOR_USER, name=user.get_username(), user_id=user.pk, ref=str(user.pk))


def signed_in_user(actor: Any) -> Any:
    """``actor`` when it is a signed-in user (for ``created_by``-style columns), else None
    (anonymous users, system callers, ``None``)."""
    return actor if getattr(actor, "is_authenticated", False) else None


def current_actor() -> Actor:
    """The explicit actor if one is bound, else the request's user, else ``SYSTEM``."""
    actor = _actor.get()
    if actor is not None:
        return actor
    request = _request.get()
    if request is not None:
        actor = actor_for_request(request)
        if actor is not None:
            return actor
    return SYSTEM


def current_request_id() -> str:
    return _request_id.get()


def current_trace_id() -> str:
    return _trace_id.get()


@contextlib.contextmanager
def bind_request(request: Any, *, request_id: str, trace_id: str) -> Iterator[None]:
    tokens = (
        _request.set(request),
        _request_id.set(request_id),
        _trace_id.set(trace_id),
        _actor.set(None),
    )
    structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "trace_id")
        _request.reset(tokens[0])
        _request_id.reset(tokens[1])
        _trace_id.reset(tokens[2])
        _actor.reset(tokens[3])


@contextlib.contextmanager
def acting_as(
    actor: Actor, *, request_id: str | None = None, trace_id: str | None = None
) -> Iterator[Actor]:
    """Bind ``actor`` (and optionally request/trace ids) for the duration of the block."""
    tokens = [(_actor, _actor.set(actor))]
    if request_id is not None:
        tokens.append((_request_id, _request_id.set(request_id)))
    if trace_id is not None:
        tokens.append((_trace_id, _trace_id.set(trace_id)))
    try:
        yield actor
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def begin_task_context(*, task_id: str | None, request_id: str | None) -> None:
    """Start a Celery task with a system actor; keeps the publishing request's id when sent."""
    rid = clean_request_id(request_id) if request_id else (task_id or new_request_id())
    _request.set(None)
    _actor.set(SYSTEM)
    _request_id.set(rid)
    _trace_id.set("")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid, task_id=task_id)


def end_task_context() -> None:
    _request.set(None)
    _actor.set(None)
    _request_id.set("")
    _trace_id.set("")
    structlog.contextvars.clear_contextvars()
