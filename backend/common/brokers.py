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

import os
import time
import uuid

from kombu.transport import filesystem, redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


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


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = filesystem.Transport.global_state

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
