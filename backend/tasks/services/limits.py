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

    Must run inside the transaction that then gives them the task. On PostgreSQL the
    assignee's row is locked first (``lock_slots``), which serialises concurrent requests for
    the same user; the count is a statement of its own, so it reads what was committed up to
    the moment the lock was granted (each statement takes a fresh snapshot). On SQLite the
    IMMEDIATE transaction already holds the database's write lock.

    A create does the same with the count folded into its INSERT (``below_limit``)."""
    if assignee is None:
        return
    lock_slots(assignee)
    condition, params = below_limit(assignee, exclude_task=exclude_task)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {condition}", params)
        free = cursor.fetchone()[0]
    if not free:
        raise limit_reached(assignee)


def lock_slots(assignee: User) -> None:
    """Lock ``assignee``'s row (PostgreSQL) until the transaction ends: a count of their
    active tasks by a statement that starts after this sees every task given to them."""
    if connection.features.has_select_for_update:
        with connection.cursor() as cursor:
            cursor.execute(_LOCK, [_user_id(assignee)])


def below_limit(assignee: User, *, exclude_task: Task | None = None) -> tuple[str, list]:
    """An SQL condition, with its parameters: ``assignee`` holds fewer than MAX_ACTIVE_TASKS
    active tasks (``exclude_task`` not counted)."""
    count, params = _COUNT, [_user_id(assignee)]
    if exclude_task is not None:
        count += " AND id <> %s"
        params.append(Task._meta.pk.get_db_prep_value(exclude_task.pk, connection))
    return f"({count}) < %s", [*params, settings.MAX_ACTIVE_TASKS]


def limit_reached(assignee: User) -> Conflict:
    return Conflict(
        f"{assignee.username} already has {settings.MAX_ACTIVE_TASKS} active tasks "
        f"(the most allowed); wait for one to finish or cancel one.",
        code="active_task_limit",
    )


def _user_id(user: User):
    return User._meta.pk.get_db_prep_value(user.pk, connection)


_LOCK = f"SELECT 1 FROM {quoted(User._meta.db_table)} WHERE id = %s FOR UPDATE"
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
