"""Crontab expressions, time zones and the next firing time, on a fixed clock."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backend.schedules import timing

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("  0   9 * *   1-5 ", "0 9 * * 1-5"),
        ("0 9 * * mon-fri", "0 9 * * mon-fri"),
        ("15,45 8-18 1,15 jan-jun *", "15,45 8-18 1,15 jan-jun *"),
    ],
)
def test_valid_expressions_are_normalized(expression, normalized):
    assert timing.normalize_crontab(expression) == normalized


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("61 * * * *", "minute field '61'"),
        ("* 25 * * *", "hour field '25'"),
        ("* * 0 * *", "day-of-month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 7", "day-of-week field '7'"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("abc * * * *", "minute field 'abc'"),
        ("* */25 * * *", "hour field '*/25'"),
        ("5,,6 * * * *", "minute field '5,,6'"),
        # Digits of other scripts, which int() reads: Arabic-Indic, full-width.
        ("\u0660 0 * * *", "minute field '\u0660'"),
        ("0 \uff19 * * *", "hour field '\uff19'"),
    ],
)
def test_a_bad_field_is_named(expression, named):
    with pytest.raises(timing.TimingError) as error:
        timing.parse_crontab(expression)
    assert named in str(error.value)


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "", "@daily"])
def test_five_fields_are_required(expression):
    with pytest.raises(timing.TimingError, match="five fields"):
        timing.parse_crontab(expression)


def test_a_crontab_that_never_fires_is_refused():
    with pytest.raises(timing.TimingError, match="never fires"):
        timing.parse_crontab("0 0 31 2 *")


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"])
def test_known_time_zones(name):
    assert timing.validate_timezone(name) == name


# ``localtime`` (the host's own zone: another host would fire at other times), ``Factory``
# and ``posixrules`` are files of the system's zone folder, not IANA zones.
@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "europe/paris", "CEST+1", "", None, "localtime", "Factory", "posixrules"],
)
def test_unknown_time_zones(name):
    with pytest.raises(timing.TimingError, match="IANA"):
        timing.validate_timezone(name)


# --- the next firing, on a fixed clock --------------------------------------------------

NEXT_RUNS = [
    # Weekdays at 09:00 in Paris, asked on a Friday in winter: Monday is after the spring
    # change, so 09:00 is 07:00 UTC (not 08:00).
    ("0 9 * * 1-5", "Europe/Paris", datetime(2026, 3, 27, 10, 0, tzinfo=PARIS), utc(2026, 3, 30, 7, 0)),
    # ... and asked on a Friday in summer: Monday is after the autumn change, 08:00 UTC.
    ("0 9 * * 1-5", "Europe/Paris", datetime(2026, 10, 23, 10, 0, tzinfo=PARIS), utc(2026, 10, 26, 8, 0)),
    # Before the change on the same day: still winter time.
    ("0 9 * * 1-5", "Europe/Paris", datetime(2026, 3, 26, 8, 0, tzinfo=PARIS), utc(2026, 3, 26, 8, 0)),
    # New York moves its clocks on another weekend (8 March 2026).
    ("0 9 * * *", "America/New_York", datetime(2026, 3, 7, 10, 0, tzinfo=NEW_YORK), utc(2026, 3, 8, 13, 0)),
    ("0 9 * * *", "America/New_York", datetime(2026, 3, 6, 10, 0, tzinfo=NEW_YORK), utc(2026, 3, 7, 14, 0)),
    # The repeated hour of the autumn change fires once, at its first occurrence ...
    ("30 2 * * *", "Europe/Paris", datetime(2026, 10, 24, 12, 0, tzinfo=PARIS), utc(2026, 10, 25, 0, 30)),
    # ... and not again an hour later: the next one is the following night.
    ("30 2 * * *", "Europe/Paris", utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
    # The last firing in the second pass of the repeated hour (a schedule made, turned on
    # or caught up then): the next match of that hour is in its second pass too. It came
    # out in the first, before the last firing, and beat fired on every tick until the hour
    # ended.
    ("*/20 * * * *", "America/New_York", utc(2026, 11, 1, 6, 4), utc(2026, 11, 1, 6, 20)),
    ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 6, 30)),
    ("*/20 * * * *", "Europe/Paris", utc(2026, 10, 25, 1, 5), utc(2026, 10, 25, 1, 20)),
    # Lord Howe turns its clocks back half an hour.
    ("*/15 * * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 15, 5), utc(2026, 4, 4, 15, 15)),
    # ... and from the end of the second pass, the hour after.
    ("*/20 * * * *", "America/New_York", utc(2026, 11, 1, 6, 45), utc(2026, 11, 1, 7, 0)),
    # 02:30 does not exist on the night of the spring change; beat fires it at 01:30 UTC
    # (03:30 summer time).
    ("30 2 * * *", "Europe/Paris", datetime(2026, 3, 28, 12, 0, tzinfo=PARIS), utc(2026, 3, 29, 1, 30)),
    # UTC, to the next five minutes; strictly after the clock.
    ("*/5 * * * *", "UTC", utc(2026, 6, 1, 12, 3, 10), utc(2026, 6, 1, 12, 5)),
    ("*/5 * * * *", "UTC", utc(2026, 6, 1, 12, 5, 0), utc(2026, 6, 1, 12, 10)),
    # Day of month and day of week must both match (beat's rule, unlike classic cron): the
    # first of a month that is a Monday, after 1 July 2026, is 1 February 2027.
    ("0 0 1 * 1", "UTC", utc(2026, 7, 1, 12, 0), utc(2027, 2, 1, 0, 0)),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "zone", "now", "expected"), NEXT_RUNS)
def test_next_run_in_the_schedules_time_zone(expression, zone, now, expected):
    assert timing.next_crontab_run(expression, zone, after=now) == expected


@pytest.mark.parametrize(("expression", "zone", "now", "expected"), NEXT_RUNS)
def test_beat_finds_it_due_at_that_moment_and_not_before(expression, zone, now, expected):
    """The crontab beat runs, asked at the computed moment, agrees it is due then."""
    schedule = timing.beat_crontab(expression, zone)
    schedule.nowfun = lambda: (expected - timedelta(seconds=30)).astimezone(schedule.tz)
    assert not schedule.is_due(now).is_due
    schedule.nowfun = lambda: (expected + timedelta(seconds=1)).astimezone(schedule.tz)
    assert schedule.is_due(now).is_due


def test_next_interval_run():
    assert timing.next_interval_run(300, last=utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 5)
