"""Running one action in many threads at once, each on its own database connection, as
simultaneous requests or commands would."""

import threading

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
