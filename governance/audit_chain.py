"""Canonical encoding, hashing and secret masking for audit events.

The canonical encoding is our own, on purpose: stored events come back from
PostgreSQL ``jsonb`` and SQLite ``json`` with keys reordered and numbers re-typed
(``1.0`` may return as ``1``, ``1e300`` as a 301-digit integer), so numbers are
written as their exact shortest decimal form whatever their Python type, keys are
sorted, and strings use JSON escaping. RFC 8785 (JCS) was considered: it rejects
integers beyond 2**53, which audit data (token counts, ids) may hold.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets as _secrets
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH_VALUE = "0" * 64
MASK = "********"
# Keys whose values are secrets wherever they appear in audit data (authentik's
# events/utils.py cleanse_dict uses the same idea).
SECRET_KEY_RE = re.compile(
    r"api[-_]?key|secret|password|passwd|token|authorization|credential|private[-_]?key|"
    r"cookie|session[-_]?id|signature",
    re.IGNORECASE,
)
# Values that are our own API tokens, or provider keys pasted in free text.
SECRET_VALUE_RE = re.compile(
    r"\bcpt_[A-Za-z0-9]+_[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9_-]{16,}|\bBearer\s+[A-Za-z0-9._~+/=-]{16,}"
)

HASHED_FIELDS = (
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_name",
    "actor_ref",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "project_ref",
    "request_id",
    "trace_id",
    "data",
    "prev_hash",
)


def mask_secrets(value: Any) -> Any:
    """Return ``value`` with secret-looking keys' values and token-shaped strings masked."""
    if isinstance(value, dict):
        return {
            str(k): (
                MASK if SECRET_KEY_RE.search(str(k)) and v not in (None, "") else mask_secrets(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE_RE.sub(MASK, value)
    return value


def to_json_data(value: Any) -> Any:
    """Convert ``value`` to plain JSON types (Decimal, datetime, UUID become strings)."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# What json.dumps(s, ensure_ascii=False) uses for a str, without its per-call set-up.
_encode_str = json.encoder.encode_basestring


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise ValueError("audit data may not hold NaN or infinity")
    dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    dec = dec.normalize()
    text = format(dec, "f")
    return "0" if text in ("-0", "0") else text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float | Decimal):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=str)):
            if i:
                out.append(",")
            out.append(_encode_str(str(key)))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot canonically encode {type(value).__name__}")


def canonical_bytes(value: Any) -> bytes:
    """UTF-8 canonical encoding of a JSON-like value (sorted keys, exact decimal numbers)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def format_timestamp(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds: the form hashed for ``occurred_at``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 hex digest of the canonical encoding of the hashed fields of an event.

    ``fields`` must hold every name in ``HASHED_FIELDS``; ``occurred_at`` may be a
    ``datetime`` (formatted with ``format_timestamp``) or the already formatted string.
    """
    payload = {name: fields[name] for name in HASHED_FIELDS}
    if isinstance(payload["occurred_at"], datetime):
        payload["occurred_at"] = format_timestamp(payload["occurred_at"])
    return hashlib.sha256(canonical_bytes(payload)).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"audit data may not hold {name}")


_NONCE = _secrets.token_hex(8)  # per process; stored data cannot know it
_PLACEHOLDER = re.compile(rf'"\\u0000{_NONCE}:(\d+)\\u0000"')
_BIG_INT = re.compile(r"\d{28}")  # _number rounds these to 28 digits; json would not
_STR_FIELDS = tuple(n for n in HASHED_FIELDS if n not in ("sequence", "occurred_at", "data"))
# '{"action":{action},"actor_kind":{actor_kind},...}' in sorted key order (canonical).
_TEMPLATE = "{{" + ",".join(f'"{n}":{{{n}}}' for n in sorted(HASHED_FIELDS)) + "}}"
_floats = threading.local()


def _float_placeholder(text: str) -> str:
    numbers = _floats.numbers
    numbers.append(_number(float(text)))
    return f"\x00{_NONCE}:{len(numbers) - 1}\x00"


_decode = json.JSONDecoder(parse_float=_float_placeholder, parse_constant=_no_constant).decode
_encode_data = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


def event_hash_from_text(fields: dict[str, Any], data_text: str) -> str:
    """``event_hash`` of an event whose ``data`` is given as stored JSON text, computed
    mostly in C (``json``) rather than by ``_encode``: the same digest, several times
    faster, for ``audit_chain_verify``.

    Why it is the same: with only str keys and no floats, ``json`` with sorted keys, no
    ASCII escaping and compact separators writes exactly the canonical encoding (strings
    through the same ``encode_basestring``, ints as digits). Each float is parsed to a
    placeholder string holding a random per-process nonce and replaced, after encoding, by
    ``_number`` of the float (what ``_encode`` writes); stored data cannot know the nonce,
    so it cannot forge a placeholder. The other fields are str (and the int sequence),
    written in sorted key order. Anything else (an int of 28 digits or more, NaN, a NUL
    character, a non-str field) falls back to ``event_hash``. Tested against it with
    hypothesis.
    """
    if "\\u0000" in data_text or _BIG_INT.search(data_text):
        return event_hash({**fields, "data": json.loads(data_text)})
    _floats.numbers = numbers = []
    try:
        data_json = _encode_data(_decode(data_text))
    except ValueError:
        return event_hash({**fields, "data": json.loads(data_text)})
    if numbers:
        data_json = _PLACEHOLDER.sub(lambda m: numbers[int(m.group(1))], data_json)
    occurred_at = fields["occurred_at"]
    sequence = fields["sequence"]
    if isinstance(occurred_at, datetime):
        occurred_at = format_timestamp(occurred_at)
    if type(sequence) is not int or not -(10**27) < sequence < 10**27:
        return event_hash({**fields, "data": json.loads(data_text)})
    try:
        values = {name: _encode_str(fields[name]) for name in _STR_FIELDS}
        values["occurred_at"] = _encode_str(occurred_at)
    except TypeError:  # a field that is not a str
        return event_hash({**fields, "data": json.loads(data_text)})
    values["sequence"] = str(sequence)
    values["data"] = data_json
    text = _TEMPLATE.format_map(values)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
