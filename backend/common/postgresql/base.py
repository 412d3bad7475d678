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


def bound_web_statements() -> None:
    """Give this process's PostgreSQL connections, when they open, the web tier's lock and
    statement timeouts (DATABASE_WEB_LOCK_TIMEOUT, DATABASE_WEB_STATEMENT_TIMEOUT: server
    settings sent with the connection, no round trip of their own). A statement past them is
    cancelled by the server, an OperationalError the API answers 503. Called by
    backend/wsgi.py; the workers, whose runs may rightly wait or run longer, have none."""
    import os

    from django.conf import settings
    from django.db import connections

    wanted = [
        (name, seconds)
        for name, seconds in (
            ("lock_timeout", settings.DATABASE_WEB_LOCK_TIMEOUT),
            ("statement_timeout", settings.DATABASE_WEB_STATEMENT_TIMEOUT),
        )
        if seconds
    ]
    for alias in connections:
        params = connections.settings[alias]
        if not wanted or params["ENGINE"] != __package__:
            continue
        options = params.setdefault("OPTIONS", {})
        # DATABASE_URL's ?options=…, else the environment's PGOPTIONS (which libpq reads only
        # when no options are given): kept, and a limit they set themselves left to them.
        given = options.get("options") or os.environ.get("PGOPTIONS", "")
        limits = [f"-c {name}={s * 1000}" for name, s in wanted if name not in given]
        options["options"] = " ".join([given, *limits]).strip()
