"""``event_hash_from_text`` (the verifier's fast path) gives exactly ``event_hash``'s digest
for any JSON data, and a forged placeholder string cannot pass for a number."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, note, settings
from hypothesis import strategies as st

from governance.audit_chain import GENESIS_HASH_VALUE, event_hash, event_hash_from_text

FIELDS = {
    "sequence": 7,
    "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "actor_kind": "user",
    "actor_name": "alice ü",
    "actor_ref": "1",
    "action": "test.hash",
    "object_type": "x.y",
    "object_id": "3",
    "object_repr": 'quote " and \\ backslash',
    "project_ref": "1",
    "request_id": "r",
    "trace_id": "",
    "prev_hash": GENESIS_HASH_VALUE,
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_the_text_path_hashes_like_event_hash(data):
    stored = json.dumps(data)  # what the database hands back, as text
    note(repr(stored))
    expected = event_hash({**FIELDS, "data": json.loads(stored)})
    assert event_hash_from_text(FIELDS, stored) == expected


def test_a_string_shaped_like_a_placeholder_is_hashed_as_a_string():
    real = {"a": 1.5, "b": 1.5}
    forged = {"a": "\x00deadbeefdeadbeef:0\x00", "b": 1.5}
    assert event_hash_from_text(FIELDS, json.dumps(forged)) != event_hash({**FIELDS, "data": real})
    assert event_hash_from_text(FIELDS, json.dumps(forged)) == event_hash(
        {**FIELDS, "data": forged}
    )
