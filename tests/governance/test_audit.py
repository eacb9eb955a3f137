"""The audit log: hash chain, masking, append-only guards, verification, concurrency."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from controlplane.context import ACTOR_AGENT_VERSION, Actor, acting_as
from governance.audit_chain import MASK, canonical_bytes
from governance.models import AuditChainHead, AuditEvent, AuditLogImmutableError
from governance.selectors import audit_chain_verify
from governance.services import audit_record
from tests.factories import UserFactory


def tamper(sql: str, params=()) -> None:
    """Change the table behind the app's back, as a superuser with triggers disabled."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")


def write_events(n: int, **kwargs) -> list[AuditEvent]:
    return [audit_record(action="test.event", data={"i": i, **kwargs}) for i in range(n)]


@pytest.mark.django_db
class TestChain:
    def test_events_link_into_a_chain_that_verifies(self):
        events = write_events(5)
        assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == "0" * 64
        for before, after in zip(events, events[1:], strict=False):
            assert after.prev_hash == before.hash
        result = audit_chain_verify()
        assert result.ok and result.checked == 5 and result.head_hash == events[-1].hash

    def test_stored_values_rehash_identically_after_a_database_round_trip(self):
        tricky = {
            "float": 0.1,
            "whole_float": 2.0,
            "huge": 10**30,
            "tiny": 1e-7,
            "decimal": Decimal("12.3400"),
            "unicode": "naïve ☃ \u2028",
            "nested": {"b": [1, {"z": None, "a": True}], "a": ""},
        }
        audit_record(action="test.tricky", data=tricky)
        assert audit_chain_verify().ok

    def test_canonical_encoding_ignores_key_order_and_number_type(self):
        assert canonical_bytes({"b": 1, "a": 2.0}) == canonical_bytes({"a": 2, "b": 1.0})
        assert canonical_bytes({"a": 1}) != canonical_bytes({"a": "1"})

    def test_secrets_are_masked_before_writing(self):
        event = audit_record(
            action="test.secret",
            data={
                "api_key": "sk-live-123",
                "nested": {"Authorization": "Bearer abc", "password": "hunter2"},
                "note": "token cpt_abcd1234_" + "x" * 43 + " leaked",
                "harmless": "value",
            },
        )
        event.refresh_from_db()
        assert event.data["api_key"] == MASK
        assert event.data["nested"] == {"Authorization": MASK, "password": MASK}
        assert "cpt_" not in event.data["note"]
        assert event.data["harmless"] == "value"

    def test_actor_comes_from_the_context(self):
        user = UserFactory()
        actor = Actor(kind=ACTOR_AGENT_VERSION, name="agent:triage@v3", ref="42")
        with acting_as(actor, request_id="r-1", trace_id="a" * 32):
            event = audit_record(action="tool.call.allowed", obj=user)
        assert (event.actor_kind, event.actor_name, event.actor_ref) == (
            "agent_version",
            "agent:triage@v3",
            "42",
        )
        assert event.request_id == "r-1" and event.trace_id == "a" * 32
        assert event.object_type == "controlplane.user" and event.object_id == str(user.pk)

    def test_events_outside_a_request_are_by_system(self):
        assert audit_record(action="test.event").actor_kind == "system"

    def test_malformed_action_names_are_refused(self):
        with pytest.raises(ValueError):
            audit_record(action="NotDotted")
        assert AuditEvent.objects.count() == 0

    def test_event_rolls_back_with_the_change_it_describes(self):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(action="test.event")
            raise RuntimeError("the change failed")
        assert AuditEvent.objects.count() == 0
        assert AuditChainHead.objects.get().sequence == 0
        assert audit_record(action="test.event").sequence == 1

    def test_appends_stop_when_the_head_is_gone_but_events_remain(self):
        from governance.services import AuditChainBrokenError

        write_events(2)
        tamper("DELETE FROM governance_auditchainhead")
        with pytest.raises(AuditChainBrokenError):
            audit_record(action="test.event")
        assert AuditEvent.objects.count() == 2
        result = audit_chain_verify()
        assert not result.ok and "head row is missing" in result.reason

    def test_sign_in_and_failed_sign_in_are_audited(self, client):
        UserFactory(username="bob", password="pw-ok-123456")
        assert not client.login(username="bob", password="wrong")
        assert client.login(username="bob", password="pw-ok-123456")
        actions = list(AuditEvent.objects.values_list("action", flat=True))
        assert actions == ["auth.login_failed", "auth.login"]
        failed = AuditEvent.objects.get(action="auth.login_failed")
        assert "password" not in failed.data


@pytest.mark.django_db
class TestAppendOnly:
    def test_model_refuses_update_and_delete(self):
        event = audit_record(action="test.event")
        event.action = "test.changed"
        with pytest.raises(AuditLogImmutableError):
            event.save()
        with pytest.raises(AuditLogImmutableError):
            event.delete()
        with pytest.raises(AuditLogImmutableError):
            AuditEvent.objects.filter(pk=event.pk).update(action="x.y")
        with pytest.raises(AuditLogImmutableError):
            AuditEvent.objects.all().delete()

    @pytest.mark.postgres
    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize(
        "sql",
        [
            "UPDATE governance_auditevent SET action = 'test.forged'",
            "UPDATE governance_auditevent SET actor_name = 'mallory', actor_id = NULL",
            "DELETE FROM governance_auditevent",
            "TRUNCATE governance_auditevent",
        ],
    )
    def test_postgres_trigger_rejects_changes(self, sql):
        write_events(2)
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
        assert AuditEvent.objects.count() == 2
        assert audit_chain_verify().ok

    def test_deleting_a_user_nulls_the_link_but_keeps_the_frozen_actor(self, client):
        user = UserFactory(username="carol")
        with acting_as(Actor(kind="user", name="carol", user_id=user.pk, ref=str(user.pk))):
            event = audit_record(action="test.event")
        user.delete()
        event.refresh_from_db()
        assert event.actor_id is None and event.actor_name == "carol"
        assert audit_chain_verify().ok


@pytest.mark.django_db
class TestVerifyCommand:
    def test_a_clean_chain_passes(self, capsys):
        write_events(3)
        call_command("audit_verify")
        assert "audit chain OK: 3 events" in capsys.readouterr().out

    def test_an_out_of_band_update_is_named_by_sequence(self):
        write_events(5)
        tamper("UPDATE governance_auditevent SET data = %s WHERE sequence = 3", ['{"i": 99}'])
        with pytest.raises(CommandError, match="broken at sequence 3: content"):
            call_command("audit_verify", "--chunk-size", "2")

    def test_a_forged_rehash_is_caught_by_the_next_link(self):
        from governance.audit_chain import event_hash

        events = write_events(4)
        forged = AuditEvent.objects.get(sequence=2)
        forged.data = {"i": 1000}
        new_hash = event_hash(forged.__dict__)
        tamper(
            "UPDATE governance_auditevent SET data = %s, hash = %s WHERE sequence = 2",
            ['{"i": 1000}', new_hash],
        )
        assert events
        with pytest.raises(CommandError, match="broken at sequence 3: prev_hash"):
            call_command("audit_verify")

    def test_a_deleted_event_is_named(self):
        write_events(5)
        tamper("DELETE FROM governance_auditevent WHERE sequence = 4")
        with pytest.raises(CommandError, match="broken at sequence 4"):
            call_command("audit_verify")

    def test_events_cut_from_the_end_are_named(self):
        write_events(5)
        tamper("DELETE FROM governance_auditevent WHERE sequence >= 4")
        with pytest.raises(CommandError, match="broken at sequence 4"):
            call_command("audit_verify")


@pytest.mark.django_db(transaction=True)
def test_the_cli_exits_non_zero_naming_the_sequence():
    import subprocess

    from tests.procs import manage_py, process_env

    write_events(3)
    ok = subprocess.run(
        manage_py("audit_verify"), env=process_env(), capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "audit chain OK: 3 events" in ok.stdout
    tamper("UPDATE governance_auditevent SET actor_name = 'mallory' WHERE sequence = 2")
    bad = subprocess.run(
        manage_py("audit_verify"), env=process_env(), capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "audit chain broken at sequence 2" in bad.stderr


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_form_one_unbroken_chain():
    """8 threads x 25 events (the issue's check; meaningful on PostgreSQL, runs on both)."""
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(action="test.concurrent", data={"thread": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    total = threads_n * per_thread
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, total + 1))
    result = audit_chain_verify()
    assert result.ok and result.checked == total


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stale", ["sequence", "hash"])
def test_a_stale_head_guess_writes_nothing_and_falls_back_to_the_locked_head(stale):
    """PostgreSQL appends after the head this process last wrote, in one statement that
    moves the head only if it is still there; another writer having moved it (or a guess
    with the right number but another hash) makes it read the head under a lock."""
    from django.test.utils import CaptureQueriesContext

    from governance import services

    write_events(2)
    key = services._guess_key()
    sequence, digest = services._head_guess[key]
    assert (sequence, digest) == tuple(AuditChainHead.objects.values_list("sequence", "hash")[0])
    if stale == "sequence":
        write_events(1)  # e.g. another process appended since
        services._head_guess[key] = (sequence, digest)
    else:
        services._head_guess[key] = (sequence, "f" * 64)
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        audit_record(action="test.event", data={"i": "after"})
    statements = [query["sql"] for query in captured.captured_queries]
    assert any(sql.startswith("WITH moved AS") for sql in statements)
    assert any(sql.endswith("FOR UPDATE") for sql in statements)
    total = AuditEvent.objects.count()
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, total + 1))
    assert audit_chain_verify().ok
    # The guess is right again: the next append is one statement.
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        audit_record(action="test.event", data={"i": "next"})
    assert not any("FOR UPDATE" in query["sql"] for query in captured.captured_queries)
    assert audit_chain_verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_value_too_long_for_its_column_is_refused_not_cut_in_the_one_statement_append():
    """The one-statement append casts its VALUES to the columns' types; a cast to
    varchar(n) would cut a longer value silently, so the stored event would no longer
    match its hash. It must fail like any insert of a too-long value."""
    from governance import services

    write_events(1)
    assert services._head_guess.get(services._guess_key()) is not None
    too_long = "test." + "x" * 120  # the action column holds 100
    with pytest.raises(DatabaseError, match="too long"), transaction.atomic():
        audit_record(action=too_long)
    assert not AuditEvent.objects.filter(action__startswith="test.xxx").exists()
    write_events(1)
    assert audit_chain_verify().ok
