"""Every change of a schedule, and its firing.

A schedule and its django-celery-beat ``PeriodicTask`` (with its ``IntervalSchedule`` or
``CrontabSchedule``) are written in one transaction, so beat never sees one without the
other. Each firing creates its task through ``tasks.services.task_create`` (the active-task
limit applies) and records a ``ScheduleRun``: the task, or the refusal's code and detail.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from backend.common.errors import Conflict, DomainError, NotFound, PermissionDenied
from backend.tasks import services as task_services
from backend.users.models import User

from . import timing
from .models import Schedule, ScheduleRun
from .validation import TEMPLATE_FIELDS, validate_template

logger = logging.getLogger(__name__)

FIRE_TASK = "backend.schedules.jobs.fire_schedule"
TIMING_FIELDS = ("interval_seconds", "crontab", "timezone")
EDITABLE_FIELDS = (*TEMPLATE_FIELDS, "deadline_seconds", *TIMING_FIELDS, "enabled")

# Refusal codes of a firing that are not a task rule's own.
OWNER_INACTIVE = "owner_inactive"
INVALID_INPUT = "invalid_input"


# --- create, edit, delete ---------------------------------------------------------------


@transaction.atomic
def schedule_create(
    *,
    owner: User,
    task_type: str,
    input_data: dict | None = None,
    name: str = "",
    description: str = "",
    priority: str = "normal",
    deadline_seconds: int | None = None,
    interval_seconds: int | None = None,
    crontab: str = "",
    timezone: str = "UTC",
    enabled: bool = True,
) -> Schedule:
    """Create a schedule and its periodic task; the template must already be validated."""
    # Lock the owner's row: two concurrent creates cannot both take the last place.
    User.objects.select_for_update(no_key=True).filter(pk=owner.pk).first()
    limit = settings.MAX_SCHEDULES_PER_USER
    if Schedule.objects.filter(owner=owner).count() >= limit:
        raise Conflict(
            f"{owner.username} already has {limit} schedules (the most allowed); delete one first.",
            code="schedule_limit",
        )
    schedule = Schedule(
        owner=owner,
        task_type=task_type,
        input_data=input_data or {},
        name=name,
        description=description,
        priority=priority,
        deadline_seconds=deadline_seconds,
        interval_seconds=interval_seconds,
        crontab=crontab or "",
        timezone=timezone,
        enabled=enabled,
    )
    periodic_task = PeriodicTask(name=_periodic_task_name(schedule), task=FIRE_TASK)
    _sync_periodic_task(periodic_task, schedule)
    schedule.periodic_task = periodic_task
    schedule.save()
    return schedule


def schedule_locked(schedule: Schedule) -> Schedule:
    """The schedule's row as it is now, locked until the transaction ends (edits take
    turns: each starts from what the one before wrote); 404 when it was deleted since."""
    locked = Schedule.objects.select_for_update().filter(pk=schedule.pk).first()
    if locked is None:
        raise NotFound("Not found.")
    return locked


@transaction.atomic
def schedule_update(*, schedule: Schedule, actor: User, data: dict[str, Any]) -> Schedule:
    """Apply validated changes (a whole, valid schedule once merged) and keep the periodic
    task in step."""
    _require_owner_or_staff(schedule, actor)
    schedule = schedule_locked(schedule)
    was_enabled = schedule.enabled
    timetable = _timetable(schedule)
    for field in EDITABLE_FIELDS:
        if field in data:
            setattr(schedule, field, data[field])
    if schedule.crontab is None:
        schedule.crontab = ""
    periodic_task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    # Beat keeps an edited entry's last firing (it writes it to the row before it reads the
    # changed schedule again, and after each firing, which a beat killed may not have
    # done): the row gets it now, or
    # next_run_at would count the interval from the edit. A schedule turned on counts from
    # then (disabling it cleared its last run; so does a periodic task turned off in its own
    # admin and on again here), and so does one given another timetable (another crontab,
    # time zone, or kind): counted from its last firing, a match of the new crontab since
    # then would fire it at once. One that stays on otherwise keeps its start (its last
    # firing, or when it was made or turned on), so an edit, even of its interval, does not
    # postpone its next firing.
    last = schedule.last_run_at
    kept_on = was_enabled and periodic_task.enabled and _timetable(schedule) == timetable
    last_run = False
    if schedule.enabled and not kept_on:
        periodic_task.last_run_at = timezone.now()
        last_run = True
    elif (
        schedule.enabled
        and last is not None
        and (periodic_task.last_run_at is None or periodic_task.last_run_at < last)
    ):
        periodic_task.last_run_at = _sent_at(periodic_task, last)
        last_run = True
    _sync_periodic_task(periodic_task, schedule, last_run=last_run)
    schedule.save()
    return schedule


def _timetable(schedule: Schedule) -> tuple:
    """What beat's timetable is made of, but an interval's length (whose change keeps the
    start): the kind, and a crontab's expression and time zone."""
    if schedule.interval_seconds is not None:
        return ("interval",)
    return ("crontab", schedule.crontab, schedule.timezone)


def schedule_set_enabled(*, schedule: Schedule, actor: User, enabled: bool) -> Schedule:
    return schedule_update(schedule=schedule, actor=actor, data={"enabled": enabled})


@transaction.atomic
def schedule_delete(*, schedule: Schedule, actor: User) -> None:
    """Delete the schedule, its runs and its periodic task (the tasks it created stay)."""
    _require_owner_or_staff(schedule, actor)
    periodic_task_id = schedule.periodic_task_id
    # The row lock a firing takes (_fire): a firing under way finishes (its run included)
    # before the delete collects the runs, and a later one finds no schedule.
    if not list(Schedule.objects.select_for_update().filter(pk=schedule.pk).values("pk")):
        return
    Schedule.objects.filter(pk=schedule.pk).delete()
    # Deleted one by one (not in bulk) so beat's change marker is bumped.
    for periodic_task in PeriodicTask.objects.filter(pk=periodic_task_id):
        periodic_task.delete()


# --- firing (called by the worker on beat's message) -----------------------------------


class FiringSuperseded(Exception):
    """A firing made after beat sent this message was recorded already: the message waited
    in a backlog (the maintenance worker stopped) behind, or after, a later one."""


def schedule_fire(
    *, schedule_id, message_id: str | None = None, sent_at=None
) -> ScheduleRun | None:
    """Create the schedule's task now and record the run; None when there is nothing to
    fire (the schedule was deleted or disabled since beat sent the message).

    ``sent_at``: when beat sent the message. One handled after a firing made since then
    raises ``FiringSuperseded``: a backlog of firings (a worker stopped while beat went on)
    fires once when the worker is back, as a stopped beat catches up once, not in a burst
    of tasks all made at the same moment."""
    try:
        with transaction.atomic():
            return _fire(schedule_id, message_id, sent_at)
    except IntegrityError:
        # The same message handled concurrently by another worker: that one recorded it.
        existing = ScheduleRun.objects.filter(message_id=message_id).first()
        if message_id is None or existing is None:
            raise
        return existing


def _fire(schedule_id, message_id: str | None, sent_at=None) -> ScheduleRun | None:
    # The schedule's row lock makes concurrent firings of one schedule take turns.
    schedule = Schedule.objects.select_for_update().filter(pk=schedule_id).first()
    if schedule is None:
        # A periodic task left behind by a delete (beat wrote its row back over the delete,
        # in an older version) would fire for ever, and the admin keeps a schedule's own:
        # it goes now.
        PeriodicTask.objects.filter(name=f"schedule {schedule_id}", task=FIRE_TASK).delete()
        return None
    if not schedule.enabled:
        return None
    if message_id is not None:
        duplicate = ScheduleRun.objects.filter(message_id=message_id).first()
        if duplicate is not None:
            return duplicate
    if sent_at is not None and schedule.last_run_at is not None and schedule.last_run_at > sent_at:
        raise FiringSuperseded(
            f"schedule {schedule_id} fired at {schedule.last_run_at.isoformat()}, after this "
            f"firing was sent ({sent_at.isoformat()})"
        )
    now = timezone.now()
    run = ScheduleRun(schedule=schedule, fired_at=now, message_id=message_id)
    owner = schedule.owner
    if not owner.is_active:
        schedule.enabled = False
        periodic_task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
        _sync_periodic_task(periodic_task, schedule)
        Schedule.objects.filter(pk=schedule.pk).update(enabled=False, updated_at=now)
        run.code = OWNER_INACTIVE
        run.detail = "The schedule's owner is deactivated; the schedule has been disabled."
    else:
        _create_task(schedule, run, now)
    run.save()
    Schedule.objects.filter(pk=schedule.pk).update(last_run_at=now, total_runs=F("total_runs") + 1)
    _forget_old_runs(schedule)
    return run


def _forget_old_runs(schedule: Schedule) -> None:
    """Keep the schedule's latest ``SCHEDULE_RUNS_KEPT`` runs (``total_runs`` still counts
    every firing). Under the schedule's row lock, so firings take turns; one short index
    scan of the kept runs per firing."""
    older = ScheduleRun.objects.filter(schedule=schedule).order_by("-fired_at", "-id")
    older = older[settings.SCHEDULE_RUNS_KEPT :].values("pk")
    ScheduleRun.objects.filter(schedule=schedule, pk__in=older).delete()


def _create_task(schedule: Schedule, run: ScheduleRun, now) -> None:
    """Validate the template again (an input may have gone stale, e.g. a deleted file) and
    create the task; a refusal is written on the run, never raised."""
    template, errors = validate_template(schedule_template(schedule), owner=schedule.owner)
    if errors:
        run.code = INVALID_INPUT
        run.detail = "The template is no longer valid: " + json.dumps(errors)[:1000]
        return
    minimum = settings.SCHEDULE_MIN_INTERVAL
    if schedule.interval_seconds is not None and schedule.interval_seconds < minimum:
        # Made under a lower SCHEDULE_MIN_INTERVAL: it went on firing at that pace.
        run.code = INVALID_INPUT
        run.detail = (
            f"interval_seconds ({schedule.interval_seconds}) is below SCHEDULE_MIN_INTERVAL "
            f"({minimum}); give the schedule a longer interval."
        )
        return
    deadline = None
    if schedule.deadline_seconds:
        deadline = now + timedelta(seconds=schedule.deadline_seconds)
    try:
        task = task_services.task_create(
            owner=schedule.owner,
            task_type=template["task_type"],
            input_data=template["input_data"],
            name=template["name"],
            description=template["description"],
            priority=template["priority"],
            deadline=deadline,
        )
    except DomainError as exc:
        run.code = exc.code
        run.detail = exc.detail
    else:
        run.task = task


def schedule_template(schedule: Schedule) -> dict[str, Any]:
    return {field: getattr(schedule, field) for field in TEMPLATE_FIELDS}


def schedule_as_written(schedule: Schedule) -> dict[str, Any]:
    """The schedule as a body of its write serializer gives it: what a change is merged
    with, and what turning it on checks whole."""
    return {
        **schedule_template(schedule),
        "deadline_seconds": schedule.deadline_seconds,
        "interval_seconds": schedule.interval_seconds,
        "crontab": schedule.crontab or None,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
    }


# --- the periodic task ------------------------------------------------------------------


def _periodic_task_name(schedule: Schedule) -> str:
    return f"schedule {schedule.pk}"


def _sent_at(periodic_task: PeriodicTask, recorded):
    """When beat sent the firing a worker recorded at ``recorded``: for an interval, beat's
    own record moved on by whole intervals up to it (the worker's delay shifts nothing, as
    in backend/schedules/beat.py); for a crontab, the recorded time."""
    if periodic_task.interval is None:
        return recorded
    start = periodic_task.last_run_at or periodic_task.date_changed
    return timing.interval_steps_up_to(periodic_task.interval.schedule.run_every, start, recorded)


def _sync_periodic_task(
    periodic_task: PeriodicTask, schedule: Schedule, *, last_run: bool = False
) -> None:
    """Point the periodic task at the schedule's timing and state, and save it (which also
    tells beat that its schedule changed); ``last_run``: its ``last_run_at`` too."""
    if schedule.interval_seconds is not None:
        periodic_task.interval = _interval(schedule.interval_seconds)
        periodic_task.crontab = None
    else:
        periodic_task.crontab = _crontab(schedule.crontab, schedule.timezone)
        periodic_task.interval = None
    periodic_task.task = FIRE_TASK
    periodic_task.kwargs = json.dumps({"schedule_id": str(schedule.pk)})
    periodic_task.enabled = schedule.enabled
    periodic_task.description = (
        f"{schedule.owner.username}: {schedule.name or schedule.task_type}. "
        f"Managed by /api/schedules/{schedule.pk}/ and the Schedules admin; "
        f"change it there, not here."
    )
    if periodic_task.pk is None:
        # Beat counts a task that has no last run from the moment it reads it (again after
        # every change): the schedule's timetable starts now, whatever edits come.
        periodic_task.last_run_at = timezone.now()
        periodic_task.save()  # (which clears last_run_at again when it is disabled)
        return
    # Only these columns: beat writes last_run_at and total_run_count of the same row.
    fields = ["interval", "crontab", "task", "kwargs", "enabled", "description", "date_changed"]
    if last_run or not periodic_task.enabled:
        fields.append("last_run_at")  # beat's rule: a disabled task forgets its last run
    periodic_task.save(update_fields=fields)


# Namespace of the transaction locks below (PostgreSQL's two-key advisory locks).
_TIMING_LOCK = 0x5363  # "Sc"


def _shared_timing(key: str, find, make):
    """The timing row ``find()`` returns, else the one ``make()`` creates: looked up and
    made under a lock on ``key`` until the transaction ends, so two schedules given the
    same new timing at once share one row (beat's tables have no unique constraint: both
    found none, and each made its own, left behind for good). On SQLite the write lock
    already serialises the two."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_TIMING_LOCK, key]
                )
        return find() or make()


def _interval(seconds: int) -> IntervalSchedule:
    # Interval rows are shared by every periodic task with the same period, and never
    # deleted here (beat's own entries may use the same row).
    found = IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS)
    return _shared_timing(
        f"interval {seconds}",
        found.first,
        lambda: IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS),
    )


def _crontab(expression: str, zone: str) -> CrontabSchedule:
    spec = timing.parse_crontab(expression)
    found = CrontabSchedule.objects.filter(**spec, timezone=zone)
    return _shared_timing(
        f"crontab {' '.join(spec.values())} {zone}",
        found.first,
        lambda: CrontabSchedule.objects.create(**spec, timezone=ZoneInfo(zone)),
    )


def _require_owner_or_staff(schedule: Schedule, actor: User) -> None:
    if not (actor.is_staff or schedule.owner_id == actor.pk):
        raise PermissionDenied("Only the schedule's owner or staff can do this.")
