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
    assignee's row is locked first, which serialises concurrent requests for the same user;
    the count is a statement of its own, so it reads what was committed up to the moment the
    lock was granted (each statement takes a fresh snapshot). On SQLite the IMMEDIATE
    transaction already holds the database's write lock.
    """
    if assignee is None:
        return
    prep = User._meta.pk.get_db_prep_value
    user_id = prep(assignee.pk, connection)
    count = (
        f"SELECT COUNT(*) FROM {quoted(Task._meta.db_table)} "
        f"WHERE assignee_id = %s AND {ACTIVE_SQL}"
    )
    params = [user_id]
    if exclude_task is not None:
        count += " AND id <> %s"
        params.append(prep(exclude_task.pk, connection))
    with connection.cursor() as cursor:
        if connection.features.has_select_for_update:
            lock = f"SELECT 1 FROM {quoted(User._meta.db_table)} WHERE id = %s FOR UPDATE"
            cursor.execute(lock, [user_id])
        cursor.execute(count, params)
        active = cursor.fetchone()[0]
    if active >= settings.MAX_ACTIVE_TASKS:
        raise Conflict(
            f"{assignee.username} already has {settings.MAX_ACTIVE_TASKS} active tasks "
            f"(the most allowed); wait for one to finish or cancel one.",
            code="active_task_limit",
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
