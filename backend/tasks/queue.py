"""Handing tasks to the broker. The database stays the source of truth: a send that fails
is logged and left for the dispatcher, never raised to the caller.

Sends go through a pool of producers whose connections have short connect and socket
timeouts (``BROKER_PUBLISH_TIMEOUT``), so a broker that refuses or hangs holds a request for
about that long at most; after a failed send a circuit breaker skips the broker for
``BROKER_BREAKER_SECONDS`` and the tasks wait, committed with ``enqueued_at`` NULL, for the
dispatcher.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent import futures
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from queue import SimpleQueue
from typing import NamedTuple
from uuid import UUID, uuid4

from celery.utils.nodenames import anon_nodename
from django.conf import settings
from django.core.signals import request_started
from django.db import transaction
from kombu.pools import ProducerPool

from backend.celery import app as celery_app
from backend.common import recording
from backend.common.breaker import CircuitBreaker

from . import types
from .models import Task, TaskStatus

logger = logging.getLogger(__name__)

RUN_TASK = "backend.tasks.jobs.run_task"

breaker = CircuitBreaker(settings.BROKER_BREAKER_SECONDS)


class Job(NamedTuple):
    """What a run message needs to know of a task."""

    id: UUID
    task_type: str
    input_data: dict
    priority_rank: int


JOB_FIELDS = ("pk", "task_type", "input_data", "priority_rank")

# The run message of an instant type carries the task's input when it is this small (as
# JSON): the worker then runs it without reading the task (``runner.execute``).
INLINE_INPUT_BYTES = 4096


def run_arguments(job: Job, kind: types.TaskType) -> list:
    """The run message's arguments: the task's id and type, and its input for an instant
    type when small."""
    arguments = [str(job.id), job.task_type]
    if kind.instant and len(json.dumps(job.input_data)) <= INLINE_INPUT_BYTES:
        arguments.append(job.input_data)
    return arguments


def job_of(task: Task) -> Job:
    return Job(task.pk, task.task_type, task.input_data, task.priority_rank)


# --- the producer pool, one per process and broker URL ------------------------------------


class _Pool:
    key: tuple | None = None
    producers: ProducerPool | None = None
    origin: str | None = None


# A process may send from two threads (a pool process's outcome writer sends the
# notifications of what it wrote): one pool is built, and dropped, at a time.
_pool_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A forked process starts with a free lock (a thread of the parent may have held it)."""
    global _pool_lock
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def _producers() -> ProducerPool:
    key = (os.getpid(), celery_app.conf.broker_url)
    with _pool_lock:
        if _Pool.key != key:
            connection = celery_app.connection_for_write(
                connect_timeout=settings.BROKER_PUBLISH_TIMEOUT,
                transport_options=settings.BROKER_PUBLISH_TRANSPORT_OPTIONS,
            )
            limit = celery_app.conf.broker_pool_limit or 10
            _Pool.producers = ProducerPool(connection.Pool(limit=limit), limit=limit)
            _Pool.key = key
        return _Pool.producers


def _discard_pool() -> None:
    """Drop every pooled connection after a failure: the next send starts afresh."""
    with _pool_lock:
        if _Pool.producers is not None:
            try:
                _Pool.producers.connections.force_close_all()
            except Exception:  # closing a broken connection may fail too; it is gone anyway
                logger.debug("closing broker connections failed", exc_info=True)
        _Pool.key = _Pool.producers = None


# --- sending ------------------------------------------------------------------------------

_REDIS_PRIORITY = {0: 9, 1: 6, 2: 3, 3: 0}  # Redis consumes its priority 0 first
_AMQP_PRIORITY = {0: 0, 1: 3, 2: 6, 3: 9}


def message_priority(rank: int) -> int:
    """The broker's message priority for a task's priority rank (low 0 … urgent 3)."""
    scheme = celery_app.conf.broker_url.split("://", 1)[0]
    if scheme.startswith("redis"):
        return _REDIS_PRIORITY[rank]
    # RabbitMQ and the embedded broker (backend/common/brokers.py) take the highest first.
    return _AMQP_PRIORITY[rank]


def accepting() -> bool:
    """False while the breaker is open: new tasks are left to the dispatcher."""
    return not breaker.is_open


def _origin() -> str:
    """Who sent the message (Celery's ``origin`` header): this process, computed once."""
    if _Pool.origin is None:
        _Pool.origin = anon_nodename()
    return _Pool.origin


def _send(
    producer, name: str, args: list, *, queue: str, priority=None, limit=None, kwargs=None
) -> None:
    """One Celery task message, as ``app.send_task`` would build and route it, without its
    per-call work that changes nothing here: routing the name again, copying the queue and
    its exchange to declare them (declared once per connection), ``repr`` of the arguments
    through ``saferepr``, and the publish signals nothing listens to."""
    headers, properties, body, _ = celery_app.amqp.create_task_message(
        str(uuid4()),
        name,
        args,
        kwargs or {},
        # The hard limit leaves the run time to write its outcome (recording.RECORD_BUDGET).
        time_limit=None if limit is None else limit + recording.RECORD_BUDGET,
        soft_time_limit=limit,
        ignore_result=True,
        argsrepr=repr(tuple(args)),
        kwargsrepr=repr(kwargs or {}),
        origin=_origin(),
    )
    declared = _declared(producer.channel, queue)
    producer.publish(
        body,
        exchange="",  # the default exchange: routed by queue name, as Celery sends to
        routing_key=queue,  # a direct exchange's queue
        serializer="json",
        headers=headers,
        delivery_mode=declared.exchange.delivery_mode or 2,
        priority=priority,
        declare=[declared],
        retry=False,
        **properties,
    )


_bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _declared(channel, queue: str):
    """The queue bound to this channel, kept with it: kombu declares a bound queue once per
    connection and then only looks it up (an unbound one is copied on every send)."""
    queues = _bound.setdefault(channel, {})
    if queue not in queues:
        queues[queue] = celery_app.amqp.queues[queue].bind(channel)
    return queues[queue]


@contextmanager
def _pooled_producer():
    """A producer from the pool, given back after use. After a failure its connection is
    dropped without the closing handshake: kombu closes it gracefully, and on AMQP each close
    (the channel's, then the connection's) waits for the broker's answer, so a hung broker
    held the sender for two timeouts more than the send's own (3 s instead of 1)."""
    producer = _producers().acquire(block=True, timeout=settings.BROKER_PUBLISH_TIMEOUT)
    try:
        yield producer
    except BaseException:
        try:
            producer.connection.collect()
        except Exception:  # it is broken already; the pool is discarded next
            logger.debug("dropping the broker connection failed", exc_info=True)
        raise
    producer.release()


# Messages sent together: on Redis, one pipeline (one round trip) per batch.
BATCH = 500


def _send_all(items: list, send_one, name: str, queue_of=None) -> list[int]:
    """Call ``send_one(producer, item)`` for each item, through the pool and the breaker, a
    batch at a time: on Redis each batch goes in one round trip (kombu's publish batch), on
    RabbitMQ and the embedded broker a message at a time. Returns the positions of the
    items that went, in order: a batch counts once it has been flushed, so after a failure
    the items of the batch that failed count as not sent (sent again later: at worst a
    duplicate, which a guarded claim or delivery makes harmless, never a loss).

    A queue the broker refuses while it takes the others (RabbitMQ: one declared with other
    arguments, PRECONDITION_FAILED) fails the items of that queue alone (``queue_of(item)``
    names an item's): the rest go on a new connection, and the breaker stays closed (the
    broker is up). One such queue first in line held back every other queue's messages."""
    if not items:
        return []
    if breaker.is_open:
        logger.info("broker breaker open: %d %s message(s) left for later", len(items), name)
        return []
    if not _whole_sends_bounded or getattr(_request, "awaited", False):
        return _send_all_now(items, send_one, name, queue_of)
    # Each step of a send (and of making its connection: about ten round trips on Redis, a
    # process's first send or the first after a failure) is bounded alone: a slow broker,
    # answering each within the timeout, held a create 8 to 13 s and every web worker with
    # it. In the web tier a request's sends go on in a thread, waited for until
    # BROKER_PUBLISH_TIMEOUT after the first began (a create with a webhook sends twice);
    # given up, their items count as not sent (the dispatcher sends them; should the thread
    # still send them, a duplicate, which a guarded claim or delivery makes harmless) and
    # the breaker trips, as for a broker that hangs.
    now = time.monotonic()
    deadline = getattr(_request, "deadline", None)
    if deadline is None:
        deadline = _request.deadline = now + settings.BROKER_PUBLISH_TIMEOUT
    if deadline <= now:
        # The request's time for sends went on other work (an admin action over many
        # tasks, each its own transaction): nothing says the broker is slow.
        logger.info(
            "%d %s message(s) left for the dispatcher: the request's send time is spent",
            len(items),
            name,
        )
        return []
    sending = _senders().submit(partial(_send_all_now, items, send_one, name, queue_of))
    try:
        return sending.result(timeout=deadline - now)
    except futures.TimeoutError:
        sending.cancel()  # not begun yet: it will not go at all
    breaker.trip()
    logger.warning(
        "broker: %d %s message(s) not sent within %g s of the request's first send "
        "(BROKER_PUBLISH_TIMEOUT); left for later",
        len(items),
        name,
        settings.BROKER_PUBLISH_TIMEOUT,
    )
    return []


# Whether a request's sends wait BROKER_PUBLISH_TIMEOUT at most in all (``_send_all``): set by
# the web tier (``backend/wsgi.py``), whose requests must answer promptly. A worker, beat and
# a management command wait for their sends to end (each step bounded): one giving up would
# leave its messages to a thread that the process's exit may stop before they go.
_whole_sends_bounded = False
# The request under way in this thread: when its sends must be over (``deadline``), or
# whether they are waited for in full (``awaited``, ``sends_awaited``).
_request = threading.local()


def bound_whole_sends() -> None:
    """This process's requests wait BROKER_PUBLISH_TIMEOUT at most for their sends."""
    global _whole_sends_bounded
    _whole_sends_bounded = True
    request_started.connect(_request_began, dispatch_uid="queue: a request's send deadline")


def _request_began(**kwargs) -> None:
    _request.deadline = None


@contextmanager
def sends_awaited():
    """Sends made inside are waited for until they end (each step bounded), in the web tier
    too: an admin's action over many objects (each its own transaction and send), or one
    that says whether its message went (one given up may still go, and "not sent" would be
    false). A broker that fails trips the breaker, and the sends after it are skipped."""
    was, _request.awaited = getattr(_request, "awaited", False), True
    try:
        yield
    finally:
        _request.awaited = was


class _Senders:
    """Threads of this process that run the web tier's sends. Daemons: a send given up is
    left to the dispatcher, so a process's exit does not wait for it (a thread pool's
    threads held a gunicorn worker's exit 7 to 15 s behind a slow broker)."""

    COUNT = 4
    pid: int | None = None
    current: _Senders | None = None

    def __init__(self):
        self.work: SimpleQueue = SimpleQueue()
        self.busy = 0  # sends under way (read by tests)
        for number in range(self.COUNT):
            threading.Thread(target=self._run, name=f"broker send {number}", daemon=True).start()

    def _run(self) -> None:
        while True:
            future, call = self.work.get()
            if not future.set_running_or_notify_cancel():
                continue  # given up before it began
            self.busy += 1
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                self.busy -= 1

    def submit(self, call) -> futures.Future:
        future: futures.Future = futures.Future()
        self.work.put((future, call))
        return future


def _senders() -> _Senders:
    """This process's senders (made anew in a forked process: threads do not fork)."""
    with _pool_lock:
        if _Senders.pid != os.getpid():
            _Senders.current, _Senders.pid = _Senders(), os.getpid()
        return _Senders.current


def _send_all_now(items: list, send_one, name: str, queue_of=None) -> list[int]:
    went: list[int] = []
    refused: set[str] = set()
    start_at, retried = 0, False
    while True:
        began, current = time.monotonic(), None
        todo = [
            index
            for index in range(start_at, len(items))
            if not refused or queue_of(items[index]) not in refused
        ]
        try:
            with _pooled_producer() as producer:
                for start in range(0, len(todo), BATCH):
                    chunk = todo[start : start + BATCH]
                    if len(chunk) == 1:
                        current = chunk[0]
                        send_one(producer, items[current])
                    else:
                        # Each message is one command on Redis; the batch flushes at its end.
                        with producer.batch(max_size=len(chunk) + 1):
                            for current in chunk:
                                send_one(producer, items[current])
                    went += chunk
            return went
        except Exception as exc:  # the broker is down, refused or hangs: sent again later
            if queue_of is not None and current is not None and _refuses_a_queue(exc):
                refused.add(queue_of(items[current]))
                _queue_refused(exc, queue_of(items[current]), name)
                start_at = current + 1  # those of its batch before it: sent again later
                continue
            if not retried and _closed_meanwhile(exc, time.monotonic() - began):
                logger.info("the broker had closed a pooled connection (%s): sending again", exc)
                _discard_pool()
                if went:  # on from the first not sent (a refused queue's stay skipped)
                    start_at = max(start_at, went[-1] + 1)
                retried = True
                continue
            _failed(exc, len(items) - len(went), name)
            return went


def _refuses_a_queue(exc: Exception) -> bool:
    """RabbitMQ refused one queue (its channel closed), not the connection: a queue declared
    with other arguments (406), gone or locked by another client (404, 405). Not 403: it
    also refuses a login so, which is the whole broker's failure."""
    try:
        from amqp.exceptions import ChannelError
    except ImportError:  # not installed: no RabbitMQ either
        return False
    return isinstance(exc, ChannelError) and getattr(exc, "code", None) in (404, 405, 406)


def _queue_refused(exc: Exception, queue: str, name: str) -> None:
    _discard_pool()  # its channel was closed by the broker
    if "PRECONDITION_FAILED" in str(exc):
        logger.error(
            "the RabbitMQ queue %s exists with other arguments than the service declares "
            "(classic, x-max-priority 10), e.g. made by an older version: delete it once it "
            "is empty (rabbitmqctl delete_queue %s) and restart the workers; see README, "
            "RabbitMQ. Its %s messages are sent again later; the other queues' go.",
            queue,
            queue,
            name,
        )
    else:
        logger.error(
            "RabbitMQ refused the queue %s (%s); the other queues' messages go", queue, exc
        )


def _closed_meanwhile(exc: Exception, seconds: float) -> bool:
    """A pooled connection the broker closed while it sat idle (a restart, a failover)
    fails at once with a connection error: worth one more try on a new connection. A
    broker that hangs fails by a timeout, and is not tried again (the send stays bounded
    by about BROKER_PUBLISH_TIMEOUT)."""
    if seconds >= settings.BROKER_PUBLISH_TIMEOUT / 2 or isinstance(exc, TimeoutError):
        return False
    return isinstance(exc, _connection_errors())


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What the broker's client raises for a lost connection (read on a failure only)."""
    return (OSError, *celery_app.connection_for_write().connection_errors)


def publish(jobs: Iterable[Job]) -> list[UUID]:
    """Send a run message for each job; returns the ids that went, in order.

    Stops at the first failure (and trips the breaker): the rest stay for the dispatcher.
    Sent first, marked by the caller after: a crash in between means a duplicate send
    (harmless, the claim is guarded), never a lost task.
    """
    # Each message's time limit first, here: a type's may read the database (a file's
    # size), which a web request's sender thread must not (its connection was never
    # checked nor closed: after a database restart every such send failed, taken for the
    # broker's failure). One that cannot be worked out is left for the dispatcher alone.
    ready = []
    for job in jobs:
        try:
            kind = types.get(job.task_type)
            ready.append((job, kind, kind.time_limit_for(job.input_data)))
        except Exception as exc:
            logger.warning("task %s: its run message not built (%s); sent later", job.id, exc)

    def send_one(producer, item: tuple) -> None:
        job, kind, limit = item
        _send(
            producer,
            RUN_TASK,
            run_arguments(job, kind),
            queue=kind.queue,
            priority=message_priority(job.priority_rank),
            limit=limit,
        )

    def queue_of(item: tuple) -> str:
        return item[1].queue

    return [ready[index][0].id for index in _send_all(ready, send_one, RUN_TASK, queue_of)]


def _failed(exc: Exception, unsent: int, name: str) -> None:
    breaker.trip()
    _discard_pool()
    logger.warning(
        "could not send %d %s message(s) to the broker (%s: %s); they are sent again later",
        unsent,
        name,
        type(exc).__name__,
        exc,
    )


def send_messages(
    name: str,
    arguments: list[list],
    *,
    queue: str,
    rank: int | None = None,
    kwargs: dict | None = None,
) -> int:
    """Send one message of the Celery task ``name`` per argument list (each with the same
    ``kwargs``), through the same pool and breaker as run messages, at the priority of a
    task of ``rank`` (low 0 … urgent 3; none given: the broker's default); returns how many
    went (stops at the first failure, the rest are left for whatever re-sends them)."""
    priority = None if rank is None else message_priority(rank)
    went = _send_all(
        arguments,
        lambda producer, args: _send(
            producer, name, args, queue=queue, priority=priority, kwargs=kwargs
        ),
        name,
        lambda args: queue,
    )
    return len(went)


def publish_on_commit(jobs: list[Job], *, marked_at: datetime | None) -> None:
    """After the current transaction commits, send the jobs. Their rows were written with
    ``enqueued_at = marked_at``; the ones that could not be sent get NULL back, so the
    dispatcher takes them on its next round."""

    def send() -> None:
        sent = set(publish(jobs))
        unsent = [job.id for job in jobs if job.id not in sent]
        if unsent and marked_at is not None:
            try:
                Task.objects.filter(
                    pk__in=unsent, status=TaskStatus.PENDING, enqueued_at=marked_at
                ).update(enqueued_at=None)
            except Exception:  # the dispatcher re-sends them after TASK_REDISPATCH_AFTER
                logger.warning("could not unmark %d unsent task(s)", len(unsent), exc_info=True)

    transaction.on_commit(send)
