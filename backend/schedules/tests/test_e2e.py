"""End to end: real beat and worker processes fire a schedule created over HTTP. Waits poll
the database with a deadline; nothing sleeps for a fixed time."""

import subprocess

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from backend.schedules.models import Schedule, ScheduleRun
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests import processes
from backend.tasks.tests.processes import Cluster, purge_filesystem_broker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_cluster(transactional_db, tmp_path, settings):
    """Worker and beat that accept one-second schedules (SCHEDULE_MIN_INTERVAL=1)."""
    settings.SCHEDULE_MIN_INTERVAL = 1
    purge_filesystem_broker()
    running = Cluster(tmp_path, extra_env={"SCHEDULE_MIN_INTERVAL": "1"})
    yield running
    running.stop()


def test_beat_fires_a_schedule_repeatedly_and_the_worker_runs_its_tasks(
    fast_cluster, user, client_for
):
    fast_cluster.start_worker()
    beat = fast_cluster.start_beat()
    # django-celery-beat notices changes from its second look at the database on; a
    # schedule written before that waits for its full reload (5 minutes). Beat has looked
    # twice once it has sent a sweep on two ticks.
    wait_for(
        lambda: beat.log().count("Sending due task tasks.dispatch") >= 2,
        timeout=60,
        what="beat's second tick",
    )
    client = client_for(user)

    response = client.post(
        "/api/schedules/",
        {"task_type": "sum", "input_data": {"numbers": [2, 3]}, "interval_seconds": 1},
        format="json",
    )
    assert response.status_code == 201, response.content
    schedule_id = response.json()["id"]

    def two_completed():
        done = Task.objects.filter(
            owner=user, status=TaskStatus.COMPLETED, name="sum", input_data={"numbers": [2, 3]}
        )
        return done.count() >= 2 and list(done)

    try:
        tasks = wait_for(two_completed, timeout=90, interval=0.2, what="two fired tasks done")
    except AssertionError:
        print(fast_cluster.logs())
        raise
    assert all(task.result == {"result": 5} for task in tasks)
    runs = ScheduleRun.objects.filter(schedule_id=schedule_id, task__isnull=False)
    assert {run.task_id for run in runs} >= {task.pk for task in tasks}
    assert all(run.message_id for run in runs), "each run names the beat message"

    body = client.get(f"/api/schedules/{schedule_id}/").json()
    assert body["total_runs"] >= 2 and body["last_run_at"]
    listed = client.get(f"/api/schedules/{schedule_id}/runs/").json()
    assert listed["count"] >= 2 and listed["results"][-1]["outcome"] == "created"

    periodic_task_id = body["periodic_task"]
    assert client.delete(f"/api/schedules/{schedule_id}/").status_code == 204
    assert not Schedule.objects.filter(pk=schedule_id).exists()
    assert not PeriodicTask.objects.filter(pk=periodic_task_id).exists()


def test_a_second_beat_stands_by_and_takes_over_once_the_first_stops(
    fast_cluster, user, client_for
):
    """Two beats on one database would each fire every schedule (SPEC §7: each firing
    creates one task): the second waits while the first holds the schedules' lock, sends
    nothing, and fires them once the first is gone (killed here, so its lock goes with it)."""
    fast_cluster.start_worker()
    first = fast_cluster.start_beat()
    first.wait_for_log("this beat holds the schedules' lock")
    second = fast_cluster.start_beat("beat-2")
    second.wait_for_log("this one stands by")
    wait_for(
        lambda: first.log().count("Sending due task tasks.dispatch") >= 2,
        timeout=60,
        what="beat's second tick",
    )
    response = client_for(user).post(
        "/api/schedules/",
        {"task_type": "sum", "input_data": {"numbers": [1, 1]}, "interval_seconds": 1},
        format="json",
    )
    assert response.status_code == 201, response.content
    schedule_id = response.json()["id"]
    sent = f"Sending due task schedule {schedule_id}"

    def runs() -> int:
        return ScheduleRun.objects.filter(schedule_id=schedule_id).count()

    wait_for(lambda: runs() >= 4, timeout=60, interval=0.2, what="four firings")
    assert "Sending due task" not in second.log(), second.log()[-3000:]

    first.kill()
    second.wait_for_log("this beat holds the schedules' lock", timeout=30)
    before = runs()
    wait_for(lambda: runs() >= before + 3, timeout=60, interval=0.2, what="firings after it")
    assert second.log().count(sent) >= 3

    # At most one run per message sent, by whichever beat sent it (a message overtaken by a
    # later firing, e.g. the first beat's last one, is skipped): no firing was doubled.
    assert runs() <= first.log().count(sent) + second.log().count(sent)


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="PostgreSQL's driver holds a lock through a query, which a handler waited on",
)
def test_beat_stops_on_a_sigterm_that_comes_during_one_of_its_queries(fast_cluster):
    """Celery's handler wrote the schedule inside the handler, on the connection whose
    query the signal had interrupted: it waited for ever on that query's lock, and beat
    never stopped. Its query is held here (a table lock) when the SIGTERM comes."""
    import psycopg

    beat = fast_cluster.start_beat()
    wait_for(
        lambda: beat.log().count("Sending due task tasks.dispatch") >= 2,
        timeout=60,
        what="beat's second tick",
    )
    with psycopg.connect(processes.test_database_url()) as blocker:
        blocker.execute("LOCK TABLE django_celery_beat_periodictasks IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(processes.test_database_url(), autocommit=True) as watcher:

            def beat_waits_in_a_query() -> bool:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE %s",
                    ["%django_celery_beat_periodictasks%"],
                ).fetchone()
                return row[0] > 0

            wait_for(beat_waits_in_a_query, timeout=30, what="beat waiting in its query")
            beat.terminate()
            try:
                beat.proc.wait(timeout=20)  # the table still locked: its query is cancelled
            except subprocess.TimeoutExpired:
                pytest.fail(f"beat still up 20 s after SIGTERM:\n{beat.log()[-3000:]}")
        blocker.rollback()
