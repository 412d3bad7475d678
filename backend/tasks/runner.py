"""Runs one task on a worker: claim, call the type's handler, record the outcome."""

from __future__ import annotations

import json
import logging

from celery.exceptions import SoftTimeLimitExceeded

from . import services, types

logger = logging.getLogger(__name__)


def execute(task_id: str) -> str:
    """Returns what happened, for the worker's log: claimed-and-done or why not."""
    task = services.task_claim(task_id=task_id)
    if task is None:
        return "skipped: not pending (already taken, cancelled, expired or deleted)"
    try:
        kind = types.get(task.task_type)
        if kind.handler is None:
            raise RuntimeError(f"task type {task.task_type!r} is not run by workers")
        context = types.JobContext(
            lambda percent: services.task_report_progress(task=task, progress=percent),
            task_id=task.pk,
            owner_id=task.owner_id,
        )
        result = kind.handler(task.input_data, context)
        # Whatever the handler returned must be storable JSON; check before writing.
        json.dumps(result, allow_nan=False)
        finished = services.task_finish(task=task, result=result)
    except types.TaskInterrupted:
        return "stopped: the task is no longer running (cancelled, expired or rescued)"
    except SoftTimeLimitExceeded:
        services.task_fail(task=task, error="time limit exceeded")
        return "failed: time limit exceeded"
    except Exception as exc:  # a handler's (or its result's) error fails the task, never the worker
        logger.exception("task %s (%s) failed", task_id, task.task_type)
        services.task_fail(task=task, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    if finished:
        return "completed"
    return "discarded: the task stopped running before its result was recorded"
