"""The five-active-task limit and who may hold a task (SPEC §5)."""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from backend.common.errors import Conflict, DomainError
from backend.common.sql import quoted
from backend.tasks import types
from backend.tasks.models import ACTIVE_SQL, Task
from backend.users.models import User


def reserve_active_slot(assignee: User | None, *, exclude_task: Task | None = None) -> None:
    """Refuse when ``assignee`` already holds MAX_ACTIVE_TASKS active tasks.

    Must run inside the transaction that then gives them the task (``slot_free`` says how
    concurrent requests for the same user are serialised). A create checks the same
    condition in its INSERT instead."""
    if assignee is not None:
        _refuse_unless_free(assignee, exclude_task)


def slot_free(assignee: User, *, exclude_task: Task | None = None) -> tuple[str, list]:
    """An SQL condition, with its parameters: ``assignee`` holds fewer than MAX_ACTIVE_TASKS
    active tasks (``exclude_task`` not counted).

    PostgreSQL: ``tasks_take_slot()`` (migration 0010) first locks the assignee's row until
    the transaction ends, which serialises concurrent requests for the same user, then counts
    in a statement of its own, which sees every task committed up to the moment the lock was
    granted. A statement that counted by itself would not: its snapshot predates its wait
    for the lock. SQLite: the count alone; the IMMEDIATE transaction holds the database's
    write lock."""
    user_id = _pk_value(assignee)
    skip = None if exclude_task is None else _pk_value(exclude_task)
    if slot_free_locks_itself():
        return "tasks_take_slot(%s, %s, %s)", [user_id, settings.MAX_ACTIVE_TASKS, skip]
    count, params = _COUNT, [user_id]
    if skip is not None:
        count += " AND id <> %s"
        params.append(skip)
    return f"({count}) < %s", [*params, settings.MAX_ACTIVE_TASKS]


def slot_free_locks_itself() -> bool:
    """Whether ``slot_free`` takes the assignee's lock itself (PostgreSQL), so a statement
    that checks it may run alone in autocommit; on SQLite it needs the caller's transaction."""
    return connection.vendor == "postgresql"


def refuse_early_when_full(assignee: User | None) -> None:
    """SQLite: refuse, from a plain read, an assignee already at the limit, before the
    transaction that would check it (its IMMEDIATE write lock is the whole database's: a
    storm of creates past the limit took it one by one, and every other write waited). The
    check in that transaction still decides; PostgreSQL's single statement needs none."""
    if assignee is not None and not slot_free_locks_itself() and not connection.in_atomic_block:
        _refuse_unless_free(assignee, None)


def _refuse_unless_free(assignee: User, exclude_task: Task | None) -> None:
    condition, params = slot_free(assignee, exclude_task=exclude_task)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {condition}", params)
        free = cursor.fetchone()[0]
    if not free:
        raise limit_reached(assignee)


def limit_reached(assignee: User) -> Conflict:
    return Conflict(
        f"{assignee.username} already has {settings.MAX_ACTIVE_TASKS} active tasks "
        f"(the most allowed); wait for one to finish or cancel one.",
        code="active_task_limit",
    )


def _pk_value(instance: User | Task):
    return instance._meta.pk.get_db_prep_value(instance.pk, connection)


_COUNT = (
    f"SELECT COUNT(*) FROM {quoted(Task._meta.db_table)} WHERE assignee_id = %s AND {ACTIVE_SQL}"
)


def check_active_assignee(assignee: User | None) -> None:
    if assignee is not None and not assignee.is_active:
        raise DomainError("The assignee's account is deactivated.", code="assignee_inactive")


def check_assignee_allowed(kind: types.TaskType, owner: User, actor: User, assignee) -> None:
    """Slots belong to their holder: a worker task occupies its owner's slot, and only staff
    may give one to someone else (so nobody can fill another user's five slots)."""
    others = kind.runs_on_worker and assignee is not None and assignee.pk != owner.pk
    if others and not actor.is_staff:
        raise DomainError(
            "A worker task is assigned to its owner; only staff can give it to someone else.",
            code="assignee_not_allowed",
        )
