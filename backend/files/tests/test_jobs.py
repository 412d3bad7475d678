"""The cleanup is a Beat job like the sweeps: scheduled, routed to the maintenance queue."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from backend.celery import app as celery_app
from backend.files import jobs
from backend.files.models import File

from .factories import make_file

pytestmark = pytest.mark.django_db


def test_purge_job_removes_expired_files(user, django_capture_on_commit_callbacks):
    file = make_file(user)
    File.objects.filter(pk=file.pk).update(created_at=timezone.now() - timedelta(days=365))
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.purge_expired_files() == {
            "files": 1,
            "bytes": file.size,
            "kept_in_use": 0,
            "leftovers": 0,
            "leftover_bytes": 0,
        }
    assert not File.objects.exists()


def test_purge_job_is_scheduled_and_routed():
    entry = settings.CELERY_BEAT_SCHEDULE["files.purge-expired"]
    assert entry["task"] == "backend.files.jobs.purge_expired_files"
    assert entry["schedule"] == timedelta(seconds=settings.FILE_CLEANUP_INTERVAL)
    routes = celery_app.conf.task_routes
    assert routes["backend.files.jobs.purge_expired_files"] == {"queue": "maintenance"}
    assert "backend.files.jobs.purge_expired_files" in celery_app.tasks
