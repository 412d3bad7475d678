"""Logging filters used by ``LOGGING`` (backend/settings.py)."""

import functools
import logging


class No4xxTraceback(logging.Filter):
    """Drops the exception from a record of a request answered with a 4xx (Django logs a
    ``PermissionDenied`` or a ``SuspiciousOperation`` with its traceback): the record's own
    line says what happened. A 5xx, and any record that is not about a response, keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True


# Celery's INFO records of a task sent by beat, received and done (celery.beat,
# celery.worker.strategy, celery.app.trace).
_SWEEP_LOGGERS = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}


class QuietSweeps(logging.Filter):
    """Leaves out Celery's INFO lines about the maintenance sweeps (``CELERY_BEAT_SCHEDULE``:
    the dispatch every 5 seconds, the expiry, the rescue, the purges) when they did nothing:
    beat's "Sending due task", the worker's "received", and its "succeeded" whose result
    counts nothing (every number 0). Three lines every few seconds buried what a newcomer
    looks for under ``make run`` (a request, a console mail). A sweep that did something is
    logged as before, with its counts; a sweep that failed too. With LOG_LEVEL=DEBUG every
    line is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in _SWEEP_LOGGERS:
            return True
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        args = record.args
        if record.name == "celery.beat":
            task = args[1] if isinstance(args, tuple) and len(args) == 2 else None
            sending = str(record.msg).startswith("Scheduler: Sending due task")
            return not (sending and _sweep(task))
        if not isinstance(args, dict) or not _sweep(args.get("name")):
            return True
        if record.name == "celery.worker.strategy":
            from celery.app.trace import LOG_RECEIVED  # (the worker's process has Celery)

            return record.msg != LOG_RECEIVED
        # Done: kept when it counts something (another INFO line of the task too).
        return "return_value" not in args or not _counts_nothing(args["return_value"])


def _sweep(task_name) -> bool:
    return task_name in _sweeps()


@functools.cache
def _sweeps() -> frozenset[str]:
    """The beat-scheduled tasks' names, read once (a worker logs two lines a task)."""
    from django.conf import settings

    return frozenset(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())


def _counts_nothing(text) -> bool:
    """The sweep's result, as Celery logs it (its repr), holds no number but 0."""
    import ast

    try:
        value = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False

    def nothing(item) -> bool:
        if item is None or isinstance(item, bool):
            return not item
        if isinstance(item, int | float):
            return item == 0
        if isinstance(item, dict):
            return all(nothing(v) for v in item.values())
        if isinstance(item, list | tuple):
            return all(nothing(v) for v in item)
        return False

    return nothing(value)
