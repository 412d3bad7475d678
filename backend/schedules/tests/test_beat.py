"""Beat's scheduler: a schedule's firing whose message cannot reach the broker is recorded
by beat itself, never lost (SPEC §7, §9)."""

from contextlib import contextmanager

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask, SolarSchedule

from backend.celery import app as celery_app
from backend.schedules import selectors, services
from backend.schedules.beat import Scheduler
from backend.schedules.models import Schedule, ScheduleRun
from backend.tasks.models import TaskStatus

from .factories import make_schedule

pytestmark = pytest.mark.django_db(transaction=True)


def entry_of(schedule):
    scheduler = Scheduler(app=celery_app, lazy=True)
    return scheduler, scheduler.all_as_schedule()[services._periodic_task_name(schedule)]


@contextmanager
def beats_producer():
    """A producer on a connection of its own, as beat sends with (``Scheduler.producer``),
    to the broker the app names now."""
    with celery_app.connection_for_write() as connection:
        yield connection.Producer(auto_declare=False)


def test_a_firing_due_while_the_broker_is_down_is_recorded_by_beat(user, broker_down):
    """Beat moved the entry on and only logged "Message Error": no task, no run."""
    schedule = make_schedule(user)
    scheduler, entry = entry_of(schedule)
    with beats_producer() as producer:
        scheduler.apply_entry(entry, producer=producer)
    [run] = ScheduleRun.objects.filter(schedule=schedule)
    assert run.task is not None and run.message_id
    # Created while the broker is down: pending, for the dispatcher to send once it is back.
    assert run.task.status == TaskStatus.PENDING and run.task.enqueued_at is None
    assert "task_id" not in entry.options  # the entry is left as it was


def test_a_firing_sent_is_left_to_the_worker(user):
    schedule = make_schedule(user)
    scheduler, entry = entry_of(schedule)
    with beats_producer() as producer:
        scheduler.apply_entry(entry, producer=producer)
    assert not ScheduleRun.objects.filter(schedule=schedule).exists()


def test_a_send_reported_failed_that_did_reach_the_broker_fires_once(user, monkeypatch):
    """The message carries the id beat records the run under: the worker's firing of that
    message finds the run, and makes no second one."""
    schedule = make_schedule(user)
    scheduler, entry = entry_of(schedule)
    sent = []

    def send_then_fail(entry, producer=None, advance=True, **kwargs):
        sent.append(entry.options["task_id"])
        raise ConnectionError("the answer was lost")

    monkeypatch.setattr(scheduler, "apply_async", send_then_fail)
    scheduler.apply_entry(entry)
    [run] = ScheduleRun.objects.filter(schedule=schedule)
    assert run.message_id == sent[0]
    assert services.schedule_fire(schedule_id=schedule.pk, message_id=sent[0]) == run
    assert ScheduleRun.objects.filter(schedule=schedule).count() == 1


def test_a_firing_beat_forgot_is_not_made_again_when_it_comes_back(user):
    """Beat writes its last firing to the periodic task's row only every few minutes: killed
    right after a firing, it came back with an older one and fired again at once (a second
    task for the same due time). It starts from the firing the schedule recorded."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user, interval_seconds=300)
    long_ago = timezone.now() - timedelta(hours=1)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=long_ago)
    _, entry = entry_of(schedule)
    assert entry.is_due()[0]  # by beat's own record, due long since

    services.schedule_fire(schedule_id=schedule.pk)  # the firing the worker recorded
    _, entry = entry_of(schedule)
    schedule.refresh_from_db()
    # Beat's own record moved on by whole intervals up to that firing: when beat sent it.
    assert entry.last_run_at == long_ago + timedelta(hours=1)
    assert timedelta(0) <= schedule.last_run_at - entry.last_run_at < timedelta(seconds=1)
    due, wait = entry.is_due()
    assert not due and 290 < wait <= 300


def test_a_firing_the_worker_made_late_does_not_shift_the_timetable(user):
    """Recorded 4 s after beat sent it (the maintenance queue backed up), a firing moved the
    schedule's next ones 4 s later at each reload of beat's schedule."""
    from datetime import timedelta

    from django_celery_beat.models import PeriodicTask

    from backend.schedules.models import Schedule

    schedule = make_schedule(user, interval_seconds=300)
    run = services.schedule_fire(schedule_id=schedule.pk)
    sent = run.fired_at - timedelta(seconds=4)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=sent)
    assert Schedule.objects.get(pk=schedule.pk).last_run_at == run.fired_at
    _, entry = entry_of(schedule)
    assert entry.last_run_at == sent


@pytest.mark.parametrize(
    "change",
    [
        {"crontab": "* * * * *"},  # another crontab
        {"timezone": "Asia/Kolkata"},  # the same one in another time zone
        {"crontab": "* * * * *", "interval_seconds": None},  # from an interval to a crontab
    ],
)
def test_another_timetable_starts_at_the_edit(user, change):
    """Counted from the schedule's start (or last firing), a match of the new timetable since
    then was already past: beat fired the schedule at once, while next_run_at said a time
    to come."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    if "interval_seconds" in change:
        schedule = make_schedule(user, interval_seconds=3600)
    else:
        schedule = make_schedule(user, crontab="*/30 * * * *")
    made = timezone.now() - timedelta(minutes=10)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=made)
    before = timezone.now()
    services.schedule_update(schedule=schedule, actor=user, data=change)
    _, entry = entry_of(schedule)
    assert entry.last_run_at >= before
    assert not entry.is_due().is_due

    # An interval's new length keeps the start: due now, as next_run_at says.
    schedule = make_schedule(user, interval_seconds=3600)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=made)
    services.schedule_update(schedule=schedule, actor=user, data={"interval_seconds": 300})
    _, entry = entry_of(schedule)
    assert entry.last_run_at == made and entry.is_due().is_due


def test_beat_does_not_write_an_older_firing_over_a_later_start(user):
    """Before it reads a changed schedule again, beat writes the last firing it remembers to
    the row: it put the start an edit gave (another crontab) back to that firing."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user, crontab="*/30 * * * *")
    _, entry = entry_of(schedule)
    fired = timezone.now() - timedelta(minutes=10)
    entry.model.last_run_at = entry.last_run_at = fired  # beat's firing, not written yet
    before = timezone.now()
    services.schedule_update(schedule=schedule, actor=user, data={"crontab": "* * * * *"})
    entry.save()  # beat's sync
    row = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert row.last_run_at >= before

    # Its own record is written as before when it is the later one.
    later = timezone.now() + timedelta(seconds=5)
    entry.model.last_run_at = later
    entry.save()
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).last_run_at == later


def commits_during_beats_write(monkeypatch, action) -> None:
    """``action`` runs (and commits) once beat's write of a firing has begun: right after
    its first look-up of the periodic task's row."""
    from django_celery_beat.models import PeriodicTask

    manager, done = PeriodicTask._default_manager, []

    def hooked(name):
        original = getattr(manager, name)

        def look_up(*args, **kwargs):
            found = original(*args, **kwargs)
            if not done:
                done.append(True)
                action()
            return found

        monkeypatch.setattr(manager, name, look_up)

    hooked("get")
    hooked("filter")


@pytest.mark.parametrize(
    "change", [{"interval_seconds": 7200}, {"enabled": False}, {"crontab": "0 9 * * *"}]
)
def test_beat_writing_a_firing_keeps_an_edit_made_meanwhile(user, monkeypatch, change):
    """Beat read the row, then wrote back every column of it: an edit committed in between
    (a schedule changed at its firing time) was undone, so the schedule said one timing
    (or paused) and fired by the old one."""
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user, interval_seconds=3600)
    _, entry = entry_of(schedule)
    data = {**change, "interval_seconds": None} if "crontab" in change else change
    entry.model.last_run_at = entry.last_run_at = timezone.now()  # beat fires, then writes
    entry.model.total_run_count += 1
    commits_during_beats_write(
        monkeypatch, lambda: services.schedule_update(schedule=schedule, actor=user, data=data)
    )
    entry.save()
    monkeypatch.undo()
    row = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    schedule.refresh_from_db()
    assert row.enabled == schedule.enabled
    assert (row.interval is None) == (schedule.interval_seconds is None)
    if schedule.interval_seconds:
        assert row.interval.every == schedule.interval_seconds
    if schedule.crontab:
        assert row.crontab is not None and row.crontab.hour == "9"
    assert row.total_run_count == 1


def test_beat_writing_a_firing_does_not_bring_a_deleted_schedules_task_back(user, monkeypatch):
    """Its write found no row to update and inserted it again: a schedule deleted at its
    firing time kept firing for ever (the worker skipping each), and the admin keeps a
    schedule's periodic task from being deleted there. A periodic task left so by an older
    version goes at its next firing."""
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user)
    name = services._periodic_task_name(schedule)
    _, entry = entry_of(schedule)
    entry.model.last_run_at = entry.last_run_at = timezone.now()
    commits_during_beats_write(
        monkeypatch, lambda: services.schedule_delete(schedule=schedule, actor=user)
    )
    entry.save()
    monkeypatch.undo()
    assert not PeriodicTask.objects.filter(name=name).exists()

    entry.model.save()  # as an older version wrote it back
    assert services.schedule_fire(schedule_id=schedule.pk, message_id="m-1") is None
    assert not PeriodicTask.objects.filter(name=name).exists()


def test_a_heap_rebuilt_after_a_firing_does_not_fire_it_again(user, monkeypatch):
    """Two reads of a changed schedule in one tick (a burst of edits, an admin bulk action)
    left the heap to be rebuilt on the next tick, from entries that still had the old last
    run: beat sent the schedule twice, two tasks for one due time."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user, interval_seconds=300)
    due = timezone.now() - timedelta(seconds=301)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=due)
    scheduler = Scheduler(app=celery_app, lazy=True)
    sent = []
    monkeypatch.setattr(
        scheduler, "apply_entry", lambda entry, producer=None: sent.append(entry.name)
    )
    name = services._periodic_task_name(schedule)
    for _ in range(8):  # the sweeps' entries are due at once too: a tick sends one each
        scheduler.tick()
    assert sent.count(name) == 1
    scheduler._heap_invalidated = True  # as a second read in the same tick leaves it
    for _ in range(8):
        scheduler.tick()
    assert sent.count(name) == 1
    scheduler.close()  # now, not at the interpreter's exit (its database is gone by then)


def test_beat_writes_a_firing_to_the_row_at_once(user):
    """Beat wrote its firings to the rows every 3 minutes: after a firing it made late (a
    missed one, caught up after a restart), the schedule's next_run_at was counted on the old
    timetable and said a time at which nothing fired."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from backend.schedules import selectors

    schedule = make_schedule(user, interval_seconds=300)
    missed = timezone.now() - timedelta(seconds=400)  # due 100 s ago, beat was down
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=missed)
    import time

    scheduler = Scheduler(app=celery_app, lazy=True)
    scheduler._last_sync = time.monotonic()  # a beat that has run a while
    before = timezone.now()
    name = services._periodic_task_name(schedule)
    for _ in range(8):  # the sweeps' entries are due at once too: a tick sends one each
        scheduler.tick()
        sent = PeriodicTask.objects.get(pk=schedule.periodic_task_id).last_run_at
        if sent > missed:
            break
    assert sent >= before, name
    row = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert selectors.schedule_next_run_at(row) == sent + timedelta(seconds=300)
    scheduler.close()  # now, not at the interpreter's exit (its database is gone by then)


@pytest.mark.django_db(transaction=True)
def test_one_beat_at_a_time_holds_the_schedules_lock():
    """The lock of ``OneBeat`` (PostgreSQL: a session advisory lock; SQLite: a file lock
    beside the database): a second holder is refused until the first lets go."""
    from backend.schedules.beat import OneBeat

    first, second = OneBeat(), OneBeat()
    try:
        assert first.holds()
        assert not second.holds()
        assert first.holds()  # still its own
        first.release()
        assert second.holds()
        assert not first.holds()
    finally:
        first.release()
        second.release()


def test_an_overdue_crontab_says_the_missed_match_that_beat_fires_at_once(user, monkeypatch):
    """Beat stopped after a firing at 05:40 of "* * * * *"; at 05:42:03 next_run_at said
    05:43, but beat, back at 05:42:04, fired the missed match at once. It now says the
    missed match (a past time, as an overdue interval's), and beat fires it on its tick."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from backend.schedules import selectors

    schedule = make_schedule(user, crontab="* * * * *", timezone="UTC")
    fired = (timezone.now() - timedelta(seconds=150)).replace(second=0, microsecond=0)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=fired)
    row = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    missed = selectors.schedule_next_run_at(row)
    assert missed == fired + timedelta(minutes=1) < timezone.now()

    scheduler = Scheduler(app=celery_app, lazy=True)
    sent = []
    monkeypatch.setattr(
        scheduler, "apply_entry", lambda entry, producer=None: sent.append(entry.name)
    )
    for _ in range(8):  # the sweeps' entries are due at once too: a tick sends one each
        scheduler.tick()
    assert sent.count(services._periodic_task_name(schedule)) == 1
    scheduler.close()


@pytest.mark.parametrize("hours_away", [3, 5, 12])
def test_a_daily_crontab_missed_hours_ago_fires_at_once_when_beat_is_back(
    user, monkeypatch, hours_away
):
    """A crontab of one hour whose firing was missed (beat stopped) more than two hours
    before beat came back was left out of beat's schedule (django-celery-beat reads such a
    crontab only near its hour): it fired about two hours before the next day's match, which
    then fired too. It fires once, at once, as README says."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from backend.schedules import selectors
    from backend.schedules.models import Schedule

    now = timezone.now()
    hour = (now - timedelta(hours=hours_away)).hour
    schedule = make_schedule(user, crontab=f"0 {hour} * * *", timezone="UTC")
    missed = (now - timedelta(hours=hours_away)).replace(minute=0, second=0, microsecond=0)
    day_before = missed - timedelta(days=1)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=day_before)
    Schedule.objects.filter(pk=schedule.pk).update(last_run_at=day_before)
    row = selectors.schedules_visible_to(user).get(pk=schedule.pk)
    assert selectors.schedule_next_run_at(row) == missed  # the API says the missed match

    scheduler = Scheduler(app=celery_app, lazy=True)
    name = services._periodic_task_name(schedule)
    assert name in scheduler.all_as_schedule()
    sent = []
    monkeypatch.setattr(
        scheduler, "apply_entry", lambda entry, producer=None: sent.append(entry.name)
    )
    for _ in range(8):  # the sweeps' entries are due at once too: a tick sends one each
        scheduler.tick()
    assert sent.count(name) == 1
    scheduler.close()


def test_beat_sends_a_firing_with_the_time_it_sent_it(user, monkeypatch):
    """What lets a worker skip a firing overtaken by a later one (a backlog)."""
    from datetime import timedelta

    from django.utils import timezone
    from django.utils.dateparse import parse_datetime
    from django_celery_beat.models import PeriodicTask

    schedule = make_schedule(user, interval_seconds=300)
    due = timezone.now() - timedelta(seconds=301)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=due)
    scheduler = Scheduler(app=celery_app, lazy=True)
    sent = []

    def send(entry, producer=None, advance=True, **kwargs):
        sent.append((entry.name, dict(entry.kwargs)))

    monkeypatch.setattr(scheduler, "apply_async", send)
    before = timezone.now()
    for _ in range(8):
        scheduler.tick()
    name = services._periodic_task_name(schedule)
    (kwargs,) = [kw for sent_name, kw in sent if sent_name == name]
    assert kwargs["schedule_id"] == str(schedule.pk)
    assert before <= parse_datetime(kwargs["sent_at"]) <= timezone.now()
    entry = scheduler.schedule[name]
    assert "sent_at" not in entry.kwargs  # the entry itself is left as it was
    scheduler.close()


@pytest.mark.django_db(transaction=True)
def test_a_frozen_holder_loses_the_lock_to_a_standby(monkeypatch):
    """A holder that stops checking (frozen by SIGSTOP, a stalled VM, cut off from the
    database) kept its session, and the lock, for ever: no firing while the standby waited.
    PostgreSQL ends a lock session silent for IDLE_TIMEOUT; the holder then stands by."""
    from django.db import connection

    from backend.schedules.beat import OneBeat
    from backend.tasks.tests.processes import wait_for

    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL lock (a process holding the SQLite file lock lives)")
    monkeypatch.setattr(OneBeat, "IDLE_TIMEOUT", 1)
    frozen, standby = OneBeat(), OneBeat()
    try:
        assert frozen.holds()
        assert not standby.holds()
        # The holder checks nothing meanwhile; its session ends after a second of silence
        # (a few, on a loaded machine).
        wait_for(standby.holds, timeout=30, interval=0.25, what="the standby to take the lock")
        frozen._checked = 0  # it wakes up: its next check finds it lost the lock
        assert not frozen.holds()
    finally:
        frozen.release()
        standby.release()


@contextmanager
def hung_broker(monkeypatch):
    """A broker that takes connections and never answers (the system accepts them; nothing
    is ever read), named by the app as broker_down names one that refuses them."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    monkeypatch.setattr(celery_app.conf, "broker_url", url)
    monkeypatch.setitem(celery_app.conf, "broker_transport", None)
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    try:
        yield silent
    finally:
        silent.close()


def test_a_sweep_due_while_the_broker_hangs_is_one_bounded_attempt(user, monkeypatch, caplog):
    """Celery's publish retries (four attempts, each a socket timeout) held beat about 5 s
    per due sweep while the broker hung, so the schedules due meanwhile fired late or not
    at all; each failure was an ERROR with two tracebacks. One attempt now, and one line."""
    import logging

    from django_celery_beat.models import IntervalSchedule
    from kombu import Producer

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="a sweep", task="backend.tasks.jobs.expire_overdue_tasks", interval=every
    )
    publish, asked = Producer.publish, []

    def recorded(self, body, **kwargs):
        asked.append(kwargs.get("retry"))
        return publish(self, body, **kwargs)

    monkeypatch.setattr(Producer, "publish", recorded)
    with hung_broker(monkeypatch):
        scheduler = Scheduler(app=celery_app, lazy=True)
        entry = scheduler.all_as_schedule()["a sweep"]
        with caplog.at_level(logging.INFO):
            scheduler.apply_entry(entry, producer=scheduler.producer)
            assert asked == [False]
            # Then, for BROKER_BREAKER_SECONDS, nothing is tried (each try cost a timeout,
            # and a 10 s schedule fired every 12 to 13 s): the sweep waits for its next
            # time, a schedule's firing is recorded by beat at once.
            scheduler.apply_entry(entry, producer=scheduler.producer)
            schedule = make_schedule(user)
            _, firing = entry_of(schedule)
            scheduler.apply_entry(firing, producer=scheduler.producer)
    assert asked == [False]
    lines = [r for r in caplog.records if "a sweep could not be sent" in r.getMessage()]
    assert len(lines) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "retry" not in entry.options  # the entry is left as it was
    [run] = ScheduleRun.objects.filter(schedule=schedule)
    assert run.task is not None and run.task.status == TaskStatus.PENDING


def test_a_firing_due_while_the_broker_hangs_is_recorded_by_beat(user, monkeypatch):
    """A broker that takes the connection and never answers held beat's send for ever:
    beat stood still and every firing due meanwhile was lost. Beat's own producer (its
    connection) now gives up after BROKER_PUBLISH_TIMEOUT, and beat records the firing."""
    import threading

    schedule = make_schedule(user)
    failed = []
    with hung_broker(monkeypatch):
        scheduler, entry = entry_of(schedule)

        def fire():
            try:
                scheduler.apply_entry(entry, producer=scheduler.producer)
            except Exception as exc:  # the test reports it below
                failed.append(exc)

        beat_thread = threading.Thread(target=fire, daemon=True)
        beat_thread.start()
        beat_thread.join(timeout=60)
        assert not beat_thread.is_alive(), "beat's send still waits on the hung broker"
    assert failed == []
    [run] = ScheduleRun.objects.filter(schedule=schedule)
    assert run.task is not None and run.task.status == TaskStatus.PENDING


def test_beat_runs_a_crontab_whose_next_firing_is_never_before_its_last(user):
    """Beat's entries took django-celery-beat's crontab as it is: with the last firing in the
    second pass of the hour the autumn change repeats, the next match came out before it and
    the schedule was due on every tick until the hour ended (911 sends in 9 s)."""
    from datetime import UTC, datetime

    from backend.schedules.beat import Entry

    schedule = make_schedule(user, crontab="*/20 * * * *", timezone="America/New_York")
    periodic_task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    periodic_task.last_run_at = datetime(2026, 11, 1, 6, 4, tzinfo=UTC)  # 01:04 EST
    entry = Entry(periodic_task, app=celery_app)
    entry.schedule.nowfun = lambda: datetime(2026, 11, 1, 6, 5, tzinfo=UTC)
    due, wait = entry.is_due()
    assert not due and wait == 15 * 60  # 01:20 EST


@pytest.mark.parametrize(
    ("crontab", "sent", "recorded", "next_due"),
    [
        # 01:59 EDT sent, recorded 01:00:30 EST (the clocks went back meanwhile): it fired
        # again at 01:59 EST, a daily schedule twice that night.
        ("59 1 * * *", (1, 5, 59), (1, 6, 0, 30), (2, 6, 59)),
        # 01:55 EDT sent, recorded 01:03 EST: 01:05 to 01:55 EST fired, 11 more.
        ("*/5 * * * *", (1, 5, 55), (1, 6, 3), (1, 7, 0)),
        # Another day, beat killed before writing its 10:00 firing (its record says 09:00):
        # the worker's record, 10:00:30, is the firing beat sent at 10:00; 11:00 next.
        ("0 * * * *", (3, 9, 0), (3, 10, 0, 30), (3, 11, 0)),
    ],
    ids=["daily in the repeated hour", "every 5 minutes in it", "beat's record lost"],
)
def test_a_crontab_starts_from_the_firing_beat_sent_not_the_workers_time(
    user, crontab, sent, recorded, next_due
):
    """A firing the worker recorded later than beat's own record: beat's entry took the
    worker's time as its last firing, and in the hour the autumn change repeats (the record
    in its second pass, beat's in its first) that hour's later matches fired again."""
    from datetime import UTC, datetime, timedelta

    from backend.schedules.beat import Entry, _from_recorded_firings

    def at(day, *hour_minute_second):
        return datetime(2026, 11, day, *hour_minute_second, tzinfo=UTC)

    schedule = make_schedule(user, crontab=crontab, timezone="America/New_York")
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=at(*sent))
    Schedule.objects.filter(pk=schedule.pk).update(last_run_at=at(*recorded))
    periodic_task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    entry = Entry(periodic_task, app=celery_app)
    _from_recorded_firings({periodic_task.name: entry})
    due_at = at(*next_due)
    now = at(*recorded)
    while now < due_at:  # beat's ticks from the worker's record on
        entry.schedule.nowfun = lambda now=now: now
        assert not entry.is_due()[0], now
        now += timedelta(seconds=30)
    entry.schedule.nowfun = lambda: due_at
    assert entry.is_due()[0]
    # And the schedule says so.
    assert selectors.schedule_next_run_at(Schedule.objects.get(pk=schedule.pk)) == due_at


def test_beat_leaves_out_an_interval_it_cannot_keep_and_goes_on(user, caplog):
    """An interval of 2,147,483,647 days (the Intervals admin took it) overflowed a timedelta
    and beat died at start, every sweep and schedule with it; one of 999,999,999 days put
    the next firing past the year 9999 (an error every tick); one of a microsecond fired
    non-stop. Each is left out, logged, and the rest keep their times."""
    import logging

    schedule = make_schedule(user)
    for name, every, period in [
        ("overflows", 2147483647, IntervalSchedule.DAYS),
        ("past 9999", 999999999, IntervalSchedule.DAYS),
        ("non-stop", 1, IntervalSchedule.MICROSECONDS),
    ]:
        timing, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.create(
            name=name, task="backend.ops.jobs.fold_task_counts", interval=timing
        )
    # Arguments the admin takes as JSON that are no list (Celery's message takes a list).
    every, _ = IntervalSchedule.objects.get_or_create(every=30, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="args", task="backend.tasks.jobs.dispatch_tasks", interval=every, args="5"
    )
    # A solar timing, made in the admin of an earlier version: beat needs a library for it
    # that the service does not install, and died of it at every start.
    sunset = SolarSchedule.objects.create(event="sunset", latitude=48.85, longitude=2.35)
    PeriodicTask.objects.create(
        name="solar", task="backend.ops.jobs.fold_task_counts", solar=sunset
    )
    with caplog.at_level(logging.ERROR, logger="backend.schedules.beat"):
        entries = Scheduler(app=celery_app, lazy=True).all_as_schedule()
    assert services._periodic_task_name(schedule) in entries
    assert not {"overflows", "past 9999", "non-stop", "args", "solar"} & set(entries)
    logged = " ".join(record.getMessage() for record in caplog.records)
    for name in ("overflows", "past 9999", "non-stop", "args", "solar"):
        assert f"periodic task {name!r} left out" in logged


def test_a_message_that_cannot_be_built_does_not_trip_the_broker_breaker(user):
    """Any error of a send tripped the breaker, one building the message too (arguments that
    are no list): beat then sent none of its sweeps for BROKER_BREAKER_SECONDS after each
    firing of such a periodic task."""
    from django_celery_beat.models import IntervalSchedule

    from backend.tasks import queue

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="a sweep", task="backend.tasks.jobs.expire_overdue_tasks", interval=every
    )
    scheduler = Scheduler(app=celery_app, lazy=True)
    entry = scheduler.all_as_schedule()["a sweep"]
    entry.args = 5  # as a row written past the admin's checks would give
    queue.breaker.reset()
    with pytest.raises(Exception, match="not iterable"):
        scheduler.apply_async(entry, producer=scheduler.producer, advance=False)
    assert not queue.breaker.is_open
