"""The Celery entry point beat calls, run in-process as for a message with an id."""

import pytest

from backend.schedules.jobs import fire_schedule
from backend.schedules.models import ScheduleRun
from backend.tasks.models import Task
from backend.tasks.tests.factories import TaskFactory

from .factories import make_schedule

pytestmark = pytest.mark.django_db


def fire(schedule_id, message_id="beat-1") -> str:
    """Call the entry point as a worker does for a message with this id."""
    fire_schedule.push_request(id=message_id)
    try:
        return fire_schedule(str(schedule_id))
    finally:
        fire_schedule.pop_request()


def test_fire_creates_a_task_and_records_the_message(user):
    schedule = make_schedule(user)

    outcome = fire(schedule.pk, "beat-1")

    run = ScheduleRun.objects.get()
    assert outcome == f"fired: task {run.task_id}"
    assert run.message_id == "beat-1"
    assert Task.objects.filter(pk=run.task_id, owner=user).exists()


def test_the_same_message_twice_fires_once(user):
    schedule = make_schedule(user)
    fire(schedule.pk, "beat-1")
    fire(schedule.pk, "beat-1")
    fire(schedule.pk, "beat-2")
    assert ScheduleRun.objects.count() == 2 and Task.objects.count() == 2


def test_refused_and_skipped_outcomes(user, settings):
    settings.MAX_ACTIVE_TASKS = 1
    TaskFactory(owner=user)
    schedule = make_schedule(user)
    assert fire(schedule.pk) == "refused: active_task_limit"
    assert fire("not-a-uuid", "beat-2").startswith("skipped")
    assert fire("00000000-0000-0000-0000-000000000000", "beat-3").startswith("skipped")
