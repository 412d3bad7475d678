"""Runs one task on a worker: claim, call the type's handler, record the outcome.

A handler's error fails the task, except an error its type declares transient
(``TaskType.transient_errors``) or the database failing the handler's own query: while
attempts remain, the task goes back to ``scheduled`` with a later ``run_at`` (exponential
backoff with jitter) and the dispatcher releases it when that time comes."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import uuid

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    DatabaseError,
    close_old_connections,
    connection,
)
from django.utils import timezone

from backend.common import recording
from backend.common.recording import DATABASE_ERRORS, recorded
from backend.common.storable import made_storable

from . import outcomes, services, types
from .models import Task, TaskStatus

logger = logging.getLogger(__name__)


def retry_delay(attempt: int) -> int:
    """Seconds before the next run after ``attempt`` runs: doubling from TASK_RETRY_BACKOFF,
    capped at TASK_RETRY_MAX_DELAY, each drawn between half and all of that ("equal
    jitter"), so retries of many tasks spread out and each delay is at least the last."""
    attempt = max(1, attempt)
    ceiling = min(settings.TASK_RETRY_MAX_DELAY, settings.TASK_RETRY_BACKOFF * 2 ** (attempt - 1))
    return max(1, round(random.uniform(ceiling / 2, ceiling)))


SKIPPED = "skipped: not pending (already taken, cancelled, expired or deleted)"
BATCHED = "ran; outcome batched"  # written with others shortly (outcomes.py)


def execute(task_id: str, task_type: str = "", input_data: dict | None = None) -> str:
    """Returns what happened, for the worker's log: claimed-and-done or why not.

    ``task_type`` is what the run message says of the task (older messages say nothing),
    and ``input_data`` its input, which the message of an instant type carries when it is
    small (``queue.INLINE_INPUT_BYTES``). An instant one given its input runs from it and
    records its outcome in one statement (PostgreSQL: ``task_finish_unread``); otherwise a
    task of an instant type, or of a type not said, is read first; an instant one runs from
    that read and is left pending until its outcome (``TaskType.instant``), any other is
    claimed."""
    named = types.find(task_type)
    unread = named is not None and named.instant and input_data is not None
    if unread and services.unread_runs():
        return _run_unread(task_id, named, input_data)
    if named is None or named.instant:
        task = services.task_read(task_id=task_id)
        if task is None:
            return SKIPPED
        kind = types.find(task.task_type)
        if kind is not None and kind.instant:
            return _run(task, kind, lambda percent: True)  # nothing to report, no heartbeat
    task = services.task_claim(task_id=task_id)
    if task is None:
        return SKIPPED
    with _beating(task):
        return _run(task, types.find(task.task_type), _heartbeat(task))


@contextlib.contextmanager
def _beating(task):
    """While a claimed run goes on, a thread of its process records a heartbeat every third
    of TASK_HEARTBEAT_TIMEOUT, so a handler waiting on the outside world (a slow mail
    server: up to 12 x EMAIL_TIMEOUT) or a run waiting to write its outcome is not taken for
    a lost one: the rescue re-ran such a run while it still went on (a mail sent five
    times). A killed or frozen process beats no more, and its run is rescued as before."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(max(1.0, settings.TASK_HEARTBEAT_TIMEOUT / 3)):
                try:
                    if not services.task_heartbeat(task=task):
                        return  # cancelled, expired or rescued: the run finds out itself
                except DATABASE_ERRORS as exc:
                    logger.warning("task %s: heartbeat not recorded (%s)", task.pk, exc)
                    connection.close()  # the next one connects again
        finally:
            connection.close()  # this thread's own

    beating = threading.Thread(target=beat, name=f"heartbeat {task.pk}", daemon=True)
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join(timeout=10)


def _heartbeat(task):
    """The run's progress report. One the database fails (a restart, a failover) is a
    missed heartbeat, not the run's end: the broken connection is dropped and the run goes
    on; the next report connects again. (A run silent past TASK_HEARTBEAT_TIMEOUT is
    rescued.)"""

    def report(percent: int) -> bool:
        try:
            return services.task_report_progress(task=task, progress=percent)
        except DATABASE_ERRORS as exc:
            logger.warning("task %s: progress not recorded (%s); going on", task.pk, exc)
            connection.close()
            return True

    return report


# A run's outcome the database fails to take is written again after these pauses (a minute
# in all, TASK_HEARTBEAT_TIMEOUT's default) before the run gives up (its message is then
# asked again, see jobs.run_task, and a run left running is rescued). Meanwhile the run's
# heartbeat goes on (_beating), so a database back within the minute takes the outcome, and
# a finished run is not run again because the database was away longer than 15 s (which a
# mail or a call would do twice). The run's time limit may come first: see recorded.
RECORD_PAUSES = recording.RECORD_PAUSES


class _Unrecorded(Exception):
    """The outcome could not be written: the database is unavailable."""


def _recorded(write):
    """``write()`` (the outcome's guarded statement), tried again while the database is
    failing (``backend.common.recording``)."""
    return recorded(write, RECORD_PAUSES)


def _run_unread(task_id: str, kind: types.TaskType, input_data: dict) -> str:
    """A run of an instant type from the input its message carries: the handler, then one
    guarded statement from pending, which also finds out whether the task was still to run
    (cancelled, expired, done or deleted meanwhile: the result is dropped). The handler
    gets no owner (``owner_id`` None): an instant type computes over its input alone."""
    try:
        task_id = uuid.UUID(str(task_id))
    except ValueError:
        return SKIPPED
    ran = {"task_id": task_id, "task_type": kind.name, "started_at": timezone.now()}
    try:
        result = made_storable(
            kind.handler(input_data, types.JobContext(lambda percent: True, task_id=task_id))
        )
        json.dumps(result, allow_nan=False)
    except SoftTimeLimitExceeded:
        if services.task_fail_unread(**ran, error="time limit exceeded"):
            return "failed: time limit exceeded"
        return SKIPPED
    except Exception as exc:  # a handler's (or its result's) error fails the task
        error = f"{type(exc).__name__}: {exc}"
        _log_failure(task_id, kind.name, kind, exc, error)
        if services.task_fail_unread(**ran, error=error):
            return "failed"
        return SKIPPED
    outcome = {
        "id": task_id,
        "task_type": kind.name,
        "started_at": ran["started_at"],
        "completed_at": timezone.now(),
        "result": result,
    }
    if outcomes.batched(outcome):
        return BATCHED
    if services.task_finish_unread(**ran, result=result):
        return "completed"
    return SKIPPED


def write_outcomes(batch: list[dict]) -> None:
    """Writes the completed outcomes a pool process gathered (``outcomes.Batches``), tried
    again while the database fails as a run's own outcome is.

    The batch is one statement, so one row the database refuses (an error of the data, not
    of the connection) would refuse them all, and their tasks would run again with it, in
    the next batch as well. Then each is written alone: the others complete, and one the
    database still refuses fails its task with why, instead of running it again."""
    close_old_connections()  # the thread's own, checked before each batch as before a task
    try:
        _recorded(lambda: services.tasks_finish_unread(batch))
    except DATABASE_ERRORS as exc:
        _unrecorded(len(batch), exc)
    except DatabaseError as exc:
        logger.warning("%d outcomes refused together (%s); writing each alone", len(batch), exc)
        for done, outcome in enumerate(batch):
            try:
                _write_alone(outcome)
            except DATABASE_ERRORS as exc:
                _unrecorded(len(batch) - done, exc)
                return


def _write_alone(outcome: dict) -> None:
    """One outcome of a refused batch (``write_outcomes``): its task completes, or, when
    the database refuses this row too, fails with the reason; when even that is refused,
    the task stays pending (logged), and the dispatcher sends it again."""
    try:
        services.tasks_finish_unread([outcome])
        return
    except DATABASE_ERRORS:
        raise
    except DatabaseError as exc:
        error = f"the result could not be stored ({type(exc).__name__}: {exc})"
    logger.error("task %s (%s): %s", outcome["id"], outcome["task_type"], error)
    try:
        services.task_fail_unread(
            task_id=outcome["id"],
            task_type=outcome["task_type"],
            started_at=outcome["started_at"],
            error=error,
        )
    except DATABASE_ERRORS:
        raise
    except DatabaseError:
        logger.exception("task %s: its failure could not be recorded either", outcome["id"])


def _unrecorded(count: int, exc: Exception) -> None:
    logger.warning(
        "%d outcomes not recorded (%s); the dispatcher sends their tasks again", count, exc
    )
    connection.close()


def _log_failure(task_id, type_name: str, kind: types.TaskType | None, exc, error: str) -> None:
    """A failed run, in the worker's log: an error its type raises on purpose
    (``TaskType.expected_errors``) as one WARNING line with the task's error, any other (a
    bug) at ERROR with its traceback."""
    if kind is not None and isinstance(exc, kind.expected_errors):
        logger.warning("task %s (%s) failed: %s", task_id, type_name, error)
    else:
        logger.error("task %s (%s) failed", task_id, type_name, exc_info=exc)


def _passing(kind: types.TaskType) -> tuple[type[BaseException], ...]:
    """The errors after which a run is tried again later: those its type declares
    transient, and, for a claimed run, the database failing the handler's own query (a
    restart, a failover: a report's read). An instant type's handler queries nothing."""
    if kind.instant:
        return kind.transient_errors
    return (*kind.transient_errors, *DATABASE_ERRORS)


def _run(task, kind: types.TaskType | None, report) -> str:
    """Runs the claimed (or, for an instant type, read) task; records its outcome. What the
    run made for a result that was not recorded (a report's file, its task cancelled or
    past its deadline meanwhile, or the run failed after) is undone (``JobContext.made``)."""
    made: list = []
    said = _run_made(task, kind, report, made)
    if made and said != "completed" and not _completed_by_this_run(task):
        for undo in made:
            try:
                undo()
            except Exception:
                logger.exception("task %s: what a run made could not be undone", task.pk)
    return said


def _completed_by_this_run(task) -> bool:
    """Whether the task was completed by this run after all: an outcome committed whose
    answer the connection lost is written again, finds the task completed, and says
    "discarded" (what the run made is then the task's result)."""
    return Task.objects.filter(
        pk=task.pk, status=TaskStatus.COMPLETED, attempts=task.attempts
    ).exists()


def _run_made(task, kind: types.TaskType | None, report, made: list) -> str:
    task_id = task.pk
    try:
        if kind is None:
            raise RuntimeError(f"task type {task.task_type!r} is not known to this worker")
        if kind.handler is None:
            raise RuntimeError(f"task type {task.task_type!r} is not run by workers")
        claimed = task.status == TaskStatus.RUNNING  # an instant type's run only read it
        context = types.JobContext(
            report,
            task_id=task.pk,
            owner_id=task.owner_id,
            attempt=task.attempts if claimed else None,
            alive=(lambda: services.task_still_running(task=task)) if claimed else None,
            made=made.append,
        )
        # Whatever the handler returned must be storable JSON: a NUL or a lone surrogate
        # from the outside world (a server's answer, a file's header) becomes U+FFFD; NaN or
        # a value JSON cannot hold fails the task here, before writing.
        result = made_storable(kind.handler(task.input_data, context))
        json.dumps(result, allow_nan=False)
        try:
            finished = _recorded(lambda: services.task_finish(task=task, result=result))
        except DATABASE_ERRORS as exc:
            raise _Unrecorded from exc
    except _Unrecorded as unrecorded:
        # The database stayed unavailable: not the handler's failure (the run is rescued).
        raise unrecorded.__cause__ from None
    except types.TaskInterrupted:
        if services.task_expire_if_overdue(task_id=task_id):
            return "failed: deadline exceeded"
        return "stopped: the task is no longer running (cancelled, expired or rescued)"
    except SoftTimeLimitExceeded:
        _recorded(lambda: services.task_fail(task=task, error="time limit exceeded"))
        return "failed: time limit exceeded"
    except Exception as exc:  # a handler's (or its result's) error fails the task, never the worker
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, DATABASE_ERRORS):
            connection.close()  # the outcome is written on a new connection
        if kind is not None and isinstance(exc, _passing(kind)):
            if task.attempts < task.max_attempts:
                # Counted from the last manual retry, which grants a fresh set of attempts
                # (max_attempts moves on): its backoff starts again from TASK_RETRY_BACKOFF.
                delay = retry_delay(task.attempts - task.max_attempts + kind.max_attempts)
                level = logging.WARNING if isinstance(exc, DATABASE_ERRORS) else logging.INFO
                logger.log(level, "task %s: %s; trying again in %d s", task_id, error, delay)
                if _recorded(
                    lambda: services.task_retry_later(task=task, error=error, delay=delay)
                ):
                    return f"retrying in {delay} s"
                return "discarded: the task stopped running before its retry was recorded"
            # Those since the last manual retry (which moved max_attempts on by the type's).
            spent = task.attempts - max(0, task.max_attempts - kind.max_attempts)
            if spent == task.attempts:
                error = f"{error} (gave up after {spent} attempts)"
            else:
                error = f"{error} (gave up after {spent} attempts, {task.attempts} in all)"
            logger.warning("task %s (%s) failed: %s", task_id, task.task_type, error)
        else:
            _log_failure(task_id, task.task_type, kind, exc, error)
        _recorded(lambda: services.task_fail(task=task, error=error))
        return "failed"
    if finished:
        return "completed"
    if services.task_expire_if_overdue(task_id=task_id):
        return "failed: deadline exceeded (the result came after it)"
    return "discarded: the task stopped running before its result was recorded"
