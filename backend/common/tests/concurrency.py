"""Running one action in many threads at once, each on its own database connection, as
simultaneous requests or commands would."""

import threading
from collections.abc import Callable

from django.db import connections


def at_once(action, count: int, timeout: float = 120) -> list:
    """``action(i)`` for i in range(count), in threads released together; what each one
    returned, or the exception it raised, in the order of i. Each thread closes its own
    database connections when done."""
    barrier = threading.Barrier(count)
    outcomes: list = [None] * count

    def run(i):
        try:
            barrier.wait()
            outcomes[i] = action(i)
        except Exception as exc:
            outcomes[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return outcomes


def wait_until_a_session_waits_on_a_lock(
    timeout: float = 30, *, unless: Callable[[], bool] = lambda: False
) -> bool:
    """Once a session of this test's PostgreSQL database waits on a lock (a row or table
    another transaction holds): ``True``. ``False`` as soon as ``unless()`` is true instead
    (the other thread ended without waiting). Fails after ``timeout`` seconds. Read on a
    connection of its own: the test's transaction would keep its first snapshot of
    ``pg_stat_activity``."""
    import psycopg

    from backend.tasks.tests.processes import test_database_url, wait_for

    with psycopg.connect(test_database_url(), autocommit=True) as watcher:

        def waiting() -> bool:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            return row[0] > 0

        outcome = wait_for(
            lambda: ("waits" if waiting() else None) or ("ended" if unless() else None),
            timeout=timeout,
            interval=0.02,
            what="a session to wait on a lock",
        )
    return outcome == "waits"
