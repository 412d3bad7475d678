"""Beat's scheduler: django-celery-beat's ``DatabaseScheduler`` (the schedules live in the
database and show in the admin), with a schedule's firing made broker-proof.

Beat moves an entry's ``last_run_at`` forward before it sends the firing's message, and
drops the firing when the send fails: a schedule due while the broker was down (even for a
second, at 09:00 on a weekday) lost that firing, with no run recorded (SPEC §7: a refused
firing is recorded, not lost; §9: a broker outage delays work, never loses it). Here, a
firing whose message cannot be sent is made by beat itself, in the database: the run is
recorded and the task created ``pending``, which the dispatcher sends once the broker is
back, as for any task created while it was down. A broker that hangs (accepts the
connection and never answers) counts as down: beat's sends wait at most
BROKER_PUBLISH_TIMEOUT, as the web tier's, where they waited for ever, beat with them, and
every firing due meanwhile was lost.

The message carries an id chosen here, and the firing made here records that id: when a
send reported as failed did reach the broker, the worker's firing and this one are the same
run (``ScheduleRun.message_id`` is unique), never two. The sweeps' messages are left to
beat's own handling: each is sent again at its next interval.

Beat writes a schedule's firing to its row right after sending it (``_write_firings``; the
sweeps' firings every 3 minutes, beat's default): a beat killed in between
(SIGKILL, out of memory, a power loss) forgot it, and fired the schedule again as soon as it
was back, a second task for the same due time. Every firing is recorded in the schedule's
row too (``last_run_at``, by the worker or here): each schedule's entry starts from the
later of the two."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import time
import uuid
from datetime import timedelta

from celery import beat
from celery import schedules as celery_schedules
from celery.utils.time import maybe_make_aware
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone
from django.utils.functional import cached_property
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry
from django_celery_beat.tzcrontab import TzAwareCrontab
from kombu.exceptions import KombuError

from backend.tasks import queue

from . import services, timing
from .models import Schedule

logger = logging.getLogger(__name__)


def _broker_failed(exc: BaseException | None) -> bool:
    """Whether the error of a send (Celery's SchedulingError around it) is the broker's."""
    failures = (KombuError, *queue._connection_errors())
    for _ in range(5):  # the error, and what it was raised from or during
        if exc is None:
            return False
        if isinstance(exc, failures):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _left_out(model, why: str) -> ValueError:
    """The error that leaves a periodic task whose timing beat cannot keep out of the
    schedule (``all_as_schedule`` skips it), logged: beat goes on with the others."""
    logger.error("periodic task %r left out: its timing cannot be kept (%s)", model.name, why)
    return ValueError(why)


class Entry(ModelEntry):
    def __init__(self, model, app=None):
        try:
            super().__init__(model, app)
        except DatabaseError:
            raise
        except Exception as exc:
            # An interval of 2,147,483,647 days (OverflowError), a solar schedule without
            # the ephem library (ImproperlyConfigured), ...: beat died of each at start.
            raise _left_out(model, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(self.args, list | tuple) or not isinstance(self.kwargs, dict):
            # Celery's message takes a list and an object (the admin takes any JSON).
            raise _left_out(model, "its arguments are not a list and an object")
        schedule = getattr(self, "schedule", None)
        if isinstance(schedule, celery_schedules.schedule) and (
            refused := timing.interval_refused(schedule.run_every.total_seconds(), "seconds")
        ):
            # Beat died of one (all its sweeps and schedules with it), or fired it non-stop.
            raise _left_out(model, refused)
        if isinstance(schedule, TzAwareCrontab) and not isinstance(schedule, timing.Crontab):
            # A next firing never at or before the last (the hour repeated in autumn).
            self.schedule = timing.Crontab.of(schedule)

    @classmethod
    def _unpack_fields(cls, *args, **kwargs):
        """The service's maintenance jobs (``CELERY_BEAT_SCHEDULE``), written to their rows
        when beat starts, are turned on there too: one turned off (in the admin of an older
        version, or in the database) stayed off across restarts, and the tasks it dispatched,
        expired or rescued waited for ever."""
        fields = super()._unpack_fields(*args, **kwargs)
        fields.setdefault("enabled", True)
        return fields

    def save(self):
        """Beat writes its record of an entry's last firing to the row (after a firing,
        and before it reads a changed schedule again): those fields alone, in UPDATEs of
        the row, and the later of two starts. django-celery-beat's save wrote back every
        column of the row it had read: an edit committed in between (another timing, a
        pause) was undone, and a delete was undone too, the row inserted again, so a
        deleted schedule's periodic task fired for ever. And a later start an edit gave
        the row (``services.schedule_update``: turned on, another timetable) was put back
        to the firing before, and a crontab match since then fired at once."""
        model = type(self.model)
        rows = model._default_manager.filter(pk=self.model.pk)
        # (``no_changes``, also among them, is no column: it keeps a save from marking the
        # schedules changed, which an UPDATE does not do.)
        columns = {field.name for field in model._meta.concrete_fields}
        others = {
            f: getattr(self.model, f)
            for f in self.save_fields
            if f in columns and f != "last_run_at"
        }
        mine = self.model.last_run_at
        if mine is not None:
            mine = maybe_make_aware(mine)
            not_later = Q(last_run_at__isnull=True) | Q(last_run_at__lte=mine)
            if rows.filter(not_later).update(last_run_at=mine, **others):
                return
        # A later start stays (or the row is gone: nothing is written back).
        started = rows.values_list("last_run_at", flat=True).first()
        if rows.update(**others) and started is not None:
            self.model.last_run_at = self.last_run_at = started


class OneBeat:
    """Only one beat fires the schedules of a database: the one holding its lock. Another
    beat started beside it (a second host, a copy of the service, a restart before the old
    one ended) would fire every schedule a second time, each firing its own task; it waits
    instead, and takes over within ``STANDBY_POLL`` seconds once the holder has stopped.

    PostgreSQL: a session advisory lock, on a connection of the lock's own that lasts as long
    as the beat (the server lets it go when that session ends, a killed beat's too). The
    holder checks its session every ``CHECK_EVERY`` seconds and, when the connection was
    lost (a database restart), takes the lock again or stands by. SQLite (one machine): an
    exclusive ``flock`` on a file beside the database, let go when the process ends."""

    STANDBY_POLL = 5.0
    CHECK_EVERY = 1.0
    IDLE_TIMEOUT = 60  # seconds: see _try_postgresql
    KEY = int.from_bytes(
        hashlib.sha256(b"async-task-manager beat").digest()[:8], "big", signed=True
    )

    def __init__(self):
        self.held = False
        self._session = None
        self._file: int | None = None
        self._checked = 0.0
        self._state = ""

    def holds(self) -> bool:
        """Whether this beat may fire now (taking the lock when it is free)."""
        now = time.monotonic()
        if self.held and now - self._checked < self.CHECK_EVERY:
            return True
        self._checked = now
        was_held = self.held
        try:
            self.held = (
                self._lock_postgresql() if connection.vendor == "postgresql" else self._lock_file()
            )
        except Exception as exc:  # the database is down: fire nothing until it is back
            self._drop_session()
            self.held = False
            self._say(
                "down", "beat's lock cannot be taken (%s): it fires nothing until it can", exc
            )
            return False
        if self.held and not was_held:
            self._say("held", "this beat holds the schedules' lock: it fires them")
        elif not self.held:
            self._say(
                "standby",
                "another beat fires the schedules (it holds their lock): this one stands by, "
                "and takes over once that one stops",
            )
        return self.held

    def _say(self, state: str, message: str, *args) -> None:
        """Each change of state logged once (a database outage is not logged every second)."""
        if state != self._state:
            self._state = state
            (logger.info if state == "held" else logger.warning)(message, *args)

    def _lock_postgresql(self) -> bool:
        try:
            return self._try_postgresql()
        except Exception:
            # The session is gone (a database restart, its idle timeout): once more on a new
            # one, which raises when the database itself is down.
            self._drop_session()
            if self.held:
                self.held = False
                logger.warning("beat lost its lock's database session; it takes the lock again")
            return self._try_postgresql()

    def _try_postgresql(self) -> bool:
        if self._session is None:
            self._session = connection.get_new_connection(connection.get_connection_params())
            self._session.autocommit = True
            # A holder frozen (SIGSTOP, a stalled VM) or cut off from the database keeps its
            # session, and the lock, open for ever: the server ends a session silent this
            # long (the holder checks it at every tick, every few seconds at most), and a
            # standby takes over. PostgreSQL 14 and later; older ones keep the lock.
            with contextlib.suppress(Exception), self._session.cursor() as cursor:
                cursor.execute(f"SET idle_session_timeout = '{int(self.IDLE_TIMEOUT)}s'")
        with self._session.cursor() as cursor:
            if self.held:
                cursor.execute("SELECT 1")  # the lock lasts as long as this session
                return True
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.KEY])
            return bool(cursor.fetchone()[0])

    def _drop_session(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):  # closed already
                self._session.close()
            self._session = None

    def release(self) -> None:
        """Let the lock go (a beat closing): another beat takes over at its next look. On
        PostgreSQL it is unlocked before the session closes: the server ends a closed
        session when it gets round to it, and until then another beat was still refused."""
        if self._session is not None and self.held:
            with contextlib.suppress(Exception), self._session.cursor() as cursor:  # gone
                cursor.execute("SELECT pg_advisory_unlock(%s)", [self.KEY])
        self._drop_session()
        if self._file is not None:
            os.close(self._file)  # its flock goes with it
            self._file = None
        self.held = False
        self._state = ""

    def _lock_file(self) -> bool:
        if self.held:
            return True
        name = str(connection.settings_dict["NAME"])
        if self._file is None:
            if name == ":memory:" or name.startswith("file:"):
                return True  # a database of this process alone
            self._file = os.open(f"{name}.beat-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _end_beat(signum, frame):
    """SIGTERM or SIGINT: beat's loop ends here, and its end writes the schedule and lets
    the lock go (``Service.start``'s ``finally``), once the interrupted query has been
    cancelled (psycopg does so on ``SystemExit``)."""
    raise SystemExit()


def _ending_without_writes_in_the_handler() -> None:
    """Celery's handler of these signals writes the schedule inside the handler: a signal
    that came during a query of beat's (every tick makes some) wrote on the same
    connection, and waited for ever on the lock the interrupted query holds; beat never
    stopped on SIGTERM. Only Celery's own handler is replaced (not one of a test run's)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(signum)
        if getattr(handler, "__qualname__", "").startswith("Beat.install_sync_handler."):
            signal.signal(signum, _end_beat)


class Scheduler(DatabaseScheduler):
    Entry = Entry

    def __init__(self, *args, **kwargs):
        _ending_without_writes_in_the_handler()  # installed just before beat makes this
        self.one_beat = OneBeat()
        super().__init__(*args, **kwargs)

    def close(self):
        try:
            super().close()
        finally:
            self.one_beat.release()

    @cached_property
    def connection(self):
        """Beat's broker connection, every send bounded as the web tier's (one attempt, a
        socket timeout): Celery's own waited for ever on a hung broker."""
        return self.app.connection_for_write(
            connect_timeout=settings.BROKER_PUBLISH_TIMEOUT,
            transport_options=settings.BROKER_PUBLISH_TRANSPORT_OPTIONS,
        )

    @cached_property
    def producer(self):
        """Connected by its first send (and again after a failed one: ``_reconnect``),
        bounded as every send: Celery's connected first, retrying for minutes while the
        broker was down or hung, and no firing was sent or recorded meanwhile."""
        return self.Producer(self.connection, auto_declare=False)

    def _reconnect(self) -> None:
        """After a failed send the next one opens a new connection and producer. Those of
        the first send were kept: once the broker had dropped them (a restart, its
        connections closed), every later send failed on them, and the dispatcher, expiry
        and rescue sweeps went out no more until beat was restarted."""
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):  # dead already: nothing to close politely
                connection.collect()

    def tick(self, *args, **kwargs):
        """Fires what is due only while this beat holds the schedules' lock (``OneBeat``).
        A beat that takes the lock over reads every entry again, as the beat before it
        recorded them (their firings are written as they are sent)."""
        was_held = self.one_beat.held
        if not self.one_beat.holds():
            return min(self.one_beat.STANDBY_POLL, self.max_interval)
        if not was_held:
            self._initial_read = True  # read again from the database on the next look
            self._heap = None
        return super().tick(*args, **kwargs)

    def reserve(self, entry):
        """django-celery-beat moves the fired entry's model on but leaves the entry in its
        schedule with its old last run: when the schedule was read again twice in one tick
        (a burst of schedule changes), the heap was rebuilt from it on the next tick and the
        schedule fired again at once, a second task for the same due time."""
        new_entry = super().reserve(entry)
        current = (self._schedule or {}).get(new_entry.name)
        if current is not None:
            current.last_run_at = current.model.last_run_at = new_entry.last_run_at
        return new_entry

    def enabled_models_qs(self):
        """Every enabled schedule. django-celery-beat leaves out a crontab of one hour
        (``0 9 * * *``) unless that hour is within two of the present one, to read fewer
        rows: a firing missed while beat was stopped longer than that was not made when it
        came back (as README says: once, at once), but about two hours before the next
        day's, which then came too. (Clocked tasks, which it also leaves out until due, are
        not used here.)"""
        return self.Model.objects.enabled()

    def all_as_schedule(self):
        entries = super().all_as_schedule()
        try:
            _from_recorded_firings(entries)
        except DatabaseError as exc:  # beat must go on ticking; its own record stands
            logger.warning("schedules' recorded firings not read (%s)", exc)
        return entries

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        """Every send of beat's is one attempt, bounded by BROKER_PUBLISH_TIMEOUT: Celery's
        publish retries held beat about 5 s per due sweep while the broker hung, and the
        schedules due meanwhile fired late or not at all. After a failed send none is tried
        for BROKER_BREAKER_SECONDS (the breaker the web tier's sends share in a process):
        each still cost a timeout, so a 10 s schedule fired every 12 to 13 s."""
        if queue.breaker.is_open:
            raise ConnectionError("a send to the broker failed moments ago; not tried again yet")
        if advance:
            entry = self.reserve(entry)
        options = entry.options
        entry.options = {**options, "retry": False}
        try:
            return super().apply_async(entry, producer=producer, advance=False, **kwargs)
        except Exception as exc:
            # The broker's failing, not a message that cannot be built (a periodic task's
            # arguments that are no list): that tripped the breaker, and none of beat's
            # sweeps went for BROKER_BREAKER_SECONDS after each of its firings.
            if _broker_failed(exc):
                queue.breaker.trip()
                self._reconnect()
            raise
        finally:
            entry.options = options

    def apply_entry(self, entry, producer=None):
        if entry.task != services.FIRE_TASK:
            # A sweep not sent is sent again when next due (seconds or minutes later): one
            # line, not Celery's ERROR with two tracebacks per sweep while the broker is away.
            beat.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
            try:
                self.apply_async(entry, producer=producer, advance=False)
            except Exception as exc:
                logger.warning(
                    "%s could not be sent (%s); it goes at its next time", entry.name, exc
                )
            return None
        beat.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)  # as beat does
        message_id = str(uuid.uuid4())
        options, kwargs = entry.options, entry.kwargs
        entry.options = {**options, "task_id": message_id}
        # When it was sent: a message overtaken by a later firing (a backlog) is skipped.
        entry.kwargs = {**kwargs, "sent_at": timezone.now().isoformat()}
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            logger.warning(
                "schedule firing %s could not be sent (%s); beat records it itself",
                entry.name,
                exc,
            )
            entry.kwargs = kwargs
            self._fire_here(entry, message_id)
        finally:
            entry.options, entry.kwargs = options, kwargs
        self._write_firings()
        return None

    def _write_firings(self) -> None:
        """A schedule's firing goes to its row at once (the sweeps' wait for beat's sync,
        every 3 minutes): its next_run_at counts from it, and a firing beat made late
        (caught up after a restart) moved its timetable, which the row said nothing of."""
        try:
            self._do_sync()
        except DatabaseError as exc:  # beat must go on ticking; its own record stands
            logger.warning("schedule firings not written (%s)", exc)

    @staticmethod
    def _fire_here(entry, message_id: str) -> None:
        try:
            schedule_id = entry.kwargs["schedule_id"]  # as services._sync_periodic_task sets
            services.schedule_fire(schedule_id=schedule_id, message_id=message_id)
        except Exception:  # the database is down too: beat must go on ticking
            logger.exception("schedule firing %s could not be recorded: it is lost", entry.name)


def _from_recorded_firings(entries: dict) -> None:
    """Each schedule's entry starts from its last recorded firing when that is later than
    beat's own record of it (one query for all).

    The recorded time is the worker's, some time after beat sent the message (longer when
    the maintenance queue was backed up). An entry starts from beat's own record moved on
    by its firings up to it: the time beat sent that firing, so an interval's timetable
    does not shift by the worker's delay, and a crontab's next match is not one beat made
    already (a firing in the first pass of the repeated autumn hour, recorded in its second
    pass, fired that hour's later matches again)."""
    firing = {}
    for entry in entries.values():
        if entry.task != services.FIRE_TASK or not isinstance(entry.kwargs, dict):
            continue
        try:
            firing[uuid.UUID(str(entry.kwargs.get("schedule_id")))] = entry
        except ValueError:
            continue
    recorded = Schedule.objects.filter(pk__in=list(firing), last_run_at__isnull=False)
    for schedule_id, last in recorded.values_list("pk", "last_run_at"):
        entry = firing[schedule_id]
        known = maybe_make_aware(entry.last_run_at) if entry.last_run_at else None
        if known is not None and known >= last:
            continue
        every = getattr(entry.schedule, "run_every", None)  # an interval's
        if known is not None and isinstance(every, timedelta):
            last = timing.interval_steps_up_to(every, known, last)
        elif known is not None and isinstance(entry.schedule, timing.Crontab):
            last = timing.crontab_steps_up_to(entry.schedule, known, last)
        if known is not None and last <= known:
            continue  # beat's own record is that firing already
        entry.last_run_at = entry.model.last_run_at = last
