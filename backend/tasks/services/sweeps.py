"""The sweeps Beat runs (and ``manage.py`` commands): expiry, dispatch, rescue. Each is
set-based: one guarded bulk statement, never a loop over rows in Python."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from itertools import pairwise

from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, connections, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from backend.notifications import services as notifications
from backend.notifications.models import Event
from backend.ops import counts
from backend.tasks import queue, types
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus

DEADLINE_EXCEEDED = "deadline exceeded"


def _compiled_update(queryset: QuerySet[Task], changes: dict):
    """``queryset.update(**changes)`` as (SQL, parameters, the WHERE alone as SQL and
    parameters); None when it selects nothing. The WHERE is the UPDATE's own: joins to
    other tables are already turned into a subquery of ids."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(changes)
    query.order_by = ()
    query.annotations = {}
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:  # e.g. an empty selection: nothing to change
        return None
    try:
        where, where_params = compiler.compile(query.where)
        where = f"WHERE {where}"
    except FullResultSet:
        where, where_params = "", []
    return sql, params, where, where_params


def _update_notifying(
    queryset: QuerySet[Task], event: str, *, from_statuses: tuple[str, ...], **changes
) -> int:
    """``queryset.update(**changes)`` for its tasks in ``from_statuses``, as guarded bulk
    UPDATEs, with the notifications of the rows they changed written by the database in the
    same transaction, set by set: no row is read into Python or planned one by one (only
    the new notifications' ids come back, to be sent after commit).

    PostgreSQL: one statement, ``WITH was_pending AS (UPDATE … WHERE status = 'pending'
    RETURNING …), … INSERT … SELECT …``: one UPDATE per status the tasks are leaving, so
    each changed row is known with the status it had, and the statement writes the kept
    counts' rows for them itself (backend/ops/counts.py) as well as the notifications. A row
    another transaction changes meanwhile is skipped by its UPDATE (its WHERE is checked
    again), and left to the next sweep.

    SQLite cannot nest an UPDATE in a WITH; its writers are serialised (the transaction holds
    the write lock), so an ``INSERT … SELECT`` over the rows the UPDATE's own WHERE picks,
    then that UPDATE, see the same rows."""
    table = connection.ops.quote_name(Task._meta.db_table)
    insert_sql, insert_params, marked_at = notifications.outbox_insert_sql(
        tasks="changed", event=event
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            parts, leaving, params = [], [], []
            for status in from_statuses:
                compiled = _compiled_update(queryset.filter(status=status), changes)
                if compiled is None:
                    continue
                name = f"was_{TaskStatus(status).value}"
                parts.append(
                    f"{name} AS ({compiled[0]} "
                    f"RETURNING {table}.id, {table}.owner_id, {table}.task_type)"
                )
                leaving.append(f"SELECT id, owner_id, task_type, '{status}' AS was FROM {name}")
                params.extend(compiled[1])
            if not parts:
                return 0
            with counts.counted_by_caller(cursor):
                cursor.execute(
                    f"""WITH {", ".join(parts)},
                        changed AS ({" UNION ALL ".join(leaving)}),
                        counted AS ({counts.deltas_sql(changed="changed", to_status=changes["status"])}),
                        written AS ({insert_sql} RETURNING id)
                        SELECT (SELECT count(*) FROM changed), ARRAY(SELECT id FROM written)""",
                    [*params, *insert_params],
                )
                count, ids = cursor.fetchone()
        else:
            compiled = _compiled_update(queryset.filter(status__in=from_statuses), changes)
            if compiled is None:
                return 0
            update_sql, update_params, where, where_params = compiled
            cursor.execute(
                f"""WITH changed AS MATERIALIZED (
                        SELECT {table}.id, {table}.owner_id FROM {table} {where})
                    {insert_sql} RETURNING id""",
                [*where_params, *insert_params],
            )
            ids = [uuid.UUID(pk) for (pk,) in cursor.fetchall()]
            cursor.execute(update_sql, update_params)
            count = cursor.rowcount
        notifications.send_on_commit(ids, marked_at)
    return count


# From this many overdue tasks on, the expiry is EXPIRY_PARTS statements that run at the same
# time, each on its own connection over its own range of ids (disjoint rows: they never wait
# for each other). A bulk UPDATE is one backend on one core, and most of its cost is per row
# (the new row version and its index entries); below this, a second connection is not worth
# opening.
PARALLEL_EXPIRY_FROM = 10_000
EXPIRY_PARTS = 2


def tasks_expire(*, queryset: QuerySet[Task] | None = None) -> int:
    """Every active task past its deadline becomes failed: one guarded bulk UPDATE (and one
    bulk INSERT of the notifications it causes, in the same transaction); for a large number
    of them on PostgreSQL, one such statement per range of ids, at the same time."""
    now = timezone.now()
    queryset = Task.objects.all() if queryset is None else queryset
    overdue = queryset.filter(deadline__lt=now)

    def expire(tasks: QuerySet[Task]) -> int:
        # Each part stamps its rows with the time it runs. With one time for all, every part
        # would add its entries to the finished tasks' index (keyed by completed_at) on the
        # same leaf page, and the parts would wait on each other's lock of that page.
        at = timezone.now()
        return _update_notifying(
            tasks,
            Event.FAILED,
            from_statuses=ACTIVE_STATUSES,
            status=TaskStatus.FAILED,
            error=DEADLINE_EXCEEDED,
            completed_at=at,
            updated_at=at,
        )

    if not _worth_splitting(overdue.filter(status__in=ACTIVE_STATUSES)):
        return expire(overdue)
    return sum(_at_once(expire, [overdue.filter(part) for part in _id_ranges(EXPIRY_PARTS)]))


def task_expire_if_overdue(*, task_id) -> bool:
    """The expiry of one task, as the sweep would do it (guarded, with its notifications):
    for a run that found its deadline passed (its heartbeat or its result refused), so the
    task fails now rather than at the next sweep. False when it is not active and overdue."""
    return bool(tasks_expire(queryset=Task.objects.filter(pk=task_id)))


def _worth_splitting(active: QuerySet[Task]) -> bool:
    """PostgreSQL, outside a transaction (the parts commit one by one, and another
    connection would not see the caller's uncommitted rows), and at least
    PARALLEL_EXPIRY_FROM rows to change (read from the active-deadline index, no further)."""
    if EXPIRY_PARTS < 2 or connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    return active[PARALLEL_EXPIRY_FROM - 1 : PARALLEL_EXPIRY_FROM].exists()


def _id_ranges(parts: int) -> list[Q]:
    """``parts`` conditions that split the UUIDs into ranges of equal width (random ids: of
    about equal size)."""
    bounds = [None, *(uuid.UUID(int=(i << 128) // parts) for i in range(1, parts)), None]
    ranges = []
    for low, high in pairwise(bounds):
        condition = Q()
        if low is not None:
            condition &= Q(id__gte=low)
        if high is not None:
            condition &= Q(id__lt=high)
        ranges.append(condition)
    return ranges


def _at_once(work, parts: list) -> list:
    """``work(part)`` for every part at the same time: the first in this thread, the others
    each in a thread of its own, on its own database connection (closed when it is done).
    Each part is its own transaction; an error in one is raised once all have ended."""
    with ThreadPoolExecutor(len(parts) - 1) as pool:
        others = [pool.submit(_on_own_connection, work, part) for part in parts[1:]]
        done = [work(parts[0])]
        return done + [other.result() for other in others]


def _on_own_connection(work, part):
    try:
        return work(part)
    finally:
        connections.close_all()  # this thread's


def tasks_dispatch(
    *,
    batch_size: int = 500,
    resend_after: int | None = None,
    resend_before: datetime | None = None,
) -> dict[str, int]:
    """Make due scheduled tasks pending, then send pending worker tasks that were never
    sent (or sent ``resend_after`` seconds ago, TASK_REDISPATCH_AFTER by default, or before
    ``resend_before``, and still not started): at most ``batch_size``, by priority, and
    within one those never sent first (they waited behind a backlog sent once already)."""
    now = timezone.now()
    released = Task.objects.filter(status=TaskStatus.SCHEDULED, run_at__lte=now).update(
        status=TaskStatus.PENDING, enqueued_at=None, updated_at=now
    )
    if resend_before is None:
        resend_before = _resend_before(resend_after, now)
    due = [
        queue.Job(*row)
        for row in _to_send(resend_before)
        .order_by("-priority_rank", F("enqueued_at").asc(nulls_first=True), "created_at")
        .values_list(*queue.JOB_FIELDS)[:batch_size]
    ]
    sent = queue.publish(due)
    if sent:  # one UPDATE for the batch; a worker may have claimed some already
        Task.objects.filter(pk__in=sent).update(enqueued_at=now)
    return {"released": released, "sent": len(sent), "due": len(due)}


def tasks_dispatch_all(*, batch_size: int = 500, resend_after: int | None = None) -> dict[str, int]:
    """``tasks_dispatch`` a batch after another until every due task was sent, or the
    broker took not all of one batch (then ``due`` counts every task still due). For
    ``manage.py dispatch_tasks``, which sent one batch of 500 and said "sent 500 of 500"
    with 1,201 still unsent."""
    resend_before = _resend_before(resend_after, timezone.now())  # those sent now: not again
    totals = {"released": 0, "sent": 0, "due": 0}
    while True:
        outcome = tasks_dispatch(batch_size=batch_size, resend_before=resend_before)
        totals = {key: totals[key] + outcome[key] for key in totals}
        if outcome["sent"] < outcome["due"]:
            totals["due"] = totals["sent"] + _to_send(resend_before).count()
            return totals
        if outcome["due"] < batch_size:
            return totals


def _resend_before(resend_after: int | None, now: datetime) -> datetime:
    seconds = settings.TASK_REDISPATCH_AFTER if resend_after is None else resend_after
    return now - timedelta(seconds=seconds)


def _to_send(resend_before: datetime) -> QuerySet[Task]:
    """Pending worker tasks never sent, or sent before ``resend_before`` and not started."""
    return Task.objects.filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=resend_before),
        status=TaskStatus.PENDING,
        task_type__in=types.worker_type_names(),
    )


def database_up_since():
    """When the database server last started (PostgreSQL), or None (SQLite: no server)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        return cursor.fetchone()[0]


def tasks_rescue() -> dict[str, int]:
    """Running worker tasks whose heartbeat is stale go back to pending, or fail when they
    are out of attempts. The dispatcher sends the returned ones again.

    Not until the database has been up for TASK_HEARTBEAT_TIMEOUT: while it was down no
    worker could record a heartbeat (nor a finished run its outcome), so right after a
    restart every running task looked lost, and the rescue, first to reach the database,
    ran again runs that were alive or done (a mail sent twice)."""
    now = timezone.now()
    up_since = database_up_since()
    if up_since is not None and up_since > now - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT):
        return {"requeued": 0, "failed": 0}
    stale = Task.objects.filter(
        status=TaskStatus.RUNNING,
        task_type__in=types.worker_type_names(),
        heartbeat_at__lt=now - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT),
    )
    failed = _update_notifying(
        stale.filter(attempts__gte=F("max_attempts")),
        Event.FAILED,
        from_statuses=(TaskStatus.RUNNING,),
        status=TaskStatus.FAILED,
        error="the worker running this task was lost, and it is out of attempts",
        completed_at=now,
        updated_at=now,
    )
    requeued = stale.filter(attempts__lt=F("max_attempts")).update(
        status=TaskStatus.PENDING,
        progress=0,
        heartbeat_at=None,
        enqueued_at=None,
        updated_at=now,
    )
    return {"requeued": requeued, "failed": failed}
