"""Handing tasks to the broker. The database stays the source of truth: a send that fails
is logged and left for the dispatcher, never raised to the caller."""

from __future__ import annotations

import logging

from django.utils import timezone

from backend.celery import app as celery_app

from . import types
from .models import Task, TaskStatus

logger = logging.getLogger(__name__)


def publish_many(rows) -> int:
    """Send a run message for each ``(id, task_type, input_data)``; returns how many went.

    Sent first, marked after: a crash in between means a duplicate send (harmless, the claim
    is guarded), never a lost task.
    """
    if not rows:
        return 0
    from .jobs import run_task

    sent = 0
    try:
        with celery_app.connection_for_write() as connection:
            for task_id, task_type, input_data in rows:
                limit = types.get(task_type).time_limit_for(input_data)
                run_task.apply_async(
                    args=[str(task_id)],
                    queue=types.get(task_type).queue,
                    connection=connection,
                    retry=False,
                    time_limit=limit + 5,
                    soft_time_limit=limit,
                )
                Task.objects.filter(pk=task_id, status=TaskStatus.PENDING).update(
                    enqueued_at=timezone.now()
                )
                sent += 1
    except Exception as exc:  # the broker is down or refused: the dispatcher retries later
        logger.warning("could not send %d task(s) to the broker: %s", len(rows) - sent, exc)
    return sent
