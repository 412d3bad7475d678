"""Django's PostgreSQL backend, with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` Django checks a kept connection before the first query of each
request, and its PostgreSQL backend does so with ``SELECT 1``: a round trip to the server on
every request. The server sends nothing on an idle connection unless it is ending it (a
restart, ``pg_terminate_backend``, ``idle_session_timeout``: an error message, then the end
of the stream), so an idle connection with nothing to read is usable. One with something to
read, or in any other state, gets Django's own check.
"""

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self):
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        pgconn = connection.pgconn
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        try:
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN)
            waiting = poller.poll(0)
        except (OSError, ValueError, psycopg.Error):  # no socket: the connection is gone
            return False
        return not waiting or super().is_usable()
