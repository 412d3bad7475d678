"""The Celery application: configured from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

app = Celery("backend")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery entry points live in each app's ``jobs.py`` (the app called ``tasks`` has no tasks.py).
app.autodiscover_tasks(related_name="jobs")
