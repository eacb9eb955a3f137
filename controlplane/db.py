"""Small SQL helpers for the governed call path's hot statements.

The ORM compiles every statement anew (for an INSERT of a 25-column row that is more CPU
than the database round trip). The helpers here build their SQL once per model and
database vendor and adapt values with the fields' own ``get_db_prep_save``, so what they
write is what ``Model.save`` would write. They work on PostgreSQL and SQLite (>= 3.35,
for ``RETURNING``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connection, models


@cache
def _insert_sql(model: type[models.Model], vendor: str) -> tuple[str, tuple[models.Field, ...]]:
    meta = model._meta
    fields = tuple(f for f in meta.local_concrete_fields if not f.primary_key)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({marks}) "  # noqa: S608 - names are ours
        f"ON CONFLICT DO NOTHING RETURNING {qn(meta.pk.column)}"
    )
    return sql, fields


def insert_unless_exists(obj: models.Model) -> bool:
    """INSERT ``obj`` (a new instance of a model with an auto primary key) unless a row
    with one of its unique values exists: ``INSERT ... ON CONFLICT DO NOTHING RETURNING
    id``. Returns True and sets ``obj.pk`` when the row was inserted; False when it
    existed (nothing written and no error, so the caller's transaction goes on without a
    savepoint). A concurrent insert of the same value makes this wait for that transaction,
    then do nothing if it committed. Other constraint violations (NOT NULL, CHECK, foreign
    keys) raise ``IntegrityError`` as usual. Field defaults and ``pre_save`` (``auto_now``)
    apply as in ``Model.save``; model ``save()`` overrides and signals do not run.
    """
    sql, fields = _insert_sql(type(obj), connection.vendor)
    params: list[Any] = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = connection.alias
    return True


@cache
def _converters(model: type[models.Model], names: tuple[str, ...], vendor: str) -> tuple:
    out = []
    for name in names:
        field = model._meta.get_field(name)
        col = field.get_col(model._meta.db_table)
        out.append(
            (col, connection.ops.get_db_converters(col) + field.get_db_converters(connection))
        )
    return tuple(out)


def instance_from_row(model: type[models.Model], names: tuple[str, ...], row) -> models.Model:
    """A ``model`` instance loaded from a raw ``row`` holding the attribute values of
    ``names`` (attnames, in order), converted as the ORM would (e.g. SQLite's decimals);
    the other fields are deferred (read on first access, as with ``.only()``)."""
    values = []
    for value, (col, converters) in zip(
        row, _converters(model, names, connection.vendor), strict=True
    ):
        for converter in converters:
            value = converter(value, col, connection)
        values.append(value)
    return model.from_db(connection.alias, list(names), values)


@cache
def _select_list(
    model: type[models.Model], alias: str, exclude: tuple[str, ...], vendor: str
) -> tuple[str, tuple[str, ...]]:
    qn = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if f.name not in exclude]
    return ", ".join(f"{alias}.{qn(f.column)}" for f in fields), tuple(f.attname for f in fields)


def select_list(
    model: type[models.Model], alias: str, exclude: tuple[str, ...] = ()
) -> tuple[str, tuple[str, ...]]:
    """``("alias.col, alias.col2, ...", attnames)``: every concrete column of ``model``
    (but the fields named in ``exclude``, left deferred) under the table alias ``alias``,
    for a hand-written SELECT whose rows ``instances_from_row`` turns back into instances
    (built once per model, alias, exclusions and database vendor)."""
    return _select_list(model, alias, exclude, connection.vendor)


def select_clause(
    *parts: tuple,
) -> tuple[str, tuple[tuple[type[models.Model], tuple[str, ...]], ...]]:
    """``("SELECT a.col, ..., b.col, ...", ((model, attnames), ...))`` for the
    ``(model, alias)`` or ``(model, alias, exclude)`` parts of a hand-written join, in
    order: the second item is what ``instances_from_row`` cuts each row by."""
    columns = [select_list(*part) for part in parts]
    clause = "SELECT " + ", ".join(sql for sql, _ in columns)
    return clause, tuple((part[0], names) for part, (_, names) in zip(parts, columns, strict=True))


def fetch_instances(sql: str, params: list[Any], parts: tuple) -> list[list]:
    """Run a hand-written SELECT (its column list from ``select_clause``, whose ``parts``
    are passed here) and return every row cut into its instances (``instances_from_row``)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [instances_from_row(row, *parts) for row in rows]


def instances_from_row(row, *parts: tuple[type[models.Model], tuple[str, ...]]) -> list:
    """Cut ``row`` (the columns of several ``select_list``s, in order) into one instance
    per ``(model, attnames)`` part (``instance_from_row``); a part whose primary key is
    NULL (an outer join that found nothing) gives ``None``."""
    out: list[models.Model | None] = []
    start = 0
    for model, names in parts:
        values = row[start : start + len(names)]
        start += len(names)
        pk_index = names.index(model._meta.pk.attname)
        out.append(None if values[pk_index] is None else instance_from_row(model, names, values))
    return out


@cache
def _locked_get_sql(model: type[models.Model], vendor: str) -> tuple[str, tuple]:
    qn = connection.ops.quote_name
    select, parts = select_clause((model, "t"))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"{select} FROM {qn(model._meta.db_table)} t "  # noqa: S608 - names are ours
        f"WHERE t.{qn(model._meta.pk.column)} = %s{lock}"
    )
    return sql, parts


def get_for_update(model: type[models.Model], pk: Any) -> models.Model:
    """``model.objects.select_for_update().get(pk=pk)`` by a hand-written query (``FOR
    UPDATE`` where the database has it; SQLite holds its write lock from ``BEGIN``). Call
    inside a transaction. Raises ``model.DoesNotExist``."""
    sql, parts = _locked_get_sql(model, connection.vendor)
    rows = fetch_instances(sql, [pk], parts)
    if not rows:
        raise model.DoesNotExist(f"{model._meta.object_name} {pk} does not exist")
    return rows[0][0]


@cache
def _update_sql(
    model: type[models.Model], names: tuple[str, ...], where: tuple[str, ...], vendor: str
) -> tuple[str, tuple[models.Field, ...], tuple[models.Field, ...]]:
    qn = connection.ops.quote_name
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in names)
    conditions = tuple(meta.get_field(name) for name in where)
    assignments = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    tests = " AND ".join(f"{qn(f.column)} = %s" for f in conditions)
    sql = f"UPDATE {qn(meta.db_table)} SET {assignments} WHERE {tests}"  # noqa: S608 - names are ours
    return sql, fields, conditions


def update_where(model: type[models.Model], values: dict[str, Any], where: dict[str, Any]) -> int:
    """``model.objects.filter(**where).update(**values)`` by a hand-written statement
    (built once per model, field names and vendor): ``values`` and ``where`` map field
    names to plain values (no expressions, no NULL in ``where``), adapted with the fields'
    ``get_db_prep_save`` as ``QuerySet.update`` adapts them. Returns the rows changed."""
    sql, fields, conditions = _update_sql(model, tuple(values), tuple(where), connection.vendor)
    params = [
        f.get_db_prep_save(value, connection)
        for f, value in zip(fields, values.values(), strict=True)
    ]
    params += [
        f.get_db_prep_save(value, connection)
        for f, value in zip(conditions, where.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
