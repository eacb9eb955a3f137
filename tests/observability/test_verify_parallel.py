"""``audit_chain_verify(workers=N)`` on PostgreSQL: ranges checked by forked processes give
the same answers as one walk (intact chain, altered event, missing event at a range edge,
events cut from the end)."""

from __future__ import annotations

import pytest

from governance.selectors import audit_chain_verify
from tests.governance.test_audit import tamper, write_events

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def both():
    return audit_chain_verify(), audit_chain_verify(workers=3)


def test_an_intact_chain_verifies_in_parallel():
    events = write_events(10, floats=1.25)
    one, many = both()
    assert one == many
    assert many.ok and many.checked == 10 and many.head_hash == events[-1].hash


@pytest.mark.parametrize("sequence", [2, 4, 5, 9])
def test_an_altered_event_is_named_in_any_range(sequence):
    write_events(10)
    tamper(
        "UPDATE governance_auditevent SET data = %s WHERE sequence = %s", ['{"i": 99}', sequence]
    )
    one, many = both()
    assert not many.ok and many.first_broken_sequence == sequence
    assert (many.first_broken_sequence, many.reason) == (one.first_broken_sequence, one.reason)


@pytest.mark.parametrize("sequence", [4, 5, 8])
def test_a_missing_event_at_or_inside_a_range_edge_is_found(sequence):
    write_events(10)
    tamper("DELETE FROM governance_auditevent WHERE sequence = %s", [sequence])
    _, many = both()
    assert not many.ok and many.first_broken_sequence == sequence


def test_events_cut_from_the_end_are_found():
    write_events(10)
    tamper("DELETE FROM governance_auditevent WHERE sequence > 8")
    one, many = both()
    assert not many.ok and many.reason == one.reason == "events 9..10 were removed"
