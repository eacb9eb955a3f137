"""controlplane.db: the hand-written statements of the hot paths write and read what the
ORM would, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents.models import AgentTurn
from controlplane.db import (
    get_for_update,
    insert_unless_exists,
    instances_from_row,
    select_list,
    update_where,
)
from controlplane.models import Project
from governance.models import BudgetReservation
from tests.agents.runtime.conftest import builtin, make_agent, scripted_endpoint

pytestmark = pytest.mark.django_db


def reservation(project, call_id="c1", amount="0.5"):
    now = timezone.now()
    return BudgetReservation(
        call_id=call_id,
        project=project,
        amount_usd=Decimal(amount),
        created_at=now,
        expires_at=now + timedelta(minutes=5),
    )


def test_insert_unless_exists_inserts_once(project):
    first = reservation(project)
    assert insert_unless_exists(first) is True and first.pk is not None
    again = reservation(project, amount="9")
    with transaction.atomic():  # no error, so no savepoint needed around it
        assert insert_unless_exists(again) is False
    assert again.pk is None
    stored = BudgetReservation.objects.get(call_id="c1")
    assert (stored.pk, stored.amount_usd, stored.status) == (first.pk, Decimal("0.5"), "reserved")


def test_rows_become_instances_with_null_outer_joins_as_none(project):
    row_sql, names = select_list(BudgetReservation, "r")
    project_sql, project_names = select_list(Project, "p", exclude=("name",))
    insert_unless_exists(reservation(project))
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {row_sql}, {project_sql} FROM {qn(BudgetReservation._meta.db_table)} r "  # noqa: S608
            f"LEFT JOIN {qn(Project._meta.db_table)} p ON p.id = r.project_id + 1000"
        )
        row = cursor.fetchone()
    loaded, missing = instances_from_row(row, (BudgetReservation, names), (Project, project_names))
    assert missing is None
    assert loaded.amount_usd == Decimal("0.5") and loaded.expires_at.tzinfo is not None
    assert "name" not in project_names and "slug" in project_names


def test_get_for_update_loads_the_row_or_raises(project):
    with transaction.atomic():
        locked = get_for_update(Project, project.pk)
        assert (locked.slug, locked.name) == (project.slug, project.name)
        with pytest.raises(Project.DoesNotExist):
            get_for_update(Project, project.pk + 1000)


def test_update_where_adapts_values_and_checks_its_conditions(project, admin_user):
    scripted_endpoint(project, {"responses": [{"text": "x"}]})
    builtin(project, "echo")
    version = make_agent(project, admin_user, grants=[{"tool": "echo"}]).active_version
    turn = AgentTurn.objects.create(agent_version=version, input="go")
    later = timezone.now() + timedelta(hours=1)
    values = {
        "status": "completed",
        "messages": [{"parts": [{"content": "é", "n": 1}]}],
        "cost_usd": Decimal("0.00012345"),
        "updated_at": later,
    }
    # A condition that does not hold changes nothing.
    assert update_where(AgentTurn, values, {"id": turn.pk, "status": "parked"}) == 0
    assert update_where(AgentTurn, values, {"id": turn.pk, "status": "running"}) == 1
    turn.refresh_from_db()
    assert turn.status == "completed"
    assert turn.messages == [{"parts": [{"content": "é", "n": 1}]}]
    assert turn.cost_usd == Decimal("0.00012345") and turn.updated_at == later
