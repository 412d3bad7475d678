"""Writing what happened outside the database (a run's outcome, a delivery's) while the
database restarts: written again, on a new connection, rather than lost. Lost, the work
would be done again by whoever takes it over (a rescued run, a notification sent anew):
a mail or a call twice."""

from __future__ import annotations

import logging
import time

from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)

# Pauses before each new try: a minute in all (TASK_HEARTBEAT_TIMEOUT's default).
RECORD_PAUSES = (1, 2, 4, 8, 15, 15, 15)


def recorded(write, pauses: tuple[float, ...] = RECORD_PAUSES):
    """``write()``, tried again after each of ``pauses`` while the database is failing, on
    a new connection each time; the last failure is raised. A time limit that fires while
    it waits (Celery's soft one) gets one last try at once."""
    for pause in (*pauses, None):
        try:
            return write()
        except DATABASE_ERRORS as exc:
            if pause is None:
                raise
            logger.warning("outcome not recorded (%s); trying again in %g s", exc, pause)
            connection.close()
            try:
                time.sleep(pause)
            except SoftTimeLimitExceeded:
                # The time is up while it waits to write what it has: one last try now
                # (the hard limit is a few seconds away), not "time limit exceeded".
                return write()
    return None
