"""Writing what happened outside the database (a run's outcome, a delivery's) while the
database restarts: written again, on a new connection, rather than lost. Lost, the work
would be done again by whoever takes it over (a rescued run, a notification sent anew):
a mail or a call twice."""

from __future__ import annotations

import contextlib
import logging
import time

from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)

# Pauses before each new try: a minute in all (TASK_HEARTBEAT_TIMEOUT's default).
RECORD_PAUSES = (1, 2, 4, 8, 15, 15, 15)
# Seconds a run's hard time limit comes after its soft one (backend/tasks/queue.py): room to
# write its outcome through a database restart, every pause above and each try's own time.
# With 5 s, a run that finished as the database went away for half a minute was killed
# while it waited to write, and run again.
RECORD_BUDGET = sum(RECORD_PAUSES) + 10


def recorded(write, pauses: tuple[float, ...] = RECORD_PAUSES):
    """``write()``, tried again after each of ``pauses`` while the database is failing, on
    a new connection each time; the last failure is raised. A time limit that fires (Celery's
    soft one) does not end the tries: the time was the work's, and the hard limit leaves
    RECORD_BUDGET for its outcome. Fired during a write (a database that hangs), it leaves
    that connection in the middle of a statement: the next try is on a new one."""
    for pause in (*pauses, None):
        try:
            return write()
        except SoftTimeLimitExceeded:
            connection.close()
            if pause is None:
                raise
            logger.warning(
                "outcome not recorded (the time limit came as it was written); "
                "trying again in %g s",
                pause,
            )
        except DATABASE_ERRORS as exc:
            if pause is None:
                raise
            logger.warning("outcome not recorded (%s); trying again in %g s", exc, pause)
            connection.close()
        # The time may be up while it waits to write what it has: it goes on writing.
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(pause)
    return None
