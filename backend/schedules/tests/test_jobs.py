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


def fire_sent(schedule_id, message_id, sent_at) -> str:
    fire_schedule.push_request(id=message_id)
    try:
        return fire_schedule(str(schedule_id), sent_at=sent_at.isoformat())
    finally:
        fire_schedule.pop_request()


def test_a_backlog_of_firings_fires_once_not_in_a_burst(user):
    """The maintenance worker stopped for 22 s under a 5 s schedule: when it came back, the
    five messages beat had sent made five tasks at the same moment. The first fires; each
    one sent before that firing is skipped, and the next one beat sends fires as usual."""
    from datetime import timedelta

    from django.utils import timezone

    schedule = make_schedule(user)
    start = timezone.now()
    sent = [start - timedelta(seconds=25 - 5 * i) for i in range(5)]  # the backlog
    outcomes = [fire_sent(schedule.pk, f"m-{i}", at) for i, at in enumerate(sent)]

    assert outcomes[0].startswith("fired: task ")
    assert all(o.startswith(f"skipped: schedule {schedule.pk} fired at ") for o in outcomes[1:])
    assert Task.objects.count() == 1 and ScheduleRun.objects.count() == 1

    later = fire_sent(schedule.pk, "m-next", timezone.now())
    assert later.startswith("fired: task ")
    assert Task.objects.count() == 2
    # A message without the time it was sent (sent by an earlier version) still fires.
    assert fire(schedule.pk, "m-old").startswith("fired: task ")
