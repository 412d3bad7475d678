"""The fold of the kept task counts: scheduled on PostgreSQL (where triggers keep them),
routed to the maintenance queue, and a no-op that keeps the counts as they are."""

import pytest
from django.conf import settings
from django.db import connection

from backend.celery import app as celery_app
from backend.ops import jobs, selectors
from backend.tasks.tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def test_the_fold_is_routed_and_scheduled_where_counts_are_kept():
    assert celery_app.conf.task_routes["backend.ops.jobs.fold_task_counts"] == {
        "queue": "maintenance"
    }
    assert "backend.ops.jobs.fold_task_counts" in celery_app.tasks
    entry = settings.CELERY_BEAT_SCHEDULE.get("ops.fold-task-counts")
    if connection.vendor == "postgresql":
        assert entry["task"] == "backend.ops.jobs.fold_task_counts"
        assert entry["schedule"].total_seconds() == settings.OPS_COUNT_FOLD_INTERVAL
    else:  # SQLite counts the tasks: nothing to fold, no message every few seconds
        assert entry is None


def test_the_fold_job_leaves_the_counts_as_they_were():
    TaskFactory.create_batch(3, status="pending", task_type="sum")
    TaskFactory(status="completed", task_type="reverse")
    before = selectors.counts()

    removed = jobs.fold_task_counts()

    assert selectors.counts() == before
    assert removed > 0 if connection.vendor == "postgresql" else removed == 0
