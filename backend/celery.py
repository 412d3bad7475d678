"""The Celery application: configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery entry points live in each app's ``jobs.py`` (the app called ``tasks`` has no tasks.py).
app.autodiscover_tasks(related_name="jobs")


class _ConnectionCheck:
    """Counts tasks between checks of the reused database connection."""

    every = 50
    runs = 0


@task_prerun.connect
def _drop_broken_db_connections(**kwargs) -> None:
    """Reused connections (CELERY_DB_REUSE_MAX) are checked as Django checks them around a
    request (a connection that failed or outlived CONN_MAX_AGE is closed and the next query
    opens a fresh one) — at once after an error, otherwise once every ``every`` tasks, so a
    task costs no health-check query of its own."""
    from django.db import close_old_connections, connections

    _ConnectionCheck.runs += 1
    errors = any(conn.errors_occurred for conn in connections.all(initialized_only=True))
    if errors or _ConnectionCheck.runs >= _ConnectionCheck.every:
        _ConnectionCheck.runs = 0
        close_old_connections()
