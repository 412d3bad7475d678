"""Django's development server (with static files, as ``django.contrib.staticfiles`` serves
them), as ``make run`` starts it, with a longer queue of connections waiting to be accepted,
and each request's database connection closed when it is answered.

- Django's server lets 10 wait: 50 requests sent at once (the README's test of the
  five-active-task limit) had some of their connections reset before the server could
  answer them.
- It answers each client's connection in a thread of its own, and each thread kept its
  database connection (``CONN_MAX_AGE``) as long as the client stayed connected, and after
  it had gone: on PostgreSQL, a few bursts of concurrent requests, or a hundred keep-alive
  clients, held every connection the server allows, and the service answered 503. Here a
  request's connection is closed once it is answered (``CONN_MAX_AGE`` 0, which Django's
  end-of-request hook obeys), and a thread's when it ends, as Django's test server does."""

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

    def get_handler(self, *args, **options):
        for alias in connections:
            connections.settings[alias]["CONN_MAX_AGE"] = 0
        return super().get_handler(*args, **options)
