"""A task's life by request: create, edit, delete, and the actions of SPEC §5 (assign,
decline, start, complete, cancel, retry). Each change is a guarded update: it names the
state it expects, and when the row is no longer in it, nothing changes and the caller learns
so (409)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import DateTimeField, F, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from backend.common import sql
from backend.common.errors import Conflict, DomainError, NotFound, PermissionDenied
from backend.files import services as files
from backend.files.models import File
from backend.notifications import services as notifications
from backend.notifications.models import Event
from backend.tasks import queue, types
from backend.tasks.models import (
    ACTIVE_STATUSES,
    PRIORITY_RANK,
    Task,
    TaskPriority,
    TaskStatus,
    in_status,
)
from backend.users.models import User

from . import limits

UNSET: Any = object()


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
    (and ``callback_url`` by the outbound rules).

    The INSERT checks the limit itself (``limits.slot_free``) and writes nothing when the
    assignee holds the most active tasks allowed. When it is all the create writes (no
    notification, no callback) on PostgreSQL, it runs alone, in autocommit or in the caller's
    transaction: the statement takes the assignee's lock, counts, writes the row and commits,
    in one round trip. Otherwise, and on SQLite (whose IMMEDIATE transaction is the limit's
    lock), one transaction holds it and the notification rows. The run message goes after
    commit."""
    kind = types.get(task_type)
    now = timezone.now()
    if assignee is UNSET:
        assignee = owner
    if assignee is None and kind.runs_on_worker:
        raise DomainError("Only manual tasks may be left unassigned.", code="assignee_required")
    limits.check_assignee_allowed(kind, owner, owner, assignee)
    if run_at is not None and not kind.runs_on_worker:
        raise DomainError("run_at applies to worker tasks only.", code="run_at_not_allowed")
    if deadline is not None and deadline <= now:
        raise DomainError("The deadline must be in the future.", code="deadline_in_past")
    if deadline is not None and run_at is not None and run_at >= deadline:
        raise DomainError("run_at must be before the deadline.", code="run_at_after_deadline")
    limits.check_active_assignee(assignee)
    limits.refuse_early_when_full(assignee)

    scheduled = run_at is not None and run_at > now
    send_now = kind.runs_on_worker and not scheduled
    # Marked as sent in the INSERT itself (no second statement); a send that fails after
    # commit puts NULL back, and while the breaker is open the dispatcher sends it.
    marked_at = now if send_now and queue.accepting() else None
    task = Task(
        id=uuid.uuid4(),
        owner=owner,
        assignee=assignee,
        name=name or task_type,
        description=description,
        task_type=task_type,
        input_data=input_data or {},
        priority=priority,
        priority_rank=PRIORITY_RANK[TaskPriority(priority)],
        deadline=deadline,
        run_at=run_at,
        max_attempts=kind.max_attempts,
        status=TaskStatus.SCHEDULED if scheduled else TaskStatus.PENDING,
        enqueued_at=marked_at,
        created_at=now,
        updated_at=now,
    )
    planned = notifications.plan(
        event=Event.CREATED,
        task_id=task.pk,
        recipient=notifications.recipient_for(owner=owner, callback_url=callback_url),
    )
    files = _files_of(kind, task.input_data)
    if planned or callback_url or files or not limits.slot_free_locks_itself():
        with transaction.atomic():
            _lock_files(files)
            _insert_within_limit(task)
            notifications.task_callback_set(task_id=task.pk, url=callback_url)
            notifications.notifications_create(planned)
    else:
        _insert_within_limit(task)
    if marked_at is not None:
        queue.publish_on_commit([queue.job_of(task)], marked_at=marked_at)
    return task


def _files_of(kind: types.TaskType, input_data: dict) -> list[str]:
    return [input_data[key] for key in kind.file_inputs if input_data.get(key)]


def _lock_files(file_ids: list[str]) -> None:
    """Lock the rows of the files the task will read until the task's row is committed,
    and check they are still there: a delete takes the same lock, then finds the task
    (409 ``file_in_use``), or went first, and the create is refused here. (SQLite: the
    transaction's write lock already keeps a delete out.)"""
    if not file_ids:
        return
    found = File.objects.select_for_update().filter(pk__in=file_ids).values_list("pk", flat=True)
    if len(set(found)) < len(set(file_ids)):
        raise DomainError("The file was deleted meanwhile; upload it again.", code="file_not_found")


def _insert_within_limit(task: Task) -> None:
    guard = limits.slot_free(task.assignee) if task.assignee is not None else None
    if not sql.insert(task, only_if=guard):
        raise limits.limit_reached(task.assignee)


@transaction.atomic
def task_update(*, task: Task, actor: User, data: dict) -> Task:
    """Edit ``name``, ``description``, ``priority`` or ``deadline`` (owner or staff)."""
    _require_owner_or_staff(task, actor)
    deadline = data.get("deadline")
    if deadline is not None and deadline <= timezone.now():
        raise DomainError("The deadline must be in the future.", code="deadline_in_past")
    changes = {
        key: data[key] for key in ("name", "description", "priority", "deadline") if key in data
    }
    if "priority" in changes:
        changes["priority_rank"] = PRIORITY_RANK[TaskPriority(changes["priority"])]
    if "name" in changes and not changes["name"]:
        changes["name"] = task.task_type  # as a create without a name
    if changes:
        changes["updated_at"] = timezone.now()
        rows = Task.objects.filter(pk=task.pk)
        if deadline is not None:
            # As at create: a task waiting for its run_at cannot be given a deadline that
            # comes first (it would fail unrun). Guarded, as a retry may move run_at later.
            rows = rows.filter(Q(run_at__isnull=True) | Q(run_at__lt=deadline))
        if not rows.update(**changes):
            if Task.objects.filter(pk=task.pk).exists():
                raise DomainError(
                    "run_at must be before the deadline.", code="run_at_after_deadline"
                )
            raise NotFound("Not found.")  # deleted since the request read it
        task.refresh_from_db()
    return task


@transaction.atomic
def task_delete(*, task: Task, actor: User) -> None:
    """Delete a task that is not running. The row is locked before it is checked: Django's
    delete reads the rows its filter picks, then deletes them by key (the task's callback is
    deleted with it), so a start committed in between had the running task deleted and both
    answers report success. A start or claim now waits, then finds the task gone."""
    _require_owner_or_staff(task, actor)
    locked = list(Task.objects.select_for_update().filter(pk=task.pk).values_list("status"))
    if not locked:
        raise NotFound("Not found.")  # deleted meanwhile (a concurrent DELETE won)
    if locked[0][0] == TaskStatus.RUNNING:
        raise running_not_deleted()
    _reports_left_discard([(task.pk, task.task_type, locked[0][0])])
    Task.objects.filter(pk=task.pk).delete()


def _reports_left_discard(tasks: list[tuple]) -> None:
    """The file a killed run of a report left (its row written, its outcome not), for
    tasks ``(id, type, status)`` deleted without being completed: nothing else names it."""
    files.report_files_discard(
        task_ids=[
            pk
            for pk, task_type, status in tasks
            if task_type == files.REPORT_TYPE and status != TaskStatus.COMPLETED
        ]
    )


def running_not_deleted() -> Conflict:
    """The refusal to delete a running task."""
    return Conflict("A running task cannot be deleted; cancel it first.", code="task_running")


# Tasks deleted per transaction by ``tasks_delete``; passes over those others held, and the
# pause before each further pass (times the pass's number), in seconds.
DELETE_BATCH = 1000
DELETE_PASSES = 3
DELETE_PAUSE = 0.25


def tasks_delete(*, queryset: QuerySet[Task], before_delete=None) -> tuple[int, list[Task], int]:
    """Delete the tasks of ``queryset`` that are not running (staff, the admin), in batches
    each its own transaction, their rows locked as they are chosen, as ``task_delete``
    does one: a start committed meanwhile waits, then finds the task gone, and one that
    started before is left. A row another transaction holds (a sweep's UPDATE of many
    rows, a worker's claim) is not waited for but tried again in a later pass: waiting, a
    batch and a sweep each held rows the other wanted, PostgreSQL ended one of them as a
    deadlock, and the admin's page was a 503 half-way. ``before_delete(tasks)`` is called
    with each batch's (the admin logs them). Returns how many were deleted, the running
    ones left, and how many were still held by others after the last pass (left as they
    are)."""
    todo = list(queryset.order_by().values_list("pk", flat=True))
    deleted, running = 0, []
    for attempt in range(DELETE_PASSES):
        if attempt:
            time.sleep(DELETE_PAUSE * attempt)  # the other transactions end meanwhile
        held = []
        for start in range(0, len(todo), DELETE_BATCH):
            batch = todo[start : start + DELETE_BATCH]
            with transaction.atomic():
                rows = Task.objects.select_for_update(skip_locked=True).filter(pk__in=batch)
                chosen = list(rows.order_by("pk"))
                taken = {task.pk for task in chosen}
                held += [pk for pk in batch if pk not in taken]  # or deleted meanwhile
                running += [task for task in chosen if task.status == TaskStatus.RUNNING]
                doomed = [task for task in chosen if task.status != TaskStatus.RUNNING]
                if before_delete is not None and doomed:
                    before_delete(doomed)
                _reports_left_discard([(t.pk, t.task_type, t.status) for t in doomed])
                Task.objects.filter(pk__in=[task.pk for task in doomed]).delete()
                deleted += len(doomed)  # locked: nobody else deleted them meanwhile
        todo = held
        if not todo:
            break
    still_held = sum(
        Task.objects.filter(pk__in=todo[start : start + DELETE_BATCH]).count()
        for start in range(0, len(todo), DELETE_BATCH)
    )
    return deleted, running, still_held


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
    limits.check_assignee_allowed(kind, task.owner, actor, assignee)
    limits.check_active_assignee(assignee)
    limits.reserve_active_slot(assignee, exclude_task=task)
    _guarded(
        task,
        Task.objects.filter(in_status(TaskStatus.SCHEDULED, TaskStatus.PENDING), pk=task.pk),
        "Only scheduled or pending tasks can be reassigned; this one is {status}.",
        before_deadline=timezone.now(),
        assignee=assignee,
    )
    task.refresh_from_db()
    return task


@transaction.atomic
def task_decline(*, task: Task, actor: User) -> Task:
    """The assignee of a manual task someone else gave them hands it back: it becomes
    unassigned (still pending), which frees their slot."""
    _require_manual(task, "declined")
    _require_allowed(task, actor, "decline")
    if task.owner_id == actor.pk:
        raise Conflict(
            "This task is your own; cancel or reassign it instead.", code="not_declinable"
        )
    _guarded(
        task,
        Task.objects.filter(in_status(TaskStatus.PENDING), pk=task.pk, assignee=actor),
        "Only a pending task can be declined; this one is {status}.",
        on_assignee=True,
        assignee=None,
    )
    task.refresh_from_db()
    return task


@transaction.atomic
def task_start(*, task: Task, actor: User) -> Task:
    """The assignee of a manual task starts work on it: pending → running."""
    _require_manual(task)
    _require_allowed(task, actor, "start")
    now = timezone.now()
    _guarded(
        task,
        Task.objects.filter(in_status(TaskStatus.PENDING), pk=task.pk, assignee=actor),
        "Only a pending task can be started; this one is {status}.",
        on_assignee=True,
        before_deadline=now,
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
    _require_allowed(task, actor, "complete")
    now = timezone.now()
    # Guarded on the assignee checked above too: a decline or a reassignment that commits
    # first makes this one lose, as a status change does.
    _guarded(
        task,
        Task.objects.filter(
            in_status(TaskStatus.PENDING, TaskStatus.RUNNING),
            pk=task.pk,
            assignee_id=task.assignee_id,
        ),
        "Only a pending or running task can be completed; this one is {status}.",
        on_assignee=True,
        before_deadline=now,
        status=TaskStatus.COMPLETED,
        result=result,
        progress=100,
        started_at=Coalesce(F("started_at"), _at(now)),  # a start committed meanwhile stays
        completed_at=_not_before_start(now),
    )
    _notify(task, Event.COMPLETED)
    task.refresh_from_db()
    return task


@transaction.atomic
def task_cancel(*, task: Task, actor: User) -> Task:
    """Cancel any active task; a worker running it stops at its next progress report."""
    _require_owner_or_staff(task, actor)
    _guarded(
        task,
        Task.objects.filter(in_status(*ACTIVE_STATUSES), pk=task.pk),
        "Only an active task can be cancelled; this one is {status}.",
        status=TaskStatus.CANCELLED,
        completed_at=_not_before_start(timezone.now()),
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
    try:
        # As at create: a delete of the file waits for this task, then finds it active.
        _lock_files(_files_of(kind, task.input_data))
    except DomainError:
        raise Conflict(
            "The task's file has been deleted; upload it again and create a new task.",
            code="file_not_found",
        ) from None
    limits.check_active_assignee(task.assignee)
    limits.reserve_active_slot(task.assignee, exclude_task=task)
    now = timezone.now()
    scheduled = task.run_at is not None and task.run_at > now
    marked_at = now if not scheduled and queue.accepting() else None
    _guarded(
        task,
        Task.objects.filter(in_status(TaskStatus.FAILED, TaskStatus.CANCELLED), pk=task.pk),
        "Only a failed or cancelled task can be retried; this one is {status}.",
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


# --- helpers ----------------------------------------------------------------------------


def _at(moment: datetime) -> Value:
    return Value(moment, output_field=DateTimeField())


def _not_before_start(now: datetime):
    """``now`` as an end time, or the task's start when that is later: a worker's claim (or
    an assignee's start) committed between this request's reading of the clock and its
    update made a task end before it started."""
    return Greatest(_at(now), Coalesce(F("started_at"), _at(now)))


def _guarded(
    task: Task,
    queryset: QuerySet[Task],
    conflict: str,
    *,
    on_assignee: bool = False,
    before_deadline: datetime | None = None,
    **changes,
) -> None:
    """Update ``task`` through ``queryset`` (its row, in the statuses the action takes).
    When it matches nothing, the row read again says why: 404 when it was deleted; 409
    ``assignee_changed`` (``on_assignee``: an action its assignee takes) when it was given to
    someone else or handed back; 409 ``deadline_passed`` (``before_deadline``: only before
    its deadline, as a worker's run) when its deadline has passed; else 409
    ``invalid_status``, ``conflict`` naming the status it is in now (``{status}``)."""
    guarded = queryset
    if before_deadline is not None:
        queryset = queryset.filter(Q(deadline__isnull=True) | Q(deadline__gt=before_deadline))
    changes.setdefault("updated_at", timezone.now())
    if queryset.update(**changes):
        return
    row = Task.objects.filter(pk=task.pk).values("status", "assignee_id", "deadline").first()
    if row is None:
        raise NotFound("Not found.")
    if on_assignee and row["assignee_id"] != task.assignee_id:
        raise Conflict(
            "This task was given to someone else or handed back meanwhile.",
            code="assignee_changed",
        )
    if before_deadline is not None and guarded.exists():  # all but the deadline held
        raise Conflict(
            "The task's deadline has passed: it fails at the next expiry sweep, unless its "
            "owner moves the deadline first.",
            code="deadline_passed",
        )
    raise Conflict(conflict.format(status=row["status"]), code="invalid_status")


def _notify(task: Task, event: str) -> None:
    notifications.notify(
        event=event,
        task_id=task.pk,
        recipient=notifications.recipient_of(task_id=task.pk, owner_id=task.owner_id),
    )


OWNER_OR_STAFF = "Only the task's owner or staff can do this."


def owner_or_staff(task: Task, actor: User) -> bool:
    """Whether ``actor`` may edit, delete, assign, cancel or retry the task."""
    return actor.is_staff or task.owner_id == actor.pk


def manual_action_refusal(task: Task, actor: User, action: str) -> str | None:
    """Why ``actor`` may not ``start``, ``decline`` or ``complete`` the manual task, or
    None: the first two are its assignee's, the last its assignee's or staff's."""
    if task.assignee_id == actor.pk or (action == "complete" and actor.is_staff):
        return None
    if action == "complete":
        return "Only the assignee or staff can complete this task."
    return f"Only the assignee can {action} this task."


def _require_allowed(task: Task, actor: User, action: str) -> None:
    refusal = manual_action_refusal(task, actor, action)
    if refusal is not None:
        raise PermissionDenied(refusal)


def _require_owner_or_staff(task: Task, actor: User) -> None:
    if not owner_or_staff(task, actor):
        raise PermissionDenied(OWNER_OR_STAFF)


def _require_manual(task: Task, action: str = "started and completed") -> None:
    if types.get(task.task_type).runs_on_worker:
        raise Conflict(f"Only manual tasks are {action} by hand.", code="not_manual")
