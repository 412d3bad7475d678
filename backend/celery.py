"""The Celery application: configured from Django settings (``CELERY_*``)."""

import os
import sys
import warnings

from celery import Celery
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import celeryd_after_setup, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _refuse_bad_settings_in_one_line() -> None:
    """Under the ``celery`` command (worker, beat, inspect), the settings are read at once: a
    missing or bad environment variable stops it with the one line manage.py prints, not a
    traceback with the message at its end."""
    command = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    # ``celery …`` or ``python -m celery …`` (celery/__main__.py)
    if "celery" not in (os.path.basename(command), os.path.basename(os.path.dirname(command))):
        return
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - reads the environment
    except ImproperlyConfigured as exc:
        sys.exit(f"Configuration error: {exc}")


_refuse_bad_settings_in_one_line()
# Celery entry points live in each app's ``jobs.py`` (the app called ``tasks`` has no tasks.py).
app.autodiscover_tasks(related_name="jobs")


class _ConnectionCheck:
    """Counts tasks between checks of the reused database connection."""

    every = 50
    runs = 0


@task_prerun.connect
def _drop_broken_db_connections(**kwargs) -> None:
    """Reused connections (CELERY_DB_REUSE_MAX) are checked as Django checks them around a
    request. Before every task, the health check of CONN_HEALTH_CHECKS is due again: on
    PostgreSQL it reads the socket without a statement (``backend.common.postgresql``), so
    a connection the server ended while the worker was idle (a restart,
    ``pg_terminate_backend``, ``idle_session_timeout``) is replaced before the task's first
    query instead of failing it. The rest of Django's check (a connection that failed or
    outlived CONN_MAX_AGE is closed) runs at once after an error, otherwise once every
    ``every`` tasks."""
    from django.db import close_old_connections, connections

    opened = connections.all(initialized_only=True)
    for conn in opened:
        conn.health_check_done = False
    _ConnectionCheck.runs += 1
    errors = any(conn.errors_occurred for conn in opened)
    if errors or _ConnectionCheck.runs >= _ConnectionCheck.every:
        _ConnectionCheck.runs = 0
        close_old_connections()


@celeryd_after_setup.connect
def _no_warning_of_the_kept_tasks(**kwargs) -> None:
    """Celery warns of its coming default (running tasks cancelled when the broker
    connection is lost) at every reconnection, in 6 lines: the product keeps them on purpose
    (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS in the settings). Added once
    the worker's logging is set up, which shows every Celery deprecation warning."""
    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )
