"""How the kept task counts (PostgreSQL, migrations 0001-0003) learn of status changes.

An UPDATE that changes a task's status or type appends two count rows from a row trigger
(-1 for the old pair, +1 for the new), the cheapest way for the one-row changes of requests
and runs. A sweep that changes thousands of tasks in one statement counts them itself
instead, a few rows in the same statement: it sets ``ops.counted_by_caller`` around that
statement (``counted_by_caller``), which the row trigger's WHEN clause skips, and adds
``deltas_sql``. Every change is counted exactly once either way.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from backend.tasks.models import TaskStatus

from .models import TaskCountDelta

_SET = "SELECT set_config('ops.counted_by_caller', %s, true)"


@contextmanager
def counted_by_caller(cursor):
    """Within the caller's transaction, the row trigger leaves the statements run in this
    block to the caller (PostgreSQL; nothing to do on SQLite, which counts the tasks)."""
    if connection.vendor != "postgresql":
        yield
        return
    cursor.execute(_SET, ["on"])
    yield
    cursor.execute(_SET, [""])


def deltas_sql(*, changed: str, to_status: str) -> str:
    """``INSERT`` of the count rows for the tasks in ``changed`` (a table expression in scope
    with columns ``task_type`` and ``was``, the status each had) that all became
    ``to_status``: one row per (status, type) pair whose count moved."""
    to_status = TaskStatus(to_status).value  # a known status, written as a literal
    table = connection.ops.quote_name(TaskCountDelta._meta.db_table)
    # ``changed`` is read once (a sweep's may hold 100,000 rows), grouped; then each group
    # leaves its status and joins the new one.
    return f"""WITH groups AS (
            SELECT was, task_type, COUNT(*) AS n FROM {changed} GROUP BY was, task_type)
        INSERT INTO {table} (status, task_type, delta)
        SELECT status, task_type, SUM(delta) FROM (
            SELECT was AS status, task_type, -n AS delta FROM groups
            UNION ALL
            SELECT '{to_status}', task_type, n FROM groups
        ) AS moves
        GROUP BY status, task_type HAVING SUM(delta) <> 0"""
