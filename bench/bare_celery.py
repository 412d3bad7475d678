"""A bare Celery app with a no-op task: the yardstick for the production bench's drain.

Nothing here touches Django or a database: what a worker spends per message is Celery's own
cost. ``bench/production.py`` passes the product's worker settings in
``BARE_CELERY_SETTINGS`` (JSON, Celery's lower-case names: acks late, prefetch multiplier,
serializer, broker transport options, ...) and starts the worker with the same flags as the
product's, so the two drains differ only in what a task does.

Usage (the broker from ``CELERY_BROKER_URL``)::

    python bench/bare_celery.py publish 2000
    PYTHONPATH=bench celery -A bare_celery worker -Q bare --concurrency=2
"""

from __future__ import annotations

import json
import os
import sys

from celery import Celery

QUEUE = "bare"

app = Celery("bare", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/2"))
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True, result_backend=None)
app.conf.update(json.loads(os.environ.get("BARE_CELERY_SETTINGS") or "{}"))


@app.task(name="bare.noop", ignore_result=True)
def noop() -> None:
    """Does nothing."""


def publish(count: int) -> None:
    """Send ``count`` no-op messages through one pooled producer."""
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            noop.apply_async(producer=producer, queue=QUEUE)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "publish" or not sys.argv[2].isdigit():
        sys.exit("usage: bare_celery.py publish COUNT")
    publish(int(sys.argv[2]))
