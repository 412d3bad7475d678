"""Django's development server (with static files, as ``django.contrib.staticfiles`` serves
them), as ``make run`` starts it, with a longer queue of connections waiting to be accepted.

Django's server lets 10 wait: 50 requests sent at once (the README's test of the
five-active-task limit) had some of their connections reset before the server could
answer them."""

from django.contrib.staticfiles.management.commands.runserver import (
    Command as StaticFilesRunserver,
)
from django.core.servers.basehttp import WSGIServer


class QueueingWSGIServer(WSGIServer):
    request_queue_size = 128


class Command(StaticFilesRunserver):
    server_cls = QueueingWSGIServer
