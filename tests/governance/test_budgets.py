"""Budgets: reservations at every scope (all or nothing), settle / release / expire exactly once,
periods in the project's time zone, alerts once per threshold and period, concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from controlplane.models import Role
from controlplane.services import membership_create, project_create, project_update
from governance import tasks
from governance.budgets import TOTAL_PERIOD_START, period_bounds, period_start_for
from governance.metrics import observe_audit_event
from governance.models import (
    AuditEvent,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    BudgetReservation,
    ReservationStatus,
)
from governance.selectors import budget_usage, budgets_for_project, reservations_in_flight
from governance.services import (
    BudgetExceeded,
    ReservationNotFound,
    applicable_budgets,
    budget_create,
    budget_deactivate,
    budget_delete,
    budget_expire_reservations,
    budget_release,
    budget_reserve,
    budget_settle,
    budget_update,
)
from governance.signals import budget_alert
from tests.concurrency import run_concurrently
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


def make_budget(project, name="monthly", *, limit="1.00", **kwargs) -> Budget:
    kwargs.setdefault("scope", "project")
    kwargs.setdefault("period", "month")
    return budget_create(project=project, name=name, limit_usd=D(limit), **kwargs)


def usage(budget: Budget, at: datetime = NOW) -> tuple[Decimal, Decimal]:
    current = budget_usage(budget, at=at)
    return current.spent_usd, current.reserved_usd


def actions(prefix: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(action__startswith=prefix).values_list("action", flat=True)
    )


# --- reserve / settle / release / expire ------------------------------------------------------


class TestReservationLifecycle:
    def test_reserve_holds_the_amount_against_every_budget(self, project):
        a, b = make_budget(project, "a"), make_budget(project, "b", period="day")
        reservation = budget_reserve(
            call_id="c1", project=project, budgets=[b, a], amount_usd=D("0.25"), now=NOW
        )
        assert reservation.status == ReservationStatus.RESERVED
        assert reservation.expires_at == NOW + timedelta(minutes=15)
        assert [line.budget.name for line in reservation.lines.all()] == ["a", "b"]
        assert usage(a) == usage(b) == (D(0), D("0.25"))
        event = AuditEvent.objects.get(action="budget.reserved")
        assert event.data["budgets"] == ["a", "b"] and event.data["amount_usd"] == "0.25000000"

    def test_settle_moves_the_hold_to_the_real_cost_once(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("0.50"), now=NOW
        )
        settled = budget_settle(call_id="c1", actual_usd=D("0.12345678"), now=NOW)
        assert settled.status == ReservationStatus.SETTLED
        assert settled.settled_usd == D("0.12345678")
        assert usage(budget) == (D("0.12345678"), D(0))
        again = budget_settle(call_id="c1", actual_usd=D("0.40"), now=NOW)
        assert again.settled_usd == D("0.12345678")
        assert usage(budget) == (D("0.12345678"), D(0))
        assert actions("budget.settled") == ["budget.settled"]

    def test_release_gives_the_hold_back_once(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("0.50"), now=NOW
        )
        assert budget_release(call_id="c1").status == ReservationStatus.RELEASED
        assert budget_release(call_id="c1").status == ReservationStatus.RELEASED
        assert usage(budget) == (D(0), D(0))
        assert actions("budget.released") == ["budget.released"]

    def test_stale_reservations_expire_and_give_their_hold_back(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="old",
            project=project,
            budgets=[budget],
            amount_usd=D("0.30"),
            ttl_seconds=60,
            now=NOW,
        )
        budget_reserve(
            call_id="fresh",
            project=project,
            budgets=[budget],
            amount_usd=D("0.20"),
            ttl_seconds=600,
            now=NOW,
        )
        assert budget_expire_reservations(now=NOW + timedelta(seconds=59)) == 0
        assert budget_expire_reservations(now=NOW + timedelta(seconds=61)) == 1
        assert budget_expire_reservations(now=NOW + timedelta(seconds=61)) == 0
        assert BudgetReservation.objects.get(call_id="old").status == ReservationStatus.EXPIRED
        assert usage(budget) == (D(0), D("0.20"))
        assert actions("budget.reservation.expired") == ["budget.reservation.expired"]

    def test_the_beat_task_expires_reservations(self, project, settings):
        assert (
            settings.CELERY_BEAT_SCHEDULE["budget-expire-reservations"]["task"]
            == "governance.tasks.budget_expire_reservations"
        )
        budget = make_budget(project)
        budget_reserve(
            call_id="old",
            project=project,
            budgets=[budget],
            amount_usd=D("0.30"),
            ttl_seconds=1,
            now=NOW - timedelta(days=1),
        )
        assert tasks.expire_budget_reservations.apply().get() == 1

    def test_a_late_settle_after_expiry_still_charges_the_real_cost(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="c1",
            project=project,
            budgets=[budget],
            amount_usd=D("0.30"),
            ttl_seconds=1,
            now=NOW,
        )
        budget_expire_reservations(now=NOW + timedelta(seconds=2))
        assert usage(budget) == (D(0), D(0))
        budget_settle(call_id="c1", actual_usd=D("0.10"), now=NOW + timedelta(seconds=3))
        assert usage(budget) == (D("0.10"), D(0))
        assert AuditEvent.objects.get(action="budget.settled").data["after"] == "expired"

    def test_reserving_the_same_call_id_twice_holds_once(self, project):
        budget = make_budget(project)
        first = budget_reserve(call_id="c1", project=project, budgets=[budget], amount_usd=D("0.4"))
        second = budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("0.9")
        )
        assert first.pk == second.pk and second.amount_usd == D("0.4")
        assert usage(budget, at=datetime.now(tz=UTC))[1] == D("0.4")
        assert actions("budget.reserved") == ["budget.reserved"]

    def test_unknown_call_ids_are_an_error(self, project):
        with pytest.raises(ReservationNotFound):
            budget_settle(call_id="nope", actual_usd=D(0))
        with pytest.raises(ReservationNotFound):
            budget_release(call_id="nope")

    @pytest.mark.parametrize(
        ("amount", "error"),
        [
            (0.05, TypeError),
            (D("-0.01"), ValueError),
            (D("0.000000001"), ValueError),
            (D("NaN"), ValueError),
            ("0.05", TypeError),
        ],
    )
    def test_amounts_must_be_decimal_usd(self, project, amount, error):
        budget = make_budget(project)
        with pytest.raises(error):
            budget_reserve(call_id="c1", project=project, budgets=[budget], amount_usd=amount)
        assert not BudgetReservation.objects.exists()

    def test_a_budget_of_another_project_is_refused(self, project):
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        foreign = make_budget(other)
        with pytest.raises(ValueError, match="another project"):
            budget_reserve(call_id="c1", project=project, budgets=[foreign], amount_usd=D(1))

    def test_a_settled_cost_above_the_hold_is_charged_in_full(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("0.50"), now=NOW
        )
        budget_settle(call_id="c1", actual_usd=D("1.50"), now=NOW)
        assert usage(budget) == (D("1.50"), D(0))


# --- hard and soft limits ---------------------------------------------------------------------


class TestLimits:
    def test_a_hard_budget_denies_with_nothing_reserved_anywhere(self, project, admin_user):
        roomy = make_budget(project, "roomy", limit="100")
        user_budget = make_budget(project, "alice", scope="user", user=admin_user, limit="100")
        tight = make_budget(project, "tight", period="day", limit="1.00")
        budget_reserve(
            call_id="c0", project=project, budgets=[tight], amount_usd=D("0.90"), now=NOW
        )
        budgets = applicable_budgets(project, user=admin_user)
        assert [b.name for b in budgets] == ["roomy", "alice", "tight"]
        with pytest.raises(BudgetExceeded) as denied:
            budget_reserve(
                call_id="c1", project=project, budgets=budgets, amount_usd=D("0.20"), now=NOW
            )
        exc = denied.value
        assert exc.budget.name == "tight"
        assert (exc.limit_usd, exc.spent_usd, exc.reserved_usd, exc.amount_usd) == (
            D("1.00"),
            D(0),
            D("0.90"),
            D("0.20"),
        )
        assert str(exc) == (
            "budget 'tight' (day from 2026-03-14) would exceed its limit: spent 0.00 + "
            "reserved 0.90 + this call 0.20 > limit 1.00 USD"
        )
        assert usage(roomy) == usage(user_budget) == (D(0), D(0))
        assert usage(tight) == (D(0), D("0.90"))
        assert not BudgetReservation.objects.filter(call_id="c1").exists()
        event = AuditEvent.objects.get(action="budget.reservation.denied")
        assert event.data["budget"] == "tight" and event.data["call_id"] == "c1"

    def test_exactly_the_limit_is_allowed(self, project):
        budget = make_budget(project, limit="1.00")
        for i in range(4):
            budget_reserve(
                call_id=f"c{i}", project=project, budgets=[budget], amount_usd=D("0.25"), now=NOW
            )
        with pytest.raises(BudgetExceeded):
            budget_reserve(
                call_id="c9", project=project, budgets=[budget], amount_usd=D("0.00000001"), now=NOW
            )

    def test_a_soft_budget_allows_going_over_and_says_so(self, project):
        soft = make_budget(project, "soft", hard=False, limit="0.10")
        budget_reserve(call_id="c1", project=project, budgets=[soft], amount_usd=D("0.50"), now=NOW)
        assert usage(soft) == (D(0), D("0.50"))
        assert AuditEvent.objects.get(action="budget.reserved").data["soft_over_limit"] == ["soft"]

    def test_inactive_budgets_do_not_apply(self, project):
        budget = make_budget(project, limit="0.01")
        budget_deactivate(budget=budget)
        assert applicable_budgets(project) == []
        reservation = budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("5"), now=NOW
        )
        assert reservation.lines.count() == 0

    def test_reservations_made_before_deactivation_still_settle(self, project):
        budget = make_budget(project)
        budget_reserve(
            call_id="c1", project=project, budgets=[budget], amount_usd=D("0.5"), now=NOW
        )
        budget_deactivate(budget=budget)
        budget_settle(call_id="c1", actual_usd=D("0.2"), now=NOW)
        assert usage(budget) == (D("0.2"), D(0))


class TestApplicableBudgets:
    def test_project_user_and_agent_budgets(self, project, admin_user):
        bob = UserFactory(username="bob")
        membership_create(project=project, user=bob, role=Role.VIEWER)
        p = make_budget(project, "p")
        mine = make_budget(project, "mine", scope="user", user=admin_user)
        make_budget(project, "bobs", scope="user", user=bob)
        agent = make_budget(project, "agent", scope="agent")
        assert applicable_budgets(project) == [p]
        assert applicable_budgets(project, user=admin_user, agent_budget=agent) == [p, mine, agent]

    def test_a_misconfigured_agent_budget_fails_closed(self, project):
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        with pytest.raises(ValueError, match="another project"):
            applicable_budgets(project, agent_budget=make_budget(other, scope="agent"))
        with pytest.raises(ValueError, match="not agent"):
            applicable_budgets(project, agent_budget=make_budget(project, "p"))


# --- periods ----------------------------------------------------------------------------------


class TestPeriods:
    def test_days_and_months_start_at_midnight_in_the_project_time_zone(self, project):
        project_update(project=project, time_zone="Europe/Berlin")
        daily = make_budget(project, "daily", period="day", limit="1.00")
        monthly = make_budget(project, "monthly", period="month", limit="1.50")
        total = make_budget(project, "total", period="total", limit="10")
        budgets = [daily, monthly, total]
        # 22:30 UTC on 31 January is 23:30 in Berlin; 23:30 UTC is already 1 February there.
        before = datetime(2026, 1, 31, 22, 30, tzinfo=UTC)
        after = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
        budget_reserve(
            call_id="a", project=project, budgets=budgets, amount_usd=D("0.90"), now=before
        )
        budget_settle(call_id="a", actual_usd=D("0.90"))
        with pytest.raises(BudgetExceeded) as denied:
            budget_reserve(
                call_id="b", project=project, budgets=budgets, amount_usd=D("0.20"), now=before
            )
        assert denied.value.budget.name == "daily"
        assert denied.value.period_start == date(2026, 1, 31)
        # A new day and a new month: both start at zero; the total keeps counting.
        budget_reserve(
            call_id="c", project=project, budgets=budgets, amount_usd=D("0.90"), now=after
        )
        assert usage(daily, at=after) == (D(0), D("0.90"))
        assert usage(monthly, at=after) == (D(0), D("0.90"))
        assert usage(total, at=after) == (D("0.90"), D("0.90"))
        assert usage(daily, at=before) == (D("0.90"), D(0))
        starts = set(
            BudgetPeriod.objects.filter(budget=monthly).values_list("period_start", flat=True)
        )
        assert starts == {date(2026, 1, 1), date(2026, 2, 1)}
        assert set(
            BudgetPeriod.objects.filter(budget=total).values_list("period_start", flat=True)
        ) == {TOTAL_PERIOD_START}

    def test_the_same_instant_is_another_day_in_another_time_zone(self):
        at = datetime(2026, 6, 30, 20, 0, tzinfo=UTC)
        assert period_start_for("day", at=at, zone=ZoneInfo("UTC")) == date(2026, 6, 30)
        assert period_start_for("day", at=at, zone=ZoneInfo("Asia/Tokyo")) == date(2026, 7, 1)
        assert period_start_for("month", at=at, zone=ZoneInfo("Asia/Tokyo")) == date(2026, 7, 1)
        assert period_start_for("month", at=at, zone=ZoneInfo("America/Los_Angeles")) == date(
            2026, 6, 1
        )
        assert period_start_for("total", at=at, zone=ZoneInfo("UTC")) == TOTAL_PERIOD_START

    def test_period_bounds_follow_daylight_saving_time(self):
        berlin = ZoneInfo("Europe/Berlin")
        begins, ends = period_bounds("day", date(2026, 3, 29), berlin)
        # Same-zone datetimes subtract as wall time; compare the real instants.
        assert ends.astimezone(UTC) - begins.astimezone(UTC) == timedelta(hours=23)
        begins, ends = period_bounds("month", date(2026, 12, 1), berlin)
        assert (begins.date(), ends.date()) == (date(2026, 12, 1), date(2027, 1, 1))
        assert period_bounds("total", TOTAL_PERIOD_START, berlin) == (None, None)

    def test_the_budget_list_shows_the_current_period(self, project):
        daily = make_budget(project, "daily", period="day")
        budget_reserve(call_id="a", project=project, budgets=[daily], amount_usd=D("0.3"), now=NOW)
        budget_settle(call_id="a", actual_usd=D("0.1"), now=NOW)
        budget_reserve(call_id="b", project=project, budgets=[daily], amount_usd=D("0.2"), now=NOW)
        row = budgets_for_project(project, at=NOW).get(pk=daily.pk)
        assert row.current_period_start == date(2026, 3, 14)
        assert (row.current_spent_usd, row.current_reserved_usd) == (D("0.1"), D("0.2"))
        tomorrow = budgets_for_project(project, at=NOW + timedelta(days=1)).get(pk=daily.pk)
        assert (tomorrow.current_spent_usd, tomorrow.current_reserved_usd) == (D(0), D(0))
        assert [r.call_id for r in reservations_in_flight(daily)] == ["b"]


# --- alerts -----------------------------------------------------------------------------------


class TestAlerts:
    def test_each_threshold_alerts_once_per_period(
        self, project, django_capture_on_commit_callbacks
    ):
        budget = make_budget(
            project, period="day", limit="1.00", hard=False, alert_thresholds=[80, 50, 100]
        )
        assert budget.alert_thresholds == [50, 80, 100]
        received = []

        def receiver(sender, budget, alert, project, **kwargs):
            received.append((budget.name, alert.threshold, alert.spent_usd))

        budget_alert.connect(receiver)
        try:
            spend = [("a", "0.40"), ("b", "0.15"), ("c", "0.10"), ("d", "0.40"), ("e", "0.40")]
            for call_id, amount in spend:
                with django_capture_on_commit_callbacks(execute=True):
                    budget_reserve(
                        call_id=call_id, project=project, budgets=[budget], amount_usd=D(0), now=NOW
                    )
                    budget_settle(call_id=call_id, actual_usd=D(amount), now=NOW)
            # Next day: the same thresholds alert again.
            with django_capture_on_commit_callbacks(execute=True):
                budget_reserve(
                    call_id="f",
                    project=project,
                    budgets=[budget],
                    amount_usd=D(0),
                    now=NOW + timedelta(days=1),
                )
                budget_settle(call_id="f", actual_usd=D("0.60"), now=NOW + timedelta(days=1))
        finally:
            budget_alert.disconnect(receiver)
        assert received == [
            ("monthly", 50, D("0.55")),
            ("monthly", 80, D("1.05")),
            ("monthly", 100, D("1.05")),
            ("monthly", 50, D("0.60")),
        ]
        assert BudgetAlert.objects.count() == 4
        assert actions("budget.alert") == ["budget.alert"] * 4

    def test_the_signal_waits_for_the_commit(self, project, django_capture_on_commit_callbacks):
        budget = make_budget(project, limit="1.00", alert_thresholds=[10])
        received = []

        def receiver(**kwargs):
            received.append(kwargs["alert"].threshold)

        budget_alert.connect(receiver)
        try:
            budget_reserve(call_id="a", project=project, budgets=[budget], amount_usd=D(0), now=NOW)
            with django_capture_on_commit_callbacks(execute=False) as captured:
                budget_settle(call_id="a", actual_usd=D("0.5"), now=NOW)
            # Each audit event also queues its metrics update (governance.metrics).
            callbacks = [c for c in captured if getattr(c, "func", None) is not observe_audit_event]
            assert received == [] and len(callbacks) == 1
            callbacks[0]()
            assert received == [10]
        finally:
            budget_alert.disconnect(receiver)


# --- budget writes ----------------------------------------------------------------------------


class TestBudgetWrites:
    def test_create_is_audited_with_its_settings(self, project):
        budget = make_budget(project, limit="12.5")
        event = AuditEvent.objects.get(action="budget.created")
        assert event.data["limit_usd"] == "12.50000000" and event.data["alert_thresholds"] == [
            50,
            80,
            100,
        ]
        assert budget.hard and budget.active

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"limit": "0"}, "limit_usd"),
            ({"limit": "-1"}, "limit_usd"),
            ({"limit": "0.000000001"}, "limit_usd"),
            ({"alert_thresholds": [50, 50]}, "alert_thresholds"),
            ({"alert_thresholds": [0]}, "alert_thresholds"),
            ({"alert_thresholds": "50"}, "alert_thresholds"),
            ({"scope": "user"}, "user"),
            ({"scope": "galaxy"}, "scope"),
            ({"period": "week"}, "period"),
            ({"name": "Not A Slug"}, "name"),
        ],
    )
    def test_bad_settings_are_refused_by_field(self, project, kwargs, field):
        with pytest.raises(ValidationError) as error:
            make_budget(project, **kwargs)
        assert field in error.value.message_dict
        assert not Budget.objects.exists()

    def test_names_are_unique_per_project(self, project):
        make_budget(project, "same")
        with pytest.raises(ValidationError) as error:
            make_budget(project, "same")
        assert "name" in error.value.message_dict
        other = project_create(slug="globex", name="Globex", creator=UserFactory())
        make_budget(other, "same")

    def test_a_user_budget_needs_a_member_and_only_user_budgets_name_one(self, project, admin_user):
        with pytest.raises(ValidationError) as error:
            make_budget(project, scope="user", user=UserFactory(username="stranger"))
        assert "not a member" in str(error.value.message_dict["user"])
        with pytest.raises(ValidationError) as error:
            make_budget(project, scope="project", user=admin_user)
        assert "user" in error.value.message_dict

    def test_update_changes_the_limit_and_audits_before_and_after(self, project):
        budget = make_budget(project)
        budget_update(budget=budget, limit_usd=D("2.00"), hard=False)
        event = AuditEvent.objects.get(action="budget.updated")
        assert event.data == {
            "before": {"hard": True, "limit_usd": "1.00000000"},
            "after": {"hard": False, "limit_usd": "2.00000000"},
        }

    def test_scope_period_and_user_are_fixed(self, project):
        budget = make_budget(project)
        with pytest.raises(ValidationError) as error:
            budget_update(budget=budget, period="day", scope="agent", bogus=1)
        assert set(error.value.message_dict) == {"period", "scope", "bogus"}

    def test_a_used_budget_cannot_be_deleted_only_deactivated(self, project):
        used = make_budget(project, "used")
        budget_reserve(call_id="c1", project=project, budgets=[used], amount_usd=D("0.1"))
        with pytest.raises(ValidationError):
            budget_delete(budget=used)
        unused = make_budget(project, "unused")
        budget_delete(budget=unused)
        assert list(Budget.objects.values_list("name", flat=True)) == ["used"]
        assert actions("budget.deleted") == ["budget.deleted"]


# --- concurrency (PostgreSQL) -----------------------------------------------------------------


def _reserve_and_settle(project, budgets, i: int, *, worst: Decimal, actual: Decimal) -> bool:
    try:
        budget_reserve(call_id=f"call-{i}", project=project, budgets=budgets, amount_usd=worst)
    except BudgetExceeded:
        return False
    budget_settle(call_id=f"call-{i}", actual_usd=actual)
    return True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    callers = 50

    def test_a_hard_budget_never_settles_more_than_its_limit(self, project):
        """50 callers x $0.05 worst case, each settling $0.05, against $1.00: exactly 20 win."""
        budget = make_budget(project, "hard", limit="1.00", period="day")
        roomy = make_budget(project, "roomy", limit="1000", period="month")
        outcomes = run_concurrently(
            self.callers,
            lambda i: _reserve_and_settle(
                project, [budget, roomy], i, worst=D("0.05"), actual=D("0.05")
            ),
        )
        assert outcomes.count(True) == 20
        spent, reserved = budget_usage(budget).spent_usd, budget_usage(budget).reserved_usd
        assert (spent, reserved) == (D("1.00"), D(0))
        # The other budget of the same calls saw exactly the same 20 calls, nothing more.
        assert budget_usage(roomy).spent_usd == D("1.00")
        assert BudgetReservation.objects.filter(status="settled").count() == 20
        assert AuditEvent.objects.filter(action="budget.reservation.denied").count() == 30

    def test_holds_in_flight_count_until_settled(self, project):
        """All 50 reserve at once while nobody settles: exactly 20 holds fit; they then
        settle below the worst case and the budget ends at the real total."""
        budget = make_budget(project, "hard", limit="1.00")
        reserved = run_concurrently(
            self.callers,
            lambda i: _try_reserve(project, [budget], i, D("0.05")),
        )
        winners = [i for i in reserved if i is not None]
        assert len(winners) == 20
        assert budget_usage(budget).reserved_usd == D("1.00")
        run_concurrently(
            len(winners),
            lambda i: budget_settle(call_id=f"call-{winners[i]}", actual_usd=D("0.03")),
        )
        usage_now = budget_usage(budget)
        assert (usage_now.spent_usd, usage_now.reserved_usd) == (D("0.60"), D(0))

    def test_a_soft_budget_alerts_once_per_threshold(self, project):
        budget = make_budget(
            project, "soft", limit="1.00", hard=False, alert_thresholds=[50, 80, 100]
        )
        received: list[int] = []
        lock = threading.Lock()

        def receiver(sender, alert, **kwargs):
            with lock:
                received.append(alert.threshold)

        budget_alert.connect(receiver)
        try:
            outcomes = run_concurrently(
                self.callers,
                lambda i: _reserve_and_settle(
                    project, [budget], i, worst=D("0.05"), actual=D("0.05")
                ),
            )
        finally:
            budget_alert.disconnect(receiver)
        assert outcomes.count(True) == 50  # soft: nobody is denied
        assert budget_usage(budget).spent_usd == D("2.50")
        assert sorted(received) == [50, 80, 100]
        assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80, 100]
        assert AuditEvent.objects.filter(action="budget.alert").count() == 3

    def test_the_same_call_id_from_many_callers_reserves_and_settles_once(self, project):
        budget = make_budget(project, "hard", limit="1.00")

        def same_call(i: int) -> int:
            reservation = budget_reserve(
                call_id="retried", project=project, budgets=[budget], amount_usd=D("0.40")
            )
            budget_settle(call_id="retried", actual_usd=D("0.30"))
            return reservation.pk

        pks = run_concurrently(20, same_call)
        assert len(set(pks)) == 1
        usage_now = budget_usage(budget)
        assert (usage_now.spent_usd, usage_now.reserved_usd) == (D("0.30"), D(0))
        assert AuditEvent.objects.filter(action="budget.settled").count() == 1


def _try_reserve(project, budgets, i: int, amount: Decimal) -> int | None:
    try:
        budget_reserve(call_id=f"call-{i}", project=project, budgets=budgets, amount_usd=amount)
    except BudgetExceeded:
        return None
    return i
