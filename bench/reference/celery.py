import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reference.settings")
app = Celery("reference")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["reference"], related_name="jobs")
