"""Reads of schedules and their runs."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from backend.users.models import User

from . import timing
from .models import Schedule, ScheduleRun


def schedules_visible_to(user: User) -> QuerySet[Schedule]:
    """Staff see every schedule; others their own."""
    queryset = Schedule.objects.select_related("owner", "periodic_task")
    if not user.is_staff:
        queryset = queryset.filter(owner=user)
    return queryset


def schedule_runs(schedule: Schedule) -> QuerySet[ScheduleRun]:
    """The schedule's runs, newest first, each with its task's current status."""
    return (
        ScheduleRun.objects.filter(schedule=schedule)
        .select_related("task")
        .order_by("-fired_at", "-id")
    )


def schedule_next_run_at(schedule: Schedule) -> datetime | None:
    """When beat fires the schedule next; None while it (or its periodic task) is disabled.

    Beat's rule: a crontab fires at its first match after its last firing (in its time
    zone), an interval one interval after it; before the first firing, after the periodic
    task was last changed. So an overdue schedule (beat stopped: it fires at once when it is
    back, once) shows a past time, of either kind. (A crontab's was its next match after
    now, a time at which nothing fired: beat fired the missed match first, at its restart.)
    """
    if not (schedule.enabled and schedule.periodic_task.enabled):
        return None  # (its periodic task turned off in the admin: beat does not fire it)
    periodic_task = schedule.periodic_task
    last = periodic_task.last_run_at or periodic_task.date_changed
    if schedule.interval_seconds is None:
        if schedule.last_run_at is not None and schedule.last_run_at > last:
            # Recorded by the worker before beat wrote its own: beat's record moved on by
            # its firings up to it (the match beat sent), as beat starts from.
            last = timing.crontab_steps_up_to(
                timing.beat_crontab(schedule.crontab, schedule.timezone),
                last,
                schedule.last_run_at,
            )
        return timing.next_crontab_run(schedule.crontab, schedule.timezone, after=last)
    if schedule.last_run_at is not None and schedule.last_run_at > last:
        # Beat saves its own last_run_at right after a firing; the run recorded is newer
        # (beat killed before, or the worker recorded first):
        # beat's record moved on by whole intervals up to it, as beat starts from after a
        # restart (backend/schedules/beat.py), so the worker's delay shifts nothing.
        last = timing.interval_steps_up_to(schedule.interval_seconds, last, schedule.last_run_at)
    return timing.next_interval_run(schedule.interval_seconds, last=last)
