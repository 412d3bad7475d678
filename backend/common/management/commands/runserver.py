"""Django's development server (with static files, as ``django.contrib.staticfiles`` serves
them), as ``make run`` starts it, with a longer queue of connections waiting to be accepted,
and each request's database connection closed when it is answered.

- Django's server lets 10 wait: 50 requests sent at once (the README's test of the
  five-active-task limit) had some of their connections reset before the server could
  answer them.
- It answers each request in a thread of its own, and a thread's connection was kept for
  ``CONN_MAX_AGE`` by nobody: on PostgreSQL, a few bursts of concurrent requests held every
  connection the server allows, and the service answered 503 from then on. Django's own
  threaded server (its test server's) closes them as here."""

from django.contrib.staticfiles.management.commands.runserver import (
    Command as StaticFilesRunserver,
)
from django.core.servers.basehttp import WSGIServer
from django.db import connections


class QueueingWSGIServer(WSGIServer):
    request_queue_size = 128

    def close_request(self, request):
        # Called in the request's own thread once it is answered.
        connections.close_all()
        super().close_request(request)


class Command(StaticFilesRunserver):
    server_cls = QueueingWSGIServer
