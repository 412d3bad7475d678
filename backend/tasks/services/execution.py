"""A run on a worker, in two statements: the claim (pending → running) and the outcome
(running → completed, failed, or scheduled again), each a guarded UPDATE written once as
SQL; progress reports in between double as the heartbeat. A run of an instant type (a pure
computation of milliseconds, ``TaskType.instant``) reads the pending task instead of
claiming it, and its outcome is one guarded UPDATE from pending: one row version written
per run instead of two, and nothing left ``running`` if the worker dies in between. When
its message carries the input (PostgreSQL), it is not even read: the outcome's statement
is the whole run, notifications included (``task_finish_unread``).

On PostgreSQL these statements commit without waiting for the WAL to reach the disk, unless
``RUN_SYNCHRONOUS_COMMIT`` is on: each sets ``synchronous_commit`` off for its own
transaction (``set_config(…, true)`` in a WITH clause it joins, so it stays one statement).
A commit is visible to every other session at once, as always; only a crash of the database
server itself may forget the last fraction of a second of them, and each of those is
recovered by what already recovers a lost worker: a claim forgotten leaves the task pending
and the dispatcher sends it again, an outcome forgotten leaves it running and the rescue
sweep runs it again (for an instant type: pending, and the dispatcher sends it again).
Nothing else a worker writes (tasks a schedule fires, files, the sweeps) is relaxed.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from backend.common import sql
from backend.common.storable import storable_text
from backend.notifications import services as notifications
from backend.notifications.models import Event
from backend.tasks.models import STATUS_GUARD_SQL, Task, TaskStatus

TABLE = sql.quoted(Task._meta.db_table)  # quoted alike on PostgreSQL and SQLite
RELAXED = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))"
# A run starts only a task whose deadline (if any) is still ahead of the given time.
NOT_OVERDUE = f"({TABLE}.deadline IS NULL OR {TABLE}.deadline > %s)"


# The task a statement of a run changes or reads: by its key, while in the given status
# (``models.in_status``: no partial index qualifies).
THIS_TASK = f"{TABLE}.id = %s AND {STATUS_GUARD_SQL.format(table=TABLE)}"


def _relaxed(here: BaseDatabaseWrapper) -> bool:
    return here.vendor == "postgresql" and not settings.RUN_SYNCHRONOUS_COMMIT


@functools.cache
def _run_update(relaxed: bool, assignments: str, sources: str = "", where: str = "") -> str:
    """``UPDATE`` of the tasks table, joined to the relaxed commit's WITH clause when
    ``relaxed``; ``sources`` and ``where`` join other tables."""
    joined = ", ".join(part for part in ("relaxed" if relaxed else "", sources) if part)
    return (
        f"{RELAXED if relaxed else ''} UPDATE {TABLE} SET {assignments} "
        f"{'FROM ' + joined if joined else ''} "
        f"WHERE {THIS_TASK} {where}"
    )


# What a claim returns and a read selects: the row ``_task_of`` builds a run's task of.
RUN_COLUMNS = (
    f"{TABLE}.task_type, {TABLE}.input_data, {TABLE}.attempts, {TABLE}.max_attempts, "
    f"{TABLE}.owner_id"
)


@functools.cache
def _claim_sql(relaxed: bool) -> str:
    statement = _run_update(
        relaxed,
        "status = %s, started_at = %s, heartbeat_at = %s, updated_at = %s, progress = 0, "
        f"attempts = {TABLE}.attempts + 1",
        where=f"AND {NOT_OVERDUE}",
    )
    return f"{statement} RETURNING {RUN_COLUMNS}"


def _task_of(here: BaseDatabaseWrapper, task_id: uuid.UUID, row, *, status: str, now) -> Task:
    """The task a run works on, from a claim's or a read's row (nothing else is loaded)."""
    task_type, input_data, attempts, max_attempts, owner_id = row
    input_field = Task._meta.get_field("input_data")
    return Task(
        pk=task_id,
        task_type=task_type,
        input_data=input_field.from_db_value(input_data, None, here),
        attempts=attempts,
        max_attempts=max_attempts,
        owner_id=uuid.UUID(str(owner_id)),
        status=status,
        started_at=now,
        heartbeat_at=now,
    )


def task_claim(*, task_id) -> Task | None:
    """pending → running, only if still pending and not overdue; None when another
    worker, a cancel or the deadline got there first (a duplicate message is harmless).

    One statement: a guarded ``UPDATE … RETURNING`` (PostgreSQL, and SQLite ≥ 3.35) hands
    back what the run needs, so the row is not read again. Who is to be told of the outcome
    is read when the run ends (``_finish_run``)."""
    try:
        task_id = uuid.UUID(str(task_id))
    except ValueError:
        return None
    now = timezone.now()
    here = sql.db()
    at = here.ops.adapt_datetimefield_value(now)
    with here.cursor() as cursor:
        cursor.execute(
            _claim_sql(_relaxed(here)),
            [
                TaskStatus.RUNNING,
                at,
                at,
                at,
                Task._meta.pk.get_db_prep_value(task_id, here),
                TaskStatus.PENDING,
                at,
            ],
        )
        row = cursor.fetchone()
    return None if row is None else _task_of(here, task_id, row, status=TaskStatus.RUNNING, now=now)


READ_SQL = f"SELECT {RUN_COLUMNS} FROM {TABLE} WHERE {THIS_TASK} AND {NOT_OVERDUE}"


def task_read(*, task_id) -> Task | None:
    """The pending task, with what a run needs (as ``task_claim`` hands back), read and
    left pending: for an instant type, whose run then ends in one guarded UPDATE from
    pending (``task_finish``/``task_fail``), which also counts the attempt and sets
    ``started_at`` to now, the time of this read. None when it is not pending or overdue."""
    try:
        task_id = uuid.UUID(str(task_id))
    except ValueError:
        return None
    now = timezone.now()
    here = sql.db()
    with here.cursor() as cursor:
        cursor.execute(
            READ_SQL,
            [
                Task._meta.pk.get_db_prep_value(task_id, here),
                TaskStatus.PENDING,
                here.ops.adapt_datetimefield_value(now),
            ],
        )
        row = cursor.fetchone()
    return None if row is None else _task_of(here, task_id, row, status=TaskStatus.PENDING, now=now)


def _run_guarded(
    here: BaseDatabaseWrapper, task: Task, changes: dict[str, Any], in_time: bool
) -> tuple[str, list, str, list]:
    """The SET and WHERE of an UPDATE of the task with ``changes`` only while it is still
    this run's (see ``_update_run``): the assignments and their parameters, the guards
    after ``THIS_TASK`` and the parameters of ``THIS_TASK`` and the guards."""
    if task.status == TaskStatus.PENDING:  # read, not claimed: this UPDATE also starts it
        started = {"started_at": task.started_at, "heartbeat_at": task.started_at}
        changes = {**started, "attempts": task.attempts + 1, **changes}
    assignments, params = sql.assignments(Task, changes)
    where, guards = f"AND {TABLE}.attempts = %s", [task.attempts]
    if in_time:
        where += f" AND {NOT_OVERDUE}"
        guards.append(here.ops.adapt_datetimefield_value(timezone.now()))
    this = [Task._meta.pk.get_db_prep_value(task.pk, here), task.status]
    return assignments, params, where, [*this, *guards]


def _update_run(task: Task, changes: dict[str, Any], *, in_time: bool = False) -> bool:
    """UPDATE the task with ``changes`` only while it is still this run's: in the status
    the run found it in (running once claimed; pending when only read, see ``task_read``)
    and with the attempt it saw (which fences off a run that was presumed lost and has
    since been started again), and, ``in_time``, before its deadline. False when it no
    longer is."""
    here = sql.db()
    assignments, params, where, guards = _run_guarded(here, task, changes, in_time)
    with here.cursor() as cursor:
        cursor.execute(_run_update(_relaxed(here), assignments, where=where), [*params, *guards])
        return cursor.rowcount > 0


def task_report_progress(*, task: Task, progress: int) -> bool:
    """Record progress and a heartbeat; False when the task is no longer this run's, or its
    deadline has passed (the run stops; ``task_expire_if_overdue`` fails it)."""
    now = timezone.now()
    return _update_run(
        task, {"progress": progress, "heartbeat_at": now, "updated_at": now}, in_time=True
    )


def task_heartbeat(*, task: Task) -> bool:
    """Record that the run's worker process is alive, progress aside (``runner._beating``,
    while a handler waits on the outside world); False when the task is no longer this
    run's."""
    return _update_run(task, {"heartbeat_at": timezone.now()})


def task_still_running(*, task: Task) -> bool:
    """A heartbeat that also says whether the run may still end well: False when the task
    is no longer this run's or its deadline has passed (``JobContext.still_running``, before
    a run makes something that outlives it)."""
    return _update_run(task, {"heartbeat_at": timezone.now()}, in_time=True)


def _finish_run(task: Task, event: str, changes: dict[str, Any], *, in_time: bool = False) -> bool:
    """The run's last guarded UPDATE, with the notifications of its event as the owner's
    settings and the task's callback are when it ends (a ``webhook_url`` changed while an
    hour-long countdown ran is the one told). PostgreSQL: one statement, the UPDATE and
    the notifications' INSERT (``_outbox_update``). SQLite, which cannot nest an UPDATE in
    a WITH: the UPDATE hands back the owner's settings, and the notifications, when anyone
    is to be told, are inserted in the same transaction."""
    here = sql.db()
    assignments, params, where, guards = _run_guarded(here, task, changes, in_time)
    if here.vendor == "postgresql":
        return _outbox_update(here, assignments, params, where, guards, event)
    owner = notifications.recipient_columns(TABLE)
    with transaction.atomic(), here.cursor() as cursor:
        cursor.execute(
            f"{_run_update(False, assignments, where=where)} RETURNING {owner}",
            [*params, *guards],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        recipient = notifications.Recipient.from_row(*row)
        planned = notifications.plan(event=event, task_id=task.pk, recipient=recipient)
        if planned:
            notifications.notifications_create(planned)
    return True


def _completed(result: Any) -> tuple[str, dict[str, Any]]:
    now = timezone.now()
    return Event.COMPLETED, {
        "status": TaskStatus.COMPLETED,
        "result": result,
        "error": None,
        "progress": 100,
        "completed_at": now,
        "updated_at": now,
    }


def _failed(error: str) -> tuple[str, dict[str, Any]]:
    now = timezone.now()
    return Event.FAILED, {
        "status": TaskStatus.FAILED,
        "error": storable_text(error)[:2000],
        "completed_at": now,
        "updated_at": now,
    }


def task_finish(*, task: Task, result: Any) -> bool:
    """Completed, only before the deadline: a run that ends after it did not make it (False;
    ``task_expire_if_overdue`` fails it as the expiry sweep would)."""
    return _finish_run(task, *_completed(result), in_time=True)


def task_fail(*, task: Task, error: str) -> bool:
    return _finish_run(task, *_failed(error))


# --- a run of an instant type whose message carries the task's input (PostgreSQL) ----------


def unread_runs() -> bool:
    """Whether a run of an instant type whose message carries its input ends in one
    statement (``task_finish_unread``): PostgreSQL. SQLite cannot nest an UPDATE in a
    WITH; there such a run reads the task first, as any run of an instant type."""
    return connection.vendor == "postgresql"


def _outcome_unread(
    task_id: uuid.UUID, task_type: str, started_at, event: str, changes: dict[str, Any]
) -> bool:
    """The whole run in one statement: a guarded UPDATE from pending (not overdue, of the
    type the message named), which starts the task (``started_at``, one attempt more) and
    ends it, and the INSERT of the notifications its outcome causes, by the rules the
    sweeps write them with (``outbox_insert_sql``); those are sent after it commits."""
    assignments, params = sql.assignments(
        Task, {"started_at": started_at, "heartbeat_at": started_at, **changes}
    )
    here = sql.db()
    now = here.ops.adapt_datetimefield_value(timezone.now())
    return _outbox_update(
        here,
        f"{assignments}, attempts = {TABLE}.attempts + 1",
        params,
        f"AND {TABLE}.task_type = %s AND {NOT_OVERDUE}",
        [Task._meta.pk.get_db_prep_value(task_id, here), TaskStatus.PENDING, task_type, now],
        event,
    )


def _outbox_update(
    here: BaseDatabaseWrapper, assignments: str, params: list, where: str, guards: list, event
) -> bool:
    """One statement (PostgreSQL): the guarded UPDATE of one task (``THIS_TASK`` and
    ``where``) and the INSERT of the notifications ``event`` causes, by the rules the sweeps
    write them with (``outbox_insert_sql``), from the owner's settings as they are now;
    those are sent after it commits. Whether the task changed."""
    insert_sql, insert_params, marked_at = notifications.outbox_insert_sql(
        tasks="changed", event=event
    )
    relaxed = _relaxed(here)
    update = _run_update(
        False,  # the relaxed clause leads the whole statement, joined here as a source
        assignments,
        "relaxed" if relaxed else "",
        where,
    )
    with here.cursor() as cursor:
        cursor.execute(
            f"""{RELAXED + "," if relaxed else "WITH"}
            changed AS ({update} RETURNING {TABLE}.id, {TABLE}.owner_id),
            written AS ({insert_sql} RETURNING id)
            SELECT (SELECT count(*) FROM changed), ARRAY(SELECT id FROM written)""",
            [*params, *guards, *insert_params],
        )
        changed, ids = cursor.fetchone()
    notifications.send_on_commit(ids, marked_at)  # sent once it commits (now, autocommit)
    return changed > 0


def task_finish_unread(*, task_id: uuid.UUID, task_type: str, started_at, result: Any) -> bool:
    """pending → completed in one statement, for a run that did not read the task (its
    message carried the input); False when it was no longer pending, or overdue."""
    return _outcome_unread(task_id, task_type, started_at, *_completed(result))


def task_fail_unread(*, task_id: uuid.UUID, task_type: str, started_at, error: str) -> bool:
    """As ``task_finish_unread``, for a handler that failed."""
    return _outcome_unread(task_id, task_type, started_at, *_failed(error))


def task_retry_later(*, task: Task, error: str, delay: int) -> bool:
    """running → scheduled, ``delay`` seconds from now, after a run that failed for a
    passing reason (the error stays visible meanwhile). The dispatcher releases it when
    ``run_at`` comes; the claim counts the attempt. False when no longer this run's."""
    now = timezone.now()
    return _update_run(
        task,
        {
            "status": TaskStatus.SCHEDULED,
            "run_at": now + timedelta(seconds=delay),
            "error": storable_text(error)[:2000],
            "progress": 0,
            "heartbeat_at": None,
            "enqueued_at": None,
            "updated_at": now,
        },
    )


def tasks_finish_unread(outcomes: list[dict[str, Any]]) -> list[uuid.UUID]:
    """``task_finish_unread`` for many runs in one statement: each outcome (``id``,
    ``task_type``, ``started_at``, ``completed_at``, ``result``) goes pending → completed
    under the same guards, row by row, its deadline checked against the time its run ended
    (not the write's, which comes later); returns the ids that changed (the others were no
    longer pending, or ended past their deadline: their results are dropped)."""
    insert_sql, insert_params, marked_at = notifications.outbox_insert_sql(
        tasks="changed", event=Event.COMPLETED
    )
    here = sql.db()
    with here.cursor() as cursor:
        cursor.execute(
            _finish_batch_statement(_relaxed(here), insert_sql),
            [
                json.dumps(
                    [
                        {
                            **outcome,
                            "id": str(outcome["id"]),
                            "started_at": outcome["started_at"].isoformat(),
                            "completed_at": outcome["completed_at"].isoformat(),
                        }
                        for outcome in outcomes
                    ],
                    allow_nan=False,
                ),
                TaskStatus.COMPLETED,
                [outcome["id"] for outcome in outcomes],  # looked up by key, as one is
                TaskStatus.PENDING,
                *insert_params,
            ],
        )
        changed, ids = cursor.fetchone()
    notifications.send_on_commit(ids, marked_at)
    return changed


@functools.cache
def _finish_batch_statement(relaxed: bool, insert_sql: str) -> str:
    """``tasks_finish_unread``'s statement, written once (``insert_sql`` is the notifications'
    INSERT, itself written once per database vendor)."""
    return f"""{RELAXED + "," if relaxed else "WITH"}
        given AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS g(
            id uuid, task_type text, started_at timestamptz, completed_at timestamptz,
            result jsonb)),
        changed AS (
            UPDATE {TABLE} SET status = %s, result = given.result, error = NULL,
                progress = 100, started_at = given.started_at,
                heartbeat_at = given.started_at, completed_at = given.completed_at,
                updated_at = given.completed_at, attempts = {TABLE}.attempts + 1
            FROM {"relaxed, " if relaxed else ""}given
            WHERE {TABLE}.id = ANY(%s) AND {TABLE}.id = given.id
                AND {STATUS_GUARD_SQL.format(table=TABLE)}
                AND {TABLE}.task_type = given.task_type
                AND ({TABLE}.deadline IS NULL OR {TABLE}.deadline > given.completed_at)
            RETURNING {TABLE}.id, {TABLE}.owner_id),
        written AS ({insert_sql} RETURNING id)
        SELECT ARRAY(SELECT id FROM changed), ARRAY(SELECT id FROM written)"""
