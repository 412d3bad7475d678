"""A plain DRF + Celery task service: the yardstick for the production bench's create and
list, as ``bare_celery.py`` is for the drain.

It is what such a service usually looks like, written the way the frameworks' documentation
shows: a ``ModelViewSet`` with a ``ModelSerializer``, simplejwt's Bearer authentication, the
pagination and filtering DRF and django-filter give, the active-task count checked before
the INSERT (without a lock), the run message sent on commit with ``delay()``, and a worker
that reads the task, saves it running, then saves its result. It runs on the same
PostgreSQL and Redis as the product, with the same gunicorn and worker flags, so the two
differ only in what each does per request and per task.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
