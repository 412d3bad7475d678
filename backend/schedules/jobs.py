"""Celery entry point of beat's schedule firings: a thin wrapper around the service."""

import logging

from celery import shared_task
from django.core.exceptions import ValidationError

from . import services

logger = logging.getLogger(__name__)


@shared_task(name="backend.schedules.jobs.fire_schedule", bind=True, ignore_result=True)
def fire_schedule(self, schedule_id: str) -> str:
    """Fire one schedule. The message's id makes a redelivered message fire it only once."""
    try:
        run = services.schedule_fire(schedule_id=schedule_id, message_id=self.request.id)
    except ValidationError:  # not a UUID: no such schedule
        run = None
    if run is None:
        return f"skipped: schedule {schedule_id} is deleted or disabled"
    if run.task_id:
        return f"fired: task {run.task_id}"
    return f"refused: {run.code}"
