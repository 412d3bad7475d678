"""Celery entry point of beat's schedule firings: a thin wrapper around the service."""

import logging

from celery import shared_task
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from . import services

logger = logging.getLogger(__name__)


@shared_task(name="backend.schedules.jobs.fire_schedule", bind=True, ignore_result=True)
def fire_schedule(self, schedule_id: str, sent_at: str | None = None) -> str:
    """Fire one schedule. The message's id makes a redelivered message fire it only once;
    ``sent_at`` (when beat sent it) skips one that a later firing has overtaken."""
    sent = parse_datetime(sent_at) if isinstance(sent_at, str) else None
    try:
        run = services.schedule_fire(
            schedule_id=schedule_id, message_id=self.request.id, sent_at=sent
        )
    except ValidationError:  # not a UUID: no such schedule
        run = None
    except services.FiringSuperseded as exc:
        return f"skipped: {exc}"
    if run is None:
        return f"skipped: schedule {schedule_id} is deleted or disabled"
    if run.task_id:
        return f"fired: task {run.task_id}"
    return f"refused: {run.code}"
