"""End to end with a real worker on the configured broker: messages wait in the queue while
no worker runs (and /health/ says degraded), then the worker drains them, is counted online,
and /health/ is ok again."""

import pytest

from backend.ops import broker
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.processes import wait_for

from .conftest import counted

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _stats(client) -> dict:
    broker.reset_cache()  # read the broker now, not the few seconds old figures
    response = client.get("/api/admin/stats/")
    assert response.status_code == 200
    return response.json()


def test_queue_depth_and_workers_follow_a_real_worker(
    cluster, user, staff, client_for, patient_broker_reads
):
    owner, admin = client_for(user), client_for(staff)
    for numbers in ([1, 2], [3, 4], [5, 6]):
        response = owner.post(
            "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": numbers}}, format="json"
        )
        assert response.status_code == 201, response.content

    before = counted(lambda: _stats(admin), "workers_online")
    assert before["queue_depth"]["tasks"] == 3
    assert before["by_status"]["pending"] == 3
    assert before["oldest_pending_age"] >= 0
    assert before["workers_online"] == 0
    health = counted(lambda: admin.get("/health/").json(), "workers")
    assert health["status"] == "degraded" and health["workers"] == 0

    cluster.start_worker()
    wait_for(
        lambda: Task.objects.filter(status=TaskStatus.COMPLETED).count() == 3,
        timeout=60,
        what="the worker to complete the three tasks",
    )

    # The "no worker" kept from before is not trusted: the new worker counts at once.
    health = counted(lambda: admin.get("/health/").json(), "workers")
    assert health["status"] == "ok" and health["workers"] == 1
    assert "reason" not in health

    after = counted(lambda: _stats(admin), "workers_online")
    assert after["queue_depth"]["tasks"] == 0
    assert after["by_status"]["completed"] == 3 and after["by_status"]["pending"] == 0
    assert after["oldest_pending_age"] is None
    assert after["run_times"]["sum"]["count"] == 3
    assert sum(minute["completed"] for minute in after["throughput"]) == 3
    assert after["workers_online"] == 1
    (worker,) = after["workers"]
    assert worker["name"].startswith("e2e-")
    assert worker["queues"] == ["long", "maintenance", "tasks"]
    assert worker["active"] == 0


def test_the_maintenance_worker_answers_while_a_sweep_runs(cluster):
    """Run as the Procfile runs it. With ``--pool=solo`` a sweep ran in the thread that
    answers ``inspect``: while one waited on a lock (or a long expiry ran), /health/ and
    /metrics counted the worker as gone and warned that no sweep ran."""
    from pathlib import Path

    from django.conf import settings
    from django.db import connection, transaction

    from backend.tasks.jobs import expire_overdue_tasks

    procfile = (Path(settings.BASE_DIR) / "Procfile").read_text()
    (line,) = [line for line in procfile.splitlines() if line.startswith("maintenance:")]
    pool = [option for option in line.split() if option.startswith(("--pool", "--concurrency"))]
    worker = cluster.start_worker(("maintenance",), *pool)
    name = worker.log_path.stem

    def busy_and_answering():
        for seen in broker.read_workers(1.0):
            if seen["name"].startswith(f"{name}@") and seen["active"]:
                return seen
        return None

    with transaction.atomic(), connection.cursor() as cursor:
        # The sweep waits on the table: PostgreSQL's lock, or SQLite's write lock (which
        # this transaction holds from its start) for up to its busy timeout of 20 s.
        if connection.vendor == "postgresql":
            cursor.execute("LOCK TABLE tasks_task IN ACCESS EXCLUSIVE MODE")
        expire_overdue_tasks.apply_async()
        seen = wait_for(busy_and_answering, timeout=15, interval=0.2, what="the busy worker")
    assert seen["queues"] == ["maintenance"]
