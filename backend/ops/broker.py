"""What only the broker knows: how many messages wait in each queue, and which workers are
online. Each read has its own thread and deadline (``OPS_BROKER_TIMEOUT``, at most about a
second), so a broker that hangs costs a request that long at most, and the answers are kept
for a few seconds in this process, so a page view never waits on the broker twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from backend.celery import app as celery_app

logger = logging.getLogger(__name__)

_cache: dict[str, tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def reset_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _cached(
    key: str, seconds: float, compute: Callable[[], Any], accept: Callable[[Any], bool] | None
) -> Any:
    """``compute()``'s value, kept ``seconds``; a kept value ``accept`` refuses is read anew."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < seconds and (accept is None or accept(hit[1])):
        return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (time.monotonic(), value)
    return value


# The read of each kind still under way past its deadline, by its name, and when it began.
_late: dict[str, tuple[threading.Thread, float]] = {}
# A read still under way this long is given up on: another is started (a connection that
# died without a word may never end its read).
LATE_READ_LIMIT = 60.0


def _bounded(work: Callable[[], Any], timeout: float, what: str) -> Any:
    """``work()`` in a daemon thread; ``None`` when it fails or is still running at the
    deadline. A read of a kind still running past its deadline is not started again until
    it ends (``None`` meanwhile): Celery's broadcast to the workers publishes through the
    app's own connections, which wait, unbounded, on RabbitMQ blocking publishers (a memory
    or disk alarm), so each /health/ started a read that never ended, three threads and two
    connections more every time. One still running after ``LATE_READ_LIMIT`` is given up
    on."""
    late, began = _late.get(what, (None, 0.0))
    if late is not None and late.is_alive() and time.monotonic() - began < LATE_READ_LIMIT:
        logger.warning("%s: the last read is still waiting on the broker", what)
        return None
    outcome: dict[str, Any] = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as exc:
            logger.warning("%s failed: %s: %s", what, exc.__class__.__name__, exc)

    thread = threading.Thread(target=run, daemon=True, name=f"ops-{what}")
    began = time.monotonic()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("%s timed out after %g s", what, timeout)
        _late[what] = (thread, began)
    return outcome.get("value")


def _in_daemon_threads(*works: Callable[[], Any]) -> list[Any]:
    """Each of ``works`` in a daemon thread of its own, at once; their values (or their
    exception raised), once all have ended. A pool's threads are not daemons: a command
    waited at exit for one stuck on the broker (``task_stats`` never ended)."""
    outcomes: list[Any] = [None] * len(works)

    def run(index, work):
        try:
            outcomes[index] = (True, work())
        except BaseException as exc:
            outcomes[index] = (False, exc)

    threads = [
        threading.Thread(target=run, args=(i, work), daemon=True, name="ops-broker-read")
        for i, work in enumerate(works)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = []
    for ok, value in outcomes:
        if not ok:
            raise value
        values.append(value)
    return values


def _connection():
    return celery_app.connection_for_write(
        connect_timeout=settings.OPS_BROKER_TIMEOUT,
        transport_options=settings.BROKER_PUBLISH_TRANSPORT_OPTIONS,
    )


# --- queue depth ----------------------------------------------------------------------


def _filesystem_depths(queues: tuple[str, ...]) -> dict[str, int]:
    """The embedded broker keeps one file per waiting message, ``<...>.<queue>.msg``."""
    depths = dict.fromkeys(queues, 0)
    suffixes = {f".{name}.msg": name for name in queues}
    with os.scandir(settings.BROKER_FOLDER / "data") as entries:
        for entry in entries:
            queue = suffixes.get("." + entry.name.split(".", 1)[-1])
            if queue is not None:
                depths[queue] += 1
    return depths


def _redis_depths(channel, queues: tuple[str, ...]) -> dict[str, int]:
    """One list per queue and priority step (``queue``, then ``queue<sep><step>``), read
    with one pipelined LLEN each."""
    steps = list(channel.priority_steps)
    keys = [
        (name, name if step == 0 else f"{name}{channel.sep}{step}")
        for name in queues
        for step in steps
    ]
    with channel.conn_or_acquire() as client, client.pipeline() as pipe:
        for _, key in keys:
            pipe.llen(key)
        sizes = pipe.execute()
    depths = dict.fromkeys(queues, 0)
    for (name, _), size in zip(keys, sizes, strict=True):
        depths[name] += int(size or 0)
    return depths


def _amqp_depths(conn, queues: tuple[str, ...]) -> dict[str, int]:
    """A passive declare reports the count; a queue not declared yet holds nothing (the
    failed declare closes its channel, so each queue gets a channel of its own)."""
    depths = {}
    for name in queues:
        channel = conn.channel()
        try:
            depths[name] = channel.queue_declare(queue=name, passive=True).message_count
        except conn.channel_errors:
            depths[name] = 0
        finally:
            channel.close() if channel.is_open else None
    return depths


def read_queue_depths() -> dict[str, int]:
    queues = tuple(settings.TASK_QUEUES)
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return _filesystem_depths(queues)
    with _connection() as conn:
        conn.ensure_connection(max_retries=0, timeout=settings.OPS_BROKER_TIMEOUT)
        if conn.transport.driver_type == "redis":
            return _redis_depths(conn.default_channel, queues)
        return _amqp_depths(conn, queues)


def queue_depths() -> dict[str, int] | None:
    """Messages waiting per queue (not those a worker has already reserved); ``None`` when
    the broker did not answer in time."""
    return _cached(
        "queue_depths",
        settings.OPS_QUEUE_DEPTH_CACHE_SECONDS,
        lambda: _bounded(read_queue_depths, settings.OPS_BROKER_TIMEOUT, "queue depth"),
        None,
    )


# --- workers --------------------------------------------------------------------------


def _inspect(method: str, timeout: float) -> dict:
    conn = _connection()
    try:
        inspector = celery_app.control.inspect(timeout=timeout, connection=conn)
        return getattr(inspector, method)() or {}
    finally:
        # On Redis, closing waits for the reply queue's pending blocking read (about a
        # second): close in the background, so the answer is not held up by it.
        threading.Thread(target=conn.release, daemon=True, name="ops-inspect-close").start()


def read_workers(timeout: float) -> list[dict]:
    """Workers answering ``inspect`` within ``timeout``: their queues and how many tasks each
    is running. Both broadcasts go out at once, so the read takes ``timeout``, not twice."""
    queues, active = _in_daemon_threads(
        lambda: _inspect("active_queues", timeout), lambda: _inspect("active", timeout)
    )
    return [
        {
            "name": name,
            "queues": sorted(queue["name"] for queue in queues[name]),
            "active": len(active.get(name) or []),
        }
        for name in sorted(queues)
    ]


def workers(accept: Callable[[list[dict] | None], bool] | None = None) -> list[dict] | None:
    """Workers online (see ``read_workers``); ``None`` when the broker did not answer in
    time. Kept ``OPS_WORKERS_CACHE_SECONDS`` in this process; a kept answer that ``accept``
    refuses is read again (``/health/`` trusts a kept "no worker" for no time)."""
    timeout = settings.OPS_BROKER_TIMEOUT
    return _cached(
        "workers",
        settings.OPS_WORKERS_CACHE_SECONDS,
        # The broadcast waits 60 % of the deadline for replies (workers on the network answer
        # in milliseconds); the rest is for connecting on a loaded machine.
        lambda: _bounded(lambda: read_workers(timeout * 0.6), timeout, "workers"),
        accept,
    )


def figures() -> tuple[dict[str, int] | None, list[dict] | None]:
    """Queue depths and workers read at the same time: one deadline for both."""
    depths, online = _in_daemon_threads(queue_depths, workers)
    return depths, online
