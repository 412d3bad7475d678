"""Every change of a task's state (SPEC §5), by the part of its life it belongs to:

- ``lifecycle``: create, edit, delete and the actions people take (assign, decline, start,
  complete, cancel, retry);
- ``limits``: the five-active-task limit and who may hold a task;
- ``execution``: a worker's run (claim or read, progress, outcome);
- ``sweeps``: what Beat runs (expiry, dispatch, rescue).

Callers use ``services.task_create(...)`` and so on, from here.
"""

from backend.tasks import queue

from .execution import (
    task_claim,
    task_fail,
    task_fail_unread,
    task_finish,
    task_finish_unread,
    task_heartbeat,
    task_read,
    task_report_progress,
    task_retry_later,
    task_still_running,
    tasks_finish_unread,
    unread_runs,
)
from .lifecycle import (
    OWNER_OR_STAFF,
    UNSET,
    manual_action_refusal,
    owner_or_staff,
    running_not_deleted,
    task_assign,
    task_cancel,
    task_complete,
    task_create,
    task_decline,
    task_delete,
    task_retry,
    task_start,
    task_update,
    tasks_delete,
)
from .limits import reserve_active_slot
from .sweeps import (
    DEADLINE_EXCEEDED,
    task_expire_if_overdue,
    tasks_dispatch,
    tasks_dispatch_all,
    tasks_expire,
    tasks_rescue,
)

__all__ = [
    "DEADLINE_EXCEEDED",
    "OWNER_OR_STAFF",
    "UNSET",
    "manual_action_refusal",
    "owner_or_staff",
    "queue",
    "reserve_active_slot",
    "running_not_deleted",
    "task_assign",
    "task_cancel",
    "task_claim",
    "task_complete",
    "task_create",
    "task_decline",
    "task_delete",
    "task_expire_if_overdue",
    "task_fail",
    "task_fail_unread",
    "task_finish",
    "task_finish_unread",
    "task_heartbeat",
    "task_read",
    "task_report_progress",
    "task_retry",
    "task_retry_later",
    "task_start",
    "task_still_running",
    "task_update",
    "tasks_delete",
    "tasks_dispatch",
    "tasks_dispatch_all",
    "tasks_expire",
    "tasks_finish_unread",
    "tasks_rescue",
    "unread_runs",
]
