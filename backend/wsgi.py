import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

try:
    application = get_wsgi_application()
except ImproperlyConfigured as exc:
    from django.conf import settings

    if settings.configured:
        raise
    # A missing or bad environment variable: its message says which and how to fix it, as
    # manage.py says it; a traceback in gunicorn's log would only bury it. Exit status 3 is
    # gunicorn's "worker failed to boot": it stops, rather than start worker after worker.
    print(f"Configuration error: {exc}", file=sys.stderr)
    sys.exit(3)

from backend.common.postgresql.base import bound_web_statements  # the apps are loaded by now
from backend.tasks import queue

queue.bound_whole_sends()  # a request's send to the broker waits BROKER_PUBLISH_TIMEOUT at most
bound_web_statements()  # and a statement DATABASE_WEB_LOCK_TIMEOUT for a lock, …_STATEMENT_…
