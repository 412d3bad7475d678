"""The Celery application: configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery entry points live in each app's ``jobs.py`` (the app called ``tasks`` has no tasks.py).
app.autodiscover_tasks(related_name="jobs")


@task_prerun.connect
@task_postrun.connect
def _drop_broken_db_connections(**kwargs) -> None:
    """Reused connections (CELERY_DB_REUSE_MAX) are checked around every task, as Django
    does around every request: a connection that failed or outlived CONN_MAX_AGE is closed
    and the next query opens a fresh one, instead of the worker failing task after task."""
    from django.db import close_old_connections

    close_old_connections()
