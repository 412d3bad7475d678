"""What the console handler leaves out: the maintenance sweeps that did nothing."""

import logging

import pytest
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

from backend.common.logfilters import QuietSweeps

DISPATCH = "backend.tasks.jobs.dispatch_tasks"
RESCUE = "backend.tasks.jobs.rescue_stale_tasks"
EXPIRE = "backend.tasks.jobs.expire_overdue_tasks"
RUN = "backend.tasks.jobs.run_task"


def record(logger: str, msg: str, args, level: int = logging.INFO) -> logging.LogRecord:
    # As Celery logs them: beat with two arguments, the worker with one dict.
    return logging.getLogger(logger).makeRecord(logger, level, __file__, 1, msg, args, None)


def received(name: str) -> logging.LogRecord:
    return record("celery.worker.strategy", LOG_RECEIVED, ({"id": "i", "name": name},))


def succeeded(name: str, result: str) -> logging.LogRecord:
    args = {"id": "i", "name": name, "return_value": result, "runtime": 0.01}
    return record("celery.app.trace", LOG_SUCCESS, (args,))


def sent_by_beat(entry: str, task: str) -> logging.LogRecord:
    return record("celery.beat", "Scheduler: Sending due task %s (%s)", (entry, task))


@pytest.fixture
def root_at_info():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


@pytest.mark.usefixtures("root_at_info")
def test_a_sweep_that_did_nothing_is_not_logged():
    kept = QuietSweeps().filter
    assert not kept(sent_by_beat("tasks.dispatch", DISPATCH))
    assert not kept(received(DISPATCH))
    assert not kept(succeeded(DISPATCH, "{'released': 0, 'sent': 0, 'due': 0}"))
    assert not kept(succeeded(EXPIRE, "0"))
    assert not kept(succeeded(RESCUE, "{'requeued': 0, 'failed': 0}"))


@pytest.mark.usefixtures("root_at_info")
def test_what_a_sweep_did_a_failure_and_every_other_task_are_logged():
    kept = QuietSweeps().filter
    assert kept(succeeded(DISPATCH, "{'released': 0, 'sent': 2, 'due': 2}"))
    assert kept(succeeded(EXPIRE, "3"))
    assert kept(succeeded(RESCUE, "{'requeued': 1, 'dispatch': {'sent': 1, 'due': 1}}"))
    assert kept(succeeded(EXPIRE, "<not a literal>"))
    failed = record("celery.app.trace", "Task %(name)s[%(id)s] raised", ({"name": EXPIRE},))
    failed.levelno = logging.ERROR
    assert kept(failed)
    # A user's task, a schedule firing, and anything else Celery says.
    assert kept(received(RUN)) and kept(succeeded(RUN, "'completed'"))
    assert kept(received("backend.schedules.jobs.fire_schedule"))
    assert kept(sent_by_beat("schedule 1", "backend.schedules.jobs.fire_schedule"))
    assert kept(record("celery.beat", "beat: Starting...", ()))
    assert kept(record("celery.beat", ValueError("not a string"), ("x", DISPATCH)))
    assert kept(record("celery.apps.worker", "%s ready.", ("maintenance@host",)))


def test_with_log_level_debug_every_line_is_kept():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert QuietSweeps().filter(received(DISPATCH))
        assert QuietSweeps().filter(succeeded(EXPIRE, "0"))
    finally:
        root.setLevel(level)


def test_the_console_handler_uses_it():
    from django.conf import settings

    assert "quiet_sweeps" in settings.LOGGING["handlers"]["console"]["filters"]
