"""§8 ``GET /api/admin/stats/``: staff only, every figure, the broker's read from the broker."""

import time

import pytest

from backend.ops import broker
from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory

from .conftest import counted

STATS = "/api/admin/stats/"

pytestmark = pytest.mark.django_db


def test_anonymous_gets_401(api_client):
    response = api_client.get(STATS)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_non_staff_gets_403(user, client_for):
    response = client_for(user).get(STATS)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_staff_gets_every_figure(
    staff, client_for, django_assert_num_queries, patient_broker_reads
):
    for status in TaskStatus.values:
        TaskFactory(status=status, task_type="sum")
    TaskFactory(status="pending", task_type="countdown")

    with django_assert_num_queries(4):  # one per database figure
        response = client_for(staff).get(STATS)

    assert response.status_code == 200
    body = response.json()
    assert body["by_status"] == {
        "scheduled": 1,
        "pending": 2,
        "running": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }
    assert body["by_type"]["sum"] == 6 and body["by_type"]["countdown"] == 1
    assert len(body["throughput"]) == 61
    assert body["oldest_pending_age"] >= 0
    # No worker runs and nothing was sent: the broker answers, with empty queues.
    body = counted(lambda: client_for(staff).get(STATS).json())
    assert body["queue_depth"] == {"tasks": 0, "long": 0, "maintenance": 0}
    assert body["workers_online"] == 0 and body["workers"] == []


def test_queue_depth_counts_waiting_messages_of_every_priority(
    staff, client_for, patient_broker_reads
):
    from backend.celery import app

    with app.connection_for_write() as conn, conn.Producer() as producer:
        for priority in (0, 3, 6, 9):  # every priority step of Redis, every file prefix
            producer.publish(
                {"probe": priority},
                exchange="long",
                routing_key="long",
                priority=priority,
                declare=[q for q in app.conf.task_queues if q.name == "long"],
            )
    try:
        body = client_for(staff).get(STATS).json()
        assert body["queue_depth"]["long"] == 4
        assert body["queue_depth"]["tasks"] == 0
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("long")


def test_a_hung_broker_costs_about_a_second_and_is_reported_unknown(
    broker_hung, blackhole, staff, client_for, settings
):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{blackhole.port}/0"
    started = time.monotonic()
    body = client_for(staff).get(STATS).json()
    elapsed = time.monotonic() - started

    assert body["queue_depth"] is None
    assert body["workers_online"] is None and body["workers"] is None
    assert body["by_status"]["pending"] == 0  # the database figures are still there
    assert elapsed < 2.5, elapsed  # both broker reads bounded by OPS_BROKER_TIMEOUT (1 s)
    # Kept: a second view within the cache period does not wait again.
    started = time.monotonic()
    client_for(staff).get(STATS)
    assert time.monotonic() - started < 0.5
    assert broker.queue_depths() is None


def test_the_stats_take_the_json_suffix_every_other_route_takes(staff, client_for):
    response = client_for(staff).get("/api/admin/stats.json")
    assert response.status_code == 200 and "by_status" in response.json()
