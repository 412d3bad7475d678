"""Statements on the hot paths (a task's create, its run, the list) written once as SQL.

The ORM compiles a statement afresh on every call; on the paths every request or every run
takes, that costs more CPU than the database spends on the statement. These helpers take
their columns and values from the models' own fields, so what they write is what
``save()`` or ``update()`` would write.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, Func, Model, Q


def db() -> BaseDatabaseWrapper:
    """This thread's connection to the default database. ``django.db.connection`` is a proxy
    that looks it up again (a context-local lookup) on every attribute read; the hot paths read
    a connection a dozen times per statement (each field's value is prepared with it), so they
    look it up once with this and use what it returns."""
    return connections[DEFAULT_DB_ALIAS]


class _IsTrue(Func):
    template = "(%(expressions)s) IS TRUE"
    output_field = BooleanField()


def key_guard(condition: Q) -> Func:
    """``condition`` as the guard of a statement that picks rows by their key (a state
    change of one row, or of a list of ids): ``(…) IS TRUE``. It keeps the same rows (a WHERE
    keeps a row only when its condition is true), but no partial index whose condition
    follows from the guard (pending rows, active tasks) qualifies for the statement any more,
    only the key does.

    The planner sizes a partial index by what it held at the last ANALYZE: one taken while
    nothing was pending makes it look empty, and a statement planned with its values
    (psycopg's first executions on a connection, every one with
    DATABASE_SERVER_SIDE_BINDING=false) would scan all the rows it holds now instead of
    looking up one key (measured: 15 ms instead of 0.1 ms with 100,000 tasks pending)."""
    return _IsTrue(condition)


def quoted(name: str) -> str:
    return connection.ops.quote_name(name)


@functools.cache
def _insert_sql(model: type[Model], vendor: str, guarded: bool) -> str:
    """The INSERT of every concrete field of ``model``, written once per database vendor;
    ``guarded``: of a row that is written only if a condition holds (a ``WHERE`` follows)."""
    fields = model._meta.concrete_fields
    columns = ", ".join(quoted(field.column) for field in fields)
    into = f"INSERT INTO {quoted(model._meta.db_table)} ({columns})"
    if guarded:
        return f"{into} SELECT {placeholders(fields)} WHERE"
    return f"{into} VALUES ({placeholders(fields)})"


def insert(instance: Model, *, only_if: tuple[str, list] | None = None) -> bool:
    """INSERT one new row with every concrete field of ``instance`` (its primary key set in
    Python, e.g. a UUID), as ``Model.objects.create`` would, in one statement. The model has
    no ``pre_save``/``post_save`` receivers on this path; ``auto_now`` fields must be set
    by the caller.

    ``only_if``: an SQL condition and its parameters, checked by the same statement; when it
    is false nothing is written and the answer is False."""
    fields = instance._meta.concrete_fields
    here = db()
    values = [field.get_db_prep_save(getattr(instance, field.attname), here) for field in fields]
    statement = _insert_sql(type(instance), here.vendor, only_if is not None)
    if only_if is not None:
        condition, condition_params = only_if
        statement = f"{statement} {condition}"
        values.extend(condition_params)
    with here.cursor() as cursor:
        cursor.execute(statement, values)
        if cursor.rowcount == 0:
            return False
    instance._state.adding = False
    instance._state.db = here.alias
    return True


def assignments(model: type[Model], changes: dict[str, Any]) -> tuple[str, list]:
    """``col = %s, …`` and its parameters for an UPDATE of ``changes`` (field name → value),
    each value prepared by its field (JSON, datetimes, None as SQL NULL)."""
    text, fields = _assignments(model, tuple(changes))
    here = db()
    return text, [
        field.get_db_prep_save(value, here)
        for field, value in zip(fields, changes.values(), strict=True)
    ]


@functools.cache
def _assignments(model: type[Model], names: tuple[str, ...]) -> tuple[str, tuple]:
    fields = tuple(model._meta.get_field(name) for name in names)
    return ", ".join(f"{quoted(field.column)} = %s" for field in fields), fields


def placeholders(values: Iterable) -> str:
    return ", ".join("%s" for _ in values)


class Rows:
    """Model instances from a statement written once, as ``Model.objects.raw`` would build
    them, with what ``raw`` works out on every call (which column is which field, and the
    database's converters for them) worked out once per database vendor.

    The statement selects the model's concrete fields first, in ``columns`` order, then
    ``extra`` columns, which become attributes of each instance."""

    def __init__(self, model: type[Model], extra: tuple[str, ...] = ()):
        self.model = model
        self.fields = model._meta.concrete_fields
        self.extra = extra
        self._converters: dict[str, list] = {}

    def columns(self, alias: str) -> str:
        """The model's columns, for ``SELECT {columns}, … FROM {table} AS {alias}``."""
        return ", ".join(f"{alias}.{quoted(field.column)}" for field in self.fields)

    def _converters_for(self, here: BaseDatabaseWrapper) -> list:
        vendor = here.vendor
        if vendor not in self._converters:
            found = []
            for position, field in enumerate(self.fields):
                col = field.get_col(self.model._meta.db_table)
                for convert in here.ops.get_db_converters(col) + field.get_db_converters(here):
                    found.append((position, convert, col))
            self._converters[vendor] = found
        return self._converters[vendor]

    def fetch(self, statement: str, params: list) -> list[Model]:
        here = db()
        with here.cursor() as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        converters = self._converters_for(here)
        width = len(self.fields)
        found = []
        for row in rows:
            values = list(row[:width])
            for position, convert, col in converters:
                values[position] = convert(values[position], col, here)
            instance = self.model.from_db(here.alias, None, values)
            for name, value in zip(self.extra, row[width:], strict=True):
                setattr(instance, name, value)
            found.append(instance)
        return found
