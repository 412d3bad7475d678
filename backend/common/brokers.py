"""kombu transports as the service uses them, selected by ``CELERY_BROKER_TRANSPORT``.

The embedded broker (``filesystem://``): kombu's filesystem transport, with message
priorities. kombu hands out the filesystem queue's messages in the order of their file
names, which begin with the time they were written; here they begin with the message's
priority first (0-9, higher first, as on RabbitMQ), so an urgent task overtakes the low ones
still waiting.

Redis (``redis://``): kombu's Redis transport, with one client object per channel instead
of a new one for every command it sends.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from kombu.transport import filesystem, redis
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        priority = self._get_message_priority(payload, reverse=True)  # 0 = most urgent
        stamp = time.monotonic_ns() // 1000
        name = f"{priority}{stamp:020d}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        partial = f"{path}.part"
        try:
            # Written under another name, then renamed: a reader never sees half a message.
            with open(partial, "wb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, path)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {path!r} to directory") from exc

    def get_table(self, exchange):
        """kombu created a fanout exchange's table (``celery inspect``'s replies, say) empty,
        then locked it and wrote it: read in between, it failed to parse, and the first
        ``/health/`` under ``make run`` logged "workers failed: JSONDecodeError". Empty, it
        is a table with no queue bound yet."""
        try:
            return super().get_table(exchange)
        except ValueError:  # json's JSONDecodeError
            return []

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        bound = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._change_table(exchange, lambda table: table if bound in table else [bound, *table])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        super(filesystem.Channel, self)._delete(
            queue, exchange, routing_key, pattern, *args, **kwargs
        )
        bound = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._change_table(exchange, lambda table: [q for q in table if q != bound], create=False)

    def _change_table(self, exchange, change, create: bool = True) -> None:
        """An exchange's table read, changed and written back under its lock, an empty one
        (being created, or left so) read as no queue. kombu's bind created the table empty
        and only then locked it: a second worker binding in between (``make run`` starts
        three) read it empty and failed to start."""
        path = self._exchange_file(exchange)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            if create:
                self.control_folder.mkdir(exist_ok=True)
            descriptor = os.open(path, flags, 0o644)
        except FileNotFoundError:
            return  # nothing bound to it: nothing to remove
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot open {path}") from exc
        with os.fdopen(descriptor, "rb+", buffering=0) as handle:
            filesystem.lock(handle, filesystem.LOCK_EX)
            try:
                text = bytes_to_str(handle.read())
                table = [filesystem.exchange_queue_t(*q) for q in loads(text)] if text else []
                changed = change(table)
                if changed != table or not text:
                    handle.seek(0)
                    handle.write(str_to_bytes(dumps(changed)))
                    handle.truncate()
            finally:
                filesystem.unlock(handle)

    # A finished task frees a place under the prefetch limit: the worker's event loop takes
    # the next messages at once, not at its next poll of the folder.
    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.drain_soon()

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.drain_soon()


class Transport(filesystem.Transport):
    """The filesystem transport as an evented one: a worker runs Celery's event loop, as on
    Redis, which polls the folder every ``polling_interval`` (a timer of the loop) instead
    of blocking in a read. Without the event loop, the worker's prefork pool was billiard's
    blocking one, whose processes take their jobs from one shared pipe under one lock: a
    process killed while idle (``kill -9``) died holding that lock, and the worker took no
    task again until restarted. In the event loop, each process has pipes of its own."""

    Channel = Channel
    global_state = filesystem.Transport.global_state
    implements = filesystem.Transport.implements.extend(asynchronous=True)

    # The messages one tick of the loop hands over at most (the prefetch limit usually
    # stops it first), so the loop stays responsive to its other work.
    DRAIN_PER_TICK = 100

    _loop = None
    _drain_due = False

    def register_with_event_loop(self, connection, loop):
        self._loop = loop
        loop.call_repeatedly(self.polling_interval, self._drain_ready, connection)

    def drain_soon(self) -> None:
        """Take what may be taken in the loop's next turn (once however many ask)."""
        if self._loop is not None and not self._drain_due:
            self._drain_due = True
            self._loop.call_soon(self._drain_ready, self)

    def _drain_ready(self, connection):
        self._drain_due = False
        try:
            for _ in range(self.DRAIN_PER_TICK):
                try:
                    self.drain_events(connection, timeout=0)
                except TimeoutError:  # (socket.timeout) nothing more to take now
                    return
        except Exception as exc:
            # A message file that is not one, the folder gone for a moment: this turn ends,
            # the next poll tries again. Raised from a turn an acknowledgement asked for, it
            # stopped the worker (a timer's error the loop only logs).
            self._report(exc)

    _reported_at = 0.0
    REPORT_EVERY = 10.0  # seconds: the same failure at every poll is one line, not 20 a second

    def _report(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._reported_at >= self.REPORT_EVERY:
            self._reported_at = now
            logger.warning("embedded broker: messages not taken this time: %r", exc, exc_info=exc)

    @property
    def default_connection_params(self):
        # Folders, no host: kombu would otherwise warn on every connection that no hostname
        # was given and fall back to 'localhost', which means nothing here.
        return {"port": self.default_port}

    def drain_events(self, connection, timeout=None):
        # The worker checks for a shutdown request between two waits (2 s by default): a
        # short wait lets Ctrl-C or SIGTERM stop an idle worker at once.
        if timeout is not None:
            timeout = min(timeout, 0.25)
        return super().drain_events(connection, timeout=timeout)


class RedisChannel(redis.Channel):
    """kombu builds a new ``redis.Redis`` for each publish, acknowledgement and queue
    length it sends (``conn_or_acquire``); building one fills a table of some 170 reply
    handlers, which cost more than the command itself. A client only borrows connections
    from the channel's pool, so one per pool serves them all, from any thread."""

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self.__dict__.get("_sync_client")
        if cached is None or cached[0] is not pool:
            cached = self.__dict__["_sync_client"] = (pool, super()._create_client())
        return cached[1]


class RedisTransport(redis.Transport):
    Channel = RedisChannel
