"""Every change of a task's state. Each one is a guarded update: it names the state it
expects, and when the row is no longer in it, nothing changes and the caller learns so."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from backend.common.errors import Conflict, DomainError, PermissionDenied
from backend.notifications import services as notifications
from backend.notifications.models import Event
from backend.users.models import User

from . import queue, types
from .models import ACTIVE_STATUSES, PRIORITY_RANK, Task, TaskPriority, TaskStatus

logger = logging.getLogger(__name__)

UNSET: Any = object()
DEADLINE_EXCEEDED = "deadline exceeded"


# --- the five-active-task limit ---------------------------------------------------------


def _reserve_active_slot(assignee: User | None, *, exclude_task: Task | None = None) -> None:
    """Refuse when ``assignee`` already holds MAX_ACTIVE_TASKS active tasks.

    Must run inside the transaction that then gives them the task. Locking the assignee's
    row serialises concurrent requests for the same user on PostgreSQL; on SQLite the
    IMMEDIATE transaction already holds the database's write lock.
    """
    if assignee is None:
        return
    User.objects.select_for_update().filter(pk=assignee.pk).first()
    active = Task.objects.filter(assignee=assignee, status__in=ACTIVE_STATUSES)
    if exclude_task is not None:
        active = active.exclude(pk=exclude_task.pk)
    if active.count() >= settings.MAX_ACTIVE_TASKS:
        raise Conflict(
            f"{assignee.username} already has {settings.MAX_ACTIVE_TASKS} active tasks "
            f"(the most allowed); wait for one to finish or cancel one.",
            code="active_task_limit",
        )


def _check_active_assignee(assignee: User | None) -> None:
    if assignee is not None and not assignee.is_active:
        raise DomainError("The assignee's account is deactivated.", code="assignee_inactive")


def _check_assignee_allowed(kind: types.TaskType, owner: User, actor: User, assignee) -> None:
    """Slots belong to their holder: a worker task occupies its owner's slot, and only staff
    may give one to someone else (so nobody can fill another user's five slots)."""
    others = kind.runs_on_worker and assignee is not None and assignee.pk != owner.pk
    if others and not actor.is_staff:
        raise DomainError(
            "A worker task is assigned to its owner; only staff can give it to someone else.",
            code="assignee_not_allowed",
        )


# --- create, edit, delete ---------------------------------------------------------------


@transaction.atomic
def task_create(
    *,
    owner: User,
    task_type: str,
    input_data: dict | None = None,
    name: str = "",
    description: str = "",
    priority: str = TaskPriority.NORMAL,
    deadline: datetime | None = None,
    run_at: datetime | None = None,
    assignee: User | None = UNSET,
    callback_url: str = "",
) -> Task:
    """Create a task; ``input_data`` must already be validated by the type's serializer
    (and ``callback_url`` by the outbound rules)."""
    kind = types.get(task_type)
    now = timezone.now()
    if assignee is UNSET:
        assignee = owner
    if assignee is None and kind.runs_on_worker:
        raise DomainError("Only manual tasks may be left unassigned.", code="assignee_required")
    _check_assignee_allowed(kind, owner, owner, assignee)
    if run_at is not None and not kind.runs_on_worker:
        raise DomainError("run_at applies to worker tasks only.", code="run_at_not_allowed")
    if deadline is not None and deadline <= now:
        raise DomainError("The deadline must be in the future.", code="deadline_in_past")
    if deadline is not None and run_at is not None and run_at >= deadline:
        raise DomainError("run_at must be before the deadline.", code="run_at_after_deadline")
    _check_active_assignee(assignee)
    _reserve_active_slot(assignee)

    scheduled = run_at is not None and run_at > now
    send_now = kind.runs_on_worker and not scheduled
    # Marked as sent in the INSERT itself (no second statement); a send that fails after
    # commit puts NULL back, and while the breaker is open the dispatcher sends it.
    marked_at = now if send_now and queue.accepting() else None
    task = Task.objects.create(
        owner=owner,
        assignee=assignee,
        name=name or task_type,
        description=description,
        task_type=task_type,
        input_data=input_data or {},
        priority=priority,
        deadline=deadline,
        run_at=run_at,
        max_attempts=kind.max_attempts,
        status=TaskStatus.SCHEDULED if scheduled else TaskStatus.PENDING,
        enqueued_at=marked_at,
    )
    notifications.task_callback_set(task_id=task.pk, url=callback_url)
    notifications.notify(
        event=Event.CREATED,
        task_id=task.pk,
        recipient=notifications.recipient_for(owner=owner, callback_url=callback_url),
    )
    if marked_at is not None:
        queue.publish_on_commit([queue.job_of(task)], marked_at=marked_at)
    return task


@transaction.atomic
def task_update(*, task: Task, actor: User, data: dict) -> Task:
    """Edit ``name``, ``description``, ``priority`` or ``deadline`` (owner or staff)."""
    _require_owner_or_staff(task, actor)
    if data.get("deadline") is not None and data["deadline"] <= timezone.now():
        raise DomainError("The deadline must be in the future.", code="deadline_in_past")
    changes = {
        key: data[key] for key in ("name", "description", "priority", "deadline") if key in data
    }
    if "priority" in changes:
        changes["priority_rank"] = PRIORITY_RANK[TaskPriority(changes["priority"])]
    if changes:
        changes["updated_at"] = timezone.now()
        Task.objects.filter(pk=task.pk).update(**changes)
        task.refresh_from_db()
    return task


@transaction.atomic
def task_delete(*, task: Task, actor: User) -> None:
    _require_owner_or_staff(task, actor)
    deleted, _ = Task.objects.filter(pk=task.pk).exclude(status=TaskStatus.RUNNING).delete()
    if not deleted:
        raise Conflict("A running task cannot be deleted; cancel it first.", code="task_running")


# --- actions ----------------------------------------------------------------------------


@transaction.atomic
def task_assign(*, task: Task, actor: User, assignee: User | None) -> Task:
    _require_owner_or_staff(task, actor)
    kind = types.get(task.task_type)
    if assignee is None and kind.runs_on_worker:
        raise DomainError("Only manual tasks may be left unassigned.", code="assignee_required")
    if task.status not in (TaskStatus.SCHEDULED, TaskStatus.PENDING):
        raise Conflict(
            f"Only scheduled or pending tasks can be reassigned; this one is {task.status}.",
            code="invalid_status",
        )
    if assignee is not None and assignee.pk == task.assignee_id:
        return task
    _check_assignee_allowed(kind, task.owner, actor, assignee)
    _check_active_assignee(assignee)
    _reserve_active_slot(assignee, exclude_task=task)
    _guarded(
        Task.objects.filter(pk=task.pk, status__in=(TaskStatus.SCHEDULED, TaskStatus.PENDING)),
        "Only scheduled or pending tasks can be reassigned.",
        assignee=assignee,
    )
    task.refresh_from_db()
    return task


@transaction.atomic
def task_decline(*, task: Task, actor: User) -> Task:
    """The assignee of a manual task someone else gave them hands it back: it becomes
    unassigned (still pending), which frees their slot."""
    _require_manual(task)
    if task.assignee_id != actor.pk:
        raise PermissionDenied("Only the assignee can decline this task.")
    if task.owner_id == actor.pk:
        raise Conflict(
            "This task is your own; cancel or reassign it instead.", code="not_declinable"
        )
    _guarded(
        Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING, assignee=actor),
        f"Only a pending task can be declined; this one is {task.status}.",
        assignee=None,
    )
    task.refresh_from_db()
    return task


@transaction.atomic
def task_start(*, task: Task, actor: User) -> Task:
    """The assignee of a manual task starts work on it: pending → running."""
    _require_manual(task)
    if task.assignee_id != actor.pk:
        raise PermissionDenied("Only the assignee can start this task.")
    now = timezone.now()
    _guarded(
        Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING),
        f"Only a pending task can be started; this one is {task.status}.",
        status=TaskStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
    )
    task.refresh_from_db()
    return task


@transaction.atomic
def task_complete(*, task: Task, actor: User, result: Any = None) -> Task:
    """The assignee (or staff) completes a pending or running manual task."""
    _require_manual(task)
    if task.assignee_id != actor.pk and not actor.is_staff:
        raise PermissionDenied("Only the assignee or staff can complete this task.")
    now = timezone.now()
    _guarded(
        Task.objects.filter(pk=task.pk, status__in=(TaskStatus.PENDING, TaskStatus.RUNNING)),
        f"Only a pending or running task can be completed; this one is {task.status}.",
        status=TaskStatus.COMPLETED,
        result=result,
        progress=100,
        started_at=task.started_at or now,
        completed_at=now,
    )
    _notify(task, Event.COMPLETED)
    task.refresh_from_db()
    return task


@transaction.atomic
def task_cancel(*, task: Task, actor: User) -> Task:
    """Cancel any active task; a worker running it stops at its next progress report."""
    _require_owner_or_staff(task, actor)
    _guarded(
        Task.objects.filter(pk=task.pk, status__in=ACTIVE_STATUSES),
        f"Only an active task can be cancelled; this one is {task.status}.",
        status=TaskStatus.CANCELLED,
        completed_at=timezone.now(),
    )
    _notify(task, Event.CANCELLED)
    task.refresh_from_db()
    return task


@transaction.atomic
def task_retry(*, task: Task, actor: User) -> Task:
    """A failed or cancelled worker task goes back to pending, or to scheduled when its
    run_at is still ahead (the limit applies)."""
    _require_owner_or_staff(task, actor)
    kind = types.get(task.task_type)
    if not kind.runs_on_worker:
        raise Conflict("Only worker tasks can be retried.", code="not_retryable")
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise Conflict(
            f"Only a failed or cancelled task can be retried; this one is {task.status}.",
            code="invalid_status",
        )
    if task.deadline is not None and task.deadline <= timezone.now():
        raise Conflict(
            "The task's deadline has passed; move the deadline before retrying.",
            code="deadline_passed",
        )
    _check_active_assignee(task.assignee)
    _reserve_active_slot(task.assignee, exclude_task=task)
    now = timezone.now()
    scheduled = task.run_at is not None and task.run_at > now
    marked_at = now if not scheduled and queue.accepting() else None
    _guarded(
        Task.objects.filter(pk=task.pk, status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED)),
        "Only a failed or cancelled task can be retried.",
        status=TaskStatus.SCHEDULED if scheduled else TaskStatus.PENDING,
        result=None,
        error=None,
        progress=0,
        started_at=None,
        completed_at=None,
        heartbeat_at=None,
        enqueued_at=marked_at,
        max_attempts=F("attempts") + kind.max_attempts,
    )
    task.refresh_from_db()
    if marked_at is not None:
        queue.publish_on_commit([queue.job_of(task)], marked_at=marked_at)
    return task


# --- execution (called by the worker) ---------------------------------------------------


def task_claim(*, task_id) -> Task | None:
    """pending → running, only if still pending and not overdue; None when another
    worker, a cancel or the deadline got there first (a duplicate message is harmless).

    One statement: a guarded ``UPDATE … RETURNING`` (PostgreSQL, and SQLite ≥ 3.35) hands
    back what the run needs, so the row is not read again — including who is to be told of
    its outcome (the owner's preferences, the task's callback), so a run nobody listens to
    costs no statement more."""
    try:
        task_id = uuid.UUID(str(task_id))
    except ValueError:
        return None
    now = timezone.now()
    table = Task._meta.db_table
    prep = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table}
                SET status = %s, started_at = %s, heartbeat_at = %s, updated_at = %s,
                    progress = 0, attempts = attempts + 1
                WHERE id = %s AND status = %s AND (deadline IS NULL OR deadline > %s)
                RETURNING task_type, input_data, attempts, max_attempts,
                    {notifications.recipient_columns(table)}""",
            [
                TaskStatus.RUNNING,
                *[prep.adapt_datetimefield_value(now)] * 3,
                Task._meta.pk.get_db_prep_value(task_id, connection),
                TaskStatus.PENDING,
                prep.adapt_datetimefield_value(now),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    task_type, input_data, attempts, max_attempts, owner_id, *preferences = row
    input_field = Task._meta.get_field("input_data")
    claimed = Task(
        pk=task_id,
        task_type=task_type,
        input_data=input_field.from_db_value(input_data, None, connection),
        attempts=attempts,
        max_attempts=max_attempts,
        owner_id=uuid.UUID(str(owner_id)),
        status=TaskStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
    )
    claimed.recipient = notifications.Recipient.from_row(owner_id, *preferences)
    return claimed


def _running(task: Task) -> QuerySet[Task]:
    # ``attempts`` fences off a run that was presumed lost and has since been started again.
    return Task.objects.filter(pk=task.pk, status=TaskStatus.RUNNING, attempts=task.attempts)


def task_report_progress(*, task: Task, progress: int) -> bool:
    """Record progress and a heartbeat; False when the task is no longer this run's."""
    now = timezone.now()
    return bool(_running(task).update(progress=progress, heartbeat_at=now, updated_at=now))


def _finish_run(task: Task, event: str, **changes) -> bool:
    """The run's last guarded UPDATE; with the event's notifications, when anyone is to be
    told, inserted in the same transaction (one statement more)."""
    recipient = getattr(task, "recipient", None)
    if recipient is None:
        recipient = notifications.recipient_of(task_id=task.pk, owner_id=task.owner_id)
    planned = notifications.plan(event=event, task_id=task.pk, recipient=recipient)
    if not planned:
        return bool(_running(task).update(**changes))
    with transaction.atomic():
        if not _running(task).update(**changes):
            return False
        notifications.notifications_create(planned)
    return True


def task_finish(*, task: Task, result: Any) -> bool:
    now = timezone.now()
    return _finish_run(
        task,
        Event.COMPLETED,
        status=TaskStatus.COMPLETED,
        result=result,
        error=None,
        progress=100,
        completed_at=now,
        updated_at=now,
    )


def task_fail(*, task: Task, error: str) -> bool:
    now = timezone.now()
    return _finish_run(
        task,
        Event.FAILED,
        status=TaskStatus.FAILED,
        error=error[:2000],
        completed_at=now,
        updated_at=now,
    )


def task_retry_later(*, task: Task, error: str, delay: int) -> bool:
    """running → scheduled, ``delay`` seconds from now, after a run that failed for a
    passing reason (the error stays visible meanwhile). The dispatcher releases it when
    ``run_at`` comes; the claim counts the attempt. False when no longer this run's."""
    now = timezone.now()
    return bool(
        _running(task).update(
            status=TaskStatus.SCHEDULED,
            run_at=now + timedelta(seconds=delay),
            error=error[:2000],
            progress=0,
            heartbeat_at=None,
            enqueued_at=None,
            updated_at=now,
        )
    )


# --- sweeps (Beat and manage.py) --------------------------------------------------------


def _update_notifying(queryset: QuerySet[Task], event: str, **changes) -> int:
    """``queryset.update(**changes)`` as one guarded UPDATE, with the notifications of the
    rows it changed written by the database in the same transaction, set by set: no row is
    read into Python or planned one by one (only the new notifications' ids come back, to be
    sent after commit).

    PostgreSQL: one statement, ``WITH changed AS (UPDATE … RETURNING id, owner_id)
    INSERT … SELECT … FROM changed``. SQLite cannot nest an UPDATE in a WITH; its writers are
    serialised (the transaction holds the write lock), so an ``INSERT … SELECT`` over the rows
    the UPDATE's own WHERE picks, then that UPDATE, see the same rows."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(changes)
    query.order_by = ()
    query.annotations = {}
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    try:
        update_sql, update_params = compiler.as_sql()
    except EmptyResultSet:  # e.g. an empty selection: nothing to change
        return 0
    table = connection.ops.quote_name(Task._meta.db_table)
    insert_sql, insert_params, marked_at = notifications.outbox_insert_sql(
        tasks="changed", event=event
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"""WITH changed AS ({update_sql} RETURNING {table}.id, {table}.owner_id),
                    written AS ({insert_sql} RETURNING id)
                    SELECT (SELECT count(*) FROM changed), ARRAY(SELECT id FROM written)""",
                [*update_params, *insert_params],
            )
            count, ids = cursor.fetchone()
        else:
            try:
                where, where_params = compiler.compile(query.where)
                where = f"WHERE {where}"
            except FullResultSet:
                where, where_params = "", []
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


def tasks_expire(*, queryset: QuerySet[Task] | None = None) -> int:
    """Every active task past its deadline becomes failed: one guarded bulk UPDATE (and one
    bulk INSERT of the notifications it causes, in the same transaction)."""
    now = timezone.now()
    queryset = Task.objects.all() if queryset is None else queryset
    return _update_notifying(
        queryset.filter(status__in=ACTIVE_STATUSES, deadline__lt=now),
        Event.FAILED,
        status=TaskStatus.FAILED,
        error=DEADLINE_EXCEEDED,
        completed_at=now,
        updated_at=now,
    )


def tasks_dispatch(*, batch_size: int = 500) -> dict[str, int]:
    """Make due scheduled tasks pending, then send pending worker tasks that were never
    sent (or sent long ago and still not started)."""
    now = timezone.now()
    released = Task.objects.filter(status=TaskStatus.SCHEDULED, run_at__lte=now).update(
        status=TaskStatus.PENDING, enqueued_at=None, updated_at=now
    )
    resend_before = now - timedelta(seconds=settings.TASK_REDISPATCH_AFTER)
    due = [
        queue.Job(*row)
        for row in Task.objects.filter(
            status=TaskStatus.PENDING, task_type__in=types.worker_type_names()
        )
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=resend_before))
        .order_by("-priority_rank", "created_at")
        .values_list(*queue.JOB_FIELDS)[:batch_size]
    ]
    sent = queue.publish(due)
    if sent:  # one UPDATE for the batch; a worker may have claimed some already
        Task.objects.filter(pk__in=sent).update(enqueued_at=now)
    return {"released": released, "sent": len(sent), "due": len(due)}


def tasks_rescue() -> dict[str, int]:
    """Running worker tasks whose heartbeat is stale go back to pending, or fail when they
    are out of attempts. The dispatcher sends the returned ones again."""
    now = timezone.now()
    stale = Task.objects.filter(
        status=TaskStatus.RUNNING,
        task_type__in=types.worker_type_names(),
        heartbeat_at__lt=now - timedelta(seconds=settings.TASK_HEARTBEAT_TIMEOUT),
    )
    failed = _update_notifying(
        stale.filter(attempts__gte=F("max_attempts")),
        Event.FAILED,
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


# --- helpers ----------------------------------------------------------------------------


def _guarded(queryset: QuerySet[Task], conflict: str, **changes) -> None:
    changes.setdefault("updated_at", timezone.now())
    if not queryset.update(**changes):
        raise Conflict(conflict, code="invalid_status")


def _notify(task: Task, event: str) -> None:
    notifications.notify(
        event=event,
        task_id=task.pk,
        recipient=notifications.recipient_of(task_id=task.pk, owner_id=task.owner_id),
    )


def _require_owner_or_staff(task: Task, actor: User) -> None:
    if not (actor.is_staff or task.owner_id == actor.pk):
        raise PermissionDenied("Only the task's owner or staff can do this.")


def _require_manual(task: Task) -> None:
    if types.get(task.task_type).runs_on_worker:
        raise Conflict("Only manual tasks are started and completed by hand.", code="not_manual")
