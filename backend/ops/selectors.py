"""The operational figures of SPEC §8, read in SQL: each figure is one query (aggregates in
the database, never a loop over task rows), served by an index on a large table (see the
indexes of ``Task.Meta``) or, for the counts on PostgreSQL, by counts kept by triggers
(``models.TaskCountDelta``). ``stats()`` adds what only the broker knows (``broker.py``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    IntegerField,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest, TruncMinute
from django.utils import timezone

from backend.tasks import types
from backend.tasks.models import ACTIVE_SQL, Task, TaskStatus

from . import broker
from .models import TaskCountDelta

THROUGHPUT_MINUTES = 60
RUN_TIME_WINDOW = timedelta(hours=24)


def _counted_groups() -> QuerySet:
    """(status, task_type, n) per pair. PostgreSQL: the sums of the count rows its triggers
    keep (``models.TaskCountDelta``), a few rows whatever the number of tasks, exact in the
    statement's snapshot as a count of the tasks would be. SQLite: the tasks counted."""
    if connection.vendor == "postgresql":
        return (
            TaskCountDelta.objects.order_by()
            .values_list("status", "task_type")
            .annotate(n=Sum("delta"))
        )
    return Task.objects.order_by().values_list("status", "task_type").annotate(n=Count("*"))


def counts() -> dict[str, dict[str, int]]:
    """Tasks by status and by type, from one grouped query (``_counted_groups``). Every
    status and every registered type is listed, with 0 when there is none."""
    by_status = dict.fromkeys(TaskStatus.values, 0)
    by_type = dict.fromkeys(sorted(types.names()), 0)
    for status, task_type, n in _counted_groups():  # one row per (status, type) pair
        if n:  # a pair whose tasks are all gone sums to 0: listed as if never there
            by_status[status] = by_status.get(status, 0) + n
            by_type[task_type] = by_type.get(task_type, 0) + n
    return {"by_status": by_status, "by_type": by_type}


def throughput(now: datetime) -> list[dict[str, Any]]:
    """Tasks completed and failed in each of the last 60 whole minutes and the current one,
    oldest first (61 entries; the last is the minute still running)."""
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=THROUGHPUT_MINUTES)
    rows = (
        Task.objects.filter(
            status__in=(TaskStatus.COMPLETED, TaskStatus.FAILED), completed_at__gte=first
        )
        .order_by()
        .annotate(minute=TruncMinute("completed_at"))
        .values_list("minute", "status")
        .annotate(n=Count("*"))
    )
    slots = {
        first + timedelta(minutes=i): {"completed": 0, "failed": 0}
        for i in range(THROUGHPUT_MINUTES + 1)
    }
    for minute, status, n in rows:
        slot = slots.get(minute)
        if slot is not None:
            slot[status] = n
    return [{"minute": minute, **slot} for minute, slot in slots.items()]


_RUN_TIMES_POSTGRESQL = """
    SELECT task_type, COUNT(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds)
    FROM (
        SELECT task_type, EXTRACT(EPOCH FROM completed_at - started_at) AS seconds
        FROM tasks_task
        WHERE status = 'completed' AND completed_at >= %s AND started_at IS NOT NULL
    ) AS runs
    GROUP BY task_type ORDER BY task_type
"""

# percentile_cont by hand: rank the runs of each type, then interpolate between the two runs
# around position p * (n - 1), as PostgreSQL does.
_RUN_TIMES_SQLITE = """
    WITH runs AS (
        SELECT task_type,
               (julianday(completed_at) - julianday(started_at)) * 86400.0 AS seconds
        FROM tasks_task
        WHERE status = 'completed' AND completed_at >= %s AND started_at IS NOT NULL
    ), ranked AS (
        SELECT task_type, seconds,
               ROW_NUMBER() OVER (PARTITION BY task_type ORDER BY seconds) - 1 AS i,
               COUNT(*) OVER (PARTITION BY task_type) AS n
        FROM runs
    )
    SELECT task_type, MAX(n), {p50}, {p95}
    FROM ranked GROUP BY task_type ORDER BY task_type
"""


def _interpolated(p: float) -> str:
    position = f"((n - 1) * {p})"
    low = f"CAST({position} AS INTEGER)"
    weight = f"({position} - {low})"
    return (
        f"SUM(CASE WHEN i = {low} THEN seconds * (1 - {weight}) "
        f"WHEN i = {low} + 1 THEN seconds * {weight} ELSE 0 END)"
    )


def run_times(now: datetime) -> dict[str, dict[str, float | int]]:
    """p50 and p95 of ``completed_at - started_at`` (seconds) per type, over the tasks
    completed in the last 24 hours: ``percentile_cont`` on PostgreSQL, the same interpolation
    in one windowed query on SQLite."""
    if connection.vendor == "postgresql":
        sql = _RUN_TIMES_POSTGRESQL
    else:
        sql = _RUN_TIMES_SQLITE.format(p50=_interpolated(0.5), p95=_interpolated(0.95))
    with connection.cursor() as cursor:
        cursor.execute(sql, [now - RUN_TIME_WINDOW])
        rows = cursor.fetchall()
    return {
        task_type: {"count": n, "p50": round(float(p50), 3), "p95": round(float(p95), 3)}
        for task_type, n, p50, p95 in rows
    }


def oldest_pending_age(now: datetime) -> float | None:
    """Seconds the longest-waiting pending task has waited for a worker: since it was
    created, or since its ``run_at`` when that is later (a scheduled task released, a
    retry's backoff); ``None`` when none is pending. A manual task waits for a person, not
    a worker (a to-do left for days would pin the figure at days): left out."""
    waiting = Task.objects.filter(
        status=TaskStatus.PENDING, task_type__in=types.worker_type_names()
    )
    since = Greatest("created_at", Coalesce("run_at", "created_at"))
    oldest = waiting.aggregate(at=Min(since))["at"]
    return None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3)


def database_figures(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    return {
        **counts(),
        "throughput": throughput(now),
        "run_times": run_times(now),
        "oldest_pending_age": oldest_pending_age(now),
    }


def stats(now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the stats API; the broker's are ``None`` when it did not answer in
    time."""
    now = now or timezone.now()
    depths, online = broker.figures()
    return {
        "generated_at": now,
        **database_figures(now),
        "queue_depth": depths,
        "workers_online": None if online is None else len(online),
        "workers": online,
    }


def _count_of_user(field: str, *conditions, **filters) -> Coalesce:
    counted = (
        Task.objects.filter(*conditions, **{field: OuterRef("pk")}, **filters)
        .order_by()
        .values(field)
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def with_task_counts(users: QuerySet) -> QuerySet:
    """Users with their task statistics as columns of the same query (a counting subquery
    each, on the owner and assignee indexes): tasks owned, active tasks held (the
    MAX_ACTIVE_TASKS limit), tasks owned that completed, that failed."""
    return users.annotate(
        tasks_owned=_count_of_user("owner"),
        # The statuses written in the statement: the partial index of active tasks serves it.
        tasks_active=_count_of_user(
            "assignee", RawSQL(ACTIVE_SQL, (), output_field=BooleanField())
        ),
        tasks_completed=_count_of_user("owner", status=TaskStatus.COMPLETED),
        tasks_failed=_count_of_user("owner", status=TaskStatus.FAILED),
    )
