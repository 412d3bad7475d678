"""When a schedule fires: crontab expressions, time zones, and the next firing time.

The next firing of a crontab is computed by the same crontab class beat runs
(django-celery-beat's time-zone-aware one), from the wall clock of the schedule's zone, so a
09:00 Europe/Paris schedule says 07:00 UTC in summer and 08:00 UTC in winter.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from celery.schedules import crontab as celery_crontab
from django.core.exceptions import ValidationError as DjangoValidationError
from django_celery_beat import validators
from django_celery_beat.tzcrontab import TzAwareCrontab

FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
LABELS = {
    "minute": "minute",
    "hour": "hour",
    "day_of_month": "day-of-month",
    "month_of_year": "month",
    "day_of_week": "day-of-week",
}
_MODEL_VALIDATORS = {
    "minute": validators.minute_validator,
    "hour": validators.hour_validator,
    "day_of_month": validators.day_of_month_validator,
    "month_of_year": validators.month_of_year_validator,
    "day_of_week": validators.day_of_week_validator,
}
_HINTS = {"day_of_week": " (Sunday is 0, Monday 1, ... Saturday 6; or sun, mon, ...)"}


class TimingError(ValueError):
    """A crontab expression or time zone that cannot be used; the message names the part."""


def parse_crontab(expression: str) -> dict[str, str]:
    """``"*/5 * * * *"`` → the five fields by name; ``TimingError`` naming the bad field."""
    parts = expression.split() if isinstance(expression, str) else []
    if len(parts) != len(FIELDS):
        raise TimingError(
            "A crontab has five fields separated by spaces: minute hour day-of-month month "
            "day-of-week, e.g. '*/5 * * * *' or '0 9 * * 1-5'."
        )
    spec = dict(zip(FIELDS, parts, strict=True))
    for field, value in spec.items():
        if not value.isascii():
            # Python's int() reads other scripts' digits (an Arabic-Indic zero as 0): taken, echoed as
            # written, a crontab other tools would not read.
            raise TimingError(
                f"The {LABELS[field]} field {value!r} is invalid: use the digits 0-9, "
                "letters a-z and * , - / only."
            )
        # Both parsers must accept it: celery's (what beat runs) and django-celery-beat's
        # model validators (what the admin's crontab form checks).
        reason = None
        try:
            _MODEL_VALIDATORS[field](value)
        except DjangoValidationError as exc:
            reason = "; ".join(exc.messages)
        if reason is None:
            try:
                celery_crontab(**{field: value})
            except Exception as exc:  # celery raises ValueError and its parser's own errors
                reason = str(exc) or type(exc).__name__
        if reason is not None:
            raise TimingError(
                f"The {LABELS[field]} field {value!r} is invalid: {reason}{_HINTS.get(field, '')}"
            )
    try:
        celery_crontab(**spec)
    except ValueError as exc:  # e.g. day 31 in February only: it would never fire
        raise TimingError(f"This crontab never fires: {exc}") from None
    return spec


def normalize_crontab(expression: str) -> str:
    return " ".join(parse_crontab(expression).values())


# Files of the system's zone folder that are not IANA zones: ``localtime`` is the host's
# own zone (a schedule would fire at other times on another host), ``Factory`` a
# placeholder, ``posixrules`` a default for POSIX strings.
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - NOT_ZONES


def validate_timezone(name: str) -> str:
    if not isinstance(name, str) or name not in _zone_names():
        raise TimingError(
            f"{name!r} is not a known IANA time zone name (e.g. 'UTC', 'Europe/Paris')."
        )
    return name


class Crontab(TzAwareCrontab):
    """django-celery-beat's crontab, whose next firing is never at or before the last.

    A match in the hour the autumn change repeats is found in its first pass (summer time):
    with the last firing in the second pass (a schedule made, turned on or caught up in that
    hour), the next match of the same hour came out before it, and beat found the schedule
    due on every tick until the hour ended (911 sends in 9 s, 22 tasks). That match is taken
    in its second pass instead, the first one after the last firing."""

    @classmethod
    def of(cls, schedule: TzAwareCrontab) -> Crontab:
        return cls(
            minute=schedule._orig_minute,
            hour=schedule._orig_hour,
            day_of_week=schedule._orig_day_of_week,
            day_of_month=schedule._orig_day_of_month,
            month_of_year=schedule._orig_month_of_year,
            tz=schedule.tz,
            app=schedule._app,
        )

    def remaining_estimate(self, last_run_at: datetime, *args, **kwargs) -> timedelta:
        remaining = super().remaining_estimate(last_run_at, *args, **kwargs)
        now = self.maybe_make_aware(self.now()).astimezone(UTC)
        last = self.maybe_make_aware(last_run_at).astimezone(UTC)
        target = now + remaining
        if target > last:
            return remaining
        second_pass = target.astimezone(self.tz).replace(fold=1).astimezone(UTC)
        if second_pass > last:
            return second_pass - now
        # Not seen (the wall clock after the last firing is past it): the matches from an
        # hour after the last firing, which leaves any repeated hour behind.
        return super().remaining_estimate(last_run_at + timedelta(hours=1), *args, **kwargs)


def beat_crontab(expression: str, zone: str) -> Crontab:
    return Crontab(**parse_crontab(expression), tz=ZoneInfo(zone))


def next_crontab_run(expression: str, zone: str, *, after: datetime) -> datetime:
    """The first firing strictly after ``after`` (to the minute), in UTC."""
    return _next_firing(beat_crontab(expression, zone), after)


def _next_firing(schedule: Crontab, after: datetime) -> datetime:
    """``schedule``'s first firing after ``after``, in UTC, as beat finds it then."""
    schedule.nowfun = lambda: after.astimezone(schedule.tz)
    return after.astimezone(UTC) + schedule.remaining_estimate(after)


def crontab_steps_up_to(schedule: Crontab, start: datetime, end: datetime) -> datetime:
    """The last firing beat's entry makes after ``start`` and at or before ``end``, each
    the first match after the one before (so a match in the repeated autumn hour counts
    once, as beat fires it), or ``start`` when none: the time beat sent the firing a worker
    recorded at ``end``, when beat's own record is ``start``. (At most the matches of the
    six hours up to ``end``: a worker records a firing well within that.)"""
    step = Crontab.of(schedule)
    last = max(start, end - timedelta(hours=6))
    while True:
        following = _next_firing(step, last)
        if following > end:
            return last if last > start else start
        last = following


# The intervals beat keeps: a second at least (one of a microsecond, which the Intervals
# admin took, fired its periodic task about 190 times a second), a century at most (one of
# 2,147,483,647 days overflowed a timedelta and beat died at start; one of 999,999,999 days
# put its next firing past the year 9999, and beat logged the error every tick).
SHORTEST_INTERVAL = timedelta(seconds=1)
LONGEST_INTERVAL = timedelta(days=36525)


def interval_refused(every: int | float, period: str) -> str:
    """Why beat cannot keep an interval of ``every`` ``period`` (django-celery-beat's
    ``IntervalSchedule`` fields); empty when it can."""
    try:
        length = timedelta(**{period: every})
    except (OverflowError, TypeError):
        length = None
    if length is None or length > LONGEST_INTERVAL:
        return f"An interval is at most {LONGEST_INTERVAL.days} days (a century)."
    if length < SHORTEST_INTERVAL:
        return "An interval is at least one second."
    return ""


def next_interval_run(interval_seconds: int, *, last: datetime) -> datetime:
    return last + timedelta(seconds=interval_seconds)


def interval_steps_up_to(interval_seconds: int | float | timedelta, start: datetime, end: datetime):
    """``start`` moved on by as many whole intervals as fit before ``end``: the time beat
    sent the firing a worker recorded at ``end``, when beat's own record is ``start``."""
    every = (
        interval_seconds
        if isinstance(interval_seconds, timedelta)
        else timedelta(seconds=interval_seconds)
    )
    if every <= timedelta(0) or end <= start:
        return start
    return start + every * ((end - start) // every)
