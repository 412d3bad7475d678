"""The count of the tasks each user sees (owned, or given to them by someone else) that
PostgreSQL keeps for the list (``VisibleTaskCount``, kept by the triggers of migrations 0004
and 0009)."""

from __future__ import annotations

from django.db import connection

from backend.tasks.models import Task, VisibleTaskCount

_COUNTS = VisibleTaskCount._meta.db_table
_TASKS = Task._meta.db_table
_RECOUNT = f"""
    INSERT INTO {_COUNTS} (user_id, total)
    SELECT who, COUNT(*) FROM (
        SELECT owner_id AS who FROM {_TASKS}
        UNION ALL
        SELECT assignee_id FROM {_TASKS}
            WHERE assignee_id IS NOT NULL AND assignee_id <> owner_id
    ) AS visible GROUP BY who
"""


def visible_counts_rebuild() -> None:
    """Count every user's visible tasks afresh, for after a load or restore that went around
    the triggers. The caller holds, in its transaction, a lock on the tasks that keeps task
    writes out meanwhile (SHARE); readers see the old counts until it commits."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_COUNTS}")
        cursor.execute(_RECOUNT)
