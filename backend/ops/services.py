"""Operator actions on tasks in bulk: purging old finished tasks; the upkeep of the kept
task counts (``models.TaskCountDelta``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from backend.files import services as files
from backend.tasks.models import TERMINAL_STATUSES, Task, TaskStatus
from backend.tasks.services.counts import visible_counts_rebuild

from .models import TaskCountDelta


def purgeable_tasks(*, older_than: timedelta, now: datetime | None = None) -> QuerySet[Task]:
    """Finished tasks (completed, failed, cancelled) that finished before ``now -
    older_than``; an active task never matches, whatever its age."""
    cutoff = (now or timezone.now()) - older_than
    finished_before = Q(completed_at__lt=cutoff) | Q(
        completed_at__isnull=True, updated_at__lt=cutoff
    )
    return Task.objects.filter(finished_before, status__in=TERMINAL_STATUSES).order_by()


def purge_counts(queryset: QuerySet[Task]) -> dict[str, int]:
    """How many of ``queryset`` per status (one query)."""
    rows = queryset.values_list("status").annotate(n=Count("*"))
    return dict(sorted(rows))


def tasks_purge(
    *, older_than: timedelta, batch_size: int = 1000, now: datetime | None = None
) -> dict[str, int]:
    """Delete the purgeable tasks in batches of ``batch_size``, each in its own short
    transaction, so a large purge never holds one long transaction or lock. A batch's rows
    are locked as they are chosen: a task a retry makes active meanwhile is waited for, then
    no longer chosen, and stays (on SQLite the transaction holds the database's write lock).
    Returns the count removed per status."""
    now = now or timezone.now()
    removed: dict[str, int] = {}
    while True:
        with transaction.atomic():
            purgeable = purgeable_tasks(older_than=older_than, now=now)
            ids = list(purgeable.select_for_update().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            batch = Task.objects.filter(pk__in=ids)
            for status, n in purge_counts(batch).items():
                removed[status] = removed.get(status, 0) + n
            # A file a killed run of a report left, its task then failed or cancelled.
            unfinished = batch.filter(task_type=files.REPORT_TYPE).exclude(
                status=TaskStatus.COMPLETED
            )
            files.report_files_discard(task_ids=list(unfinished.values_list("pk", flat=True)))
            batch.delete()
    task_counts_fold()  # each batch appended its own count rows
    return dict(sorted(removed.items()))


# --- kept task counts (PostgreSQL) ------------------------------------------------------

_DELTAS = TaskCountDelta._meta.db_table
_TASKS = Task._meta.db_table

# One statement: the rows this snapshot sees are deleted and their sums put back, one row
# per (status, type). A change committed meanwhile is not in the snapshot, so its row stays
# as it is; two folds at once each put back only what they deleted. Readers see the rows
# before or after, never a mix: the sums never change.
_FOLD_SQL = f"""
    WITH folded AS (
        DELETE FROM {_DELTAS} RETURNING status, task_type, delta
    ), kept AS (
        INSERT INTO {_DELTAS} (status, task_type, delta)
        SELECT status, task_type, SUM(delta) FROM folded
        GROUP BY status, task_type HAVING SUM(delta) <> 0
        RETURNING 1
    )
    SELECT (SELECT COUNT(*) FROM folded), (SELECT COUNT(*) FROM kept)
"""


def task_counts_fold() -> int:
    """Replace the count rows the triggers appended by one row per (status, type), so that
    reading the counts stays a scan of a few rows. Run now and then (Beat) and after a
    purge; the counts read the same before and after. Returns how many rows it removed
    (0 on SQLite, which counts the tasks instead)."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FOLD_SQL)
        folded, kept = cursor.fetchone()
    return folded - kept


def task_counts_rebuild() -> None:
    """Count the tasks afresh into the kept counts (by status and type, and each user's
    visible tasks): for after a bulk load or restore that went around the triggers
    (``session_replication_role = replica``, ``pg_restore --disable-triggers``). Task writes
    wait for the count (a SHARE lock on the tasks), and so does a fold (an EXCLUSIVE lock on
    the count rows: the DELETE then sees the rows a fold that just finished put back), so
    nothing is missed or counted twice. Readers are not held up: they see the old rows until
    the new ones commit."""
    if connection.vendor != "postgresql":
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {_TASKS} IN SHARE MODE")
        cursor.execute(f"LOCK TABLE {_DELTAS} IN EXCLUSIVE MODE")
        cursor.execute(f"DELETE FROM {_DELTAS}")
        cursor.execute(
            f"INSERT INTO {_DELTAS} (status, task_type, delta) "
            f"SELECT status, task_type, COUNT(*) FROM {_TASKS} GROUP BY status, task_type"
        )
        visible_counts_rebuild()
