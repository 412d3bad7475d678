"""§8 figures from the database: counts, throughput, run-time percentiles, oldest pending."""

from datetime import timedelta
from statistics import quantiles

import pytest
from django.utils import timezone

from backend.ops import selectors
from backend.tasks.models import TaskStatus
from backend.tasks.tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def _percentile(values: list[float], p: float) -> float:
    """percentile_cont: linear interpolation at p * (n - 1)."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_counts_by_status_and_type_in_one_query(django_assert_num_queries):
    TaskFactory.create_batch(3, status=TaskStatus.PENDING, task_type="sum")
    TaskFactory.create_batch(2, status=TaskStatus.COMPLETED, task_type="sum")
    TaskFactory(status=TaskStatus.FAILED, task_type="reverse")

    with django_assert_num_queries(1):
        figures = selectors.counts()

    assert figures["by_status"] == {
        "scheduled": 0,
        "pending": 3,
        "running": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert figures["by_type"]["sum"] == 5
    assert figures["by_type"]["reverse"] == 1
    assert figures["by_type"]["countdown"] == 0  # every registered type is listed


def test_throughput_per_minute_over_the_last_hour(django_assert_num_queries):
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    for ago, status in [(0, "completed"), (0, "completed"), (0, "failed"), (5, "completed")]:
        TaskFactory(status=status, completed_at=now - timedelta(minutes=ago))
    TaskFactory(status="completed", completed_at=now - timedelta(minutes=61))  # too old
    TaskFactory(status="cancelled", completed_at=now)  # not a finished run

    with django_assert_num_queries(1):
        series = selectors.throughput(now)

    assert len(series) == 61
    assert series[0]["minute"] == minute - timedelta(minutes=60)
    assert series[-1] == {"minute": minute, "completed": 2, "failed": 1}
    assert series[-6] == {"minute": minute - timedelta(minutes=5), "completed": 1, "failed": 0}
    assert sum(slot["completed"] + slot["failed"] for slot in series) == 4


def test_run_time_percentiles_match_percentile_cont(django_assert_num_queries):
    now = timezone.now()
    seconds = [0.5, 1.0, 1.25, 2.0, 3.5, 4.0, 10.0]
    for value in seconds:
        TaskFactory(
            status="completed",
            task_type="countdown",
            started_at=now - timedelta(minutes=5, seconds=value),
            completed_at=now - timedelta(minutes=5),
        )
    TaskFactory(
        status="completed",
        task_type="sum",
        started_at=now - timedelta(seconds=2),
        completed_at=now - timedelta(seconds=1),
    )
    # Outside the figure: older than 24 h, failed, never started.
    TaskFactory(
        status="completed",
        task_type="countdown",
        started_at=now - timedelta(days=2, seconds=500),
        completed_at=now - timedelta(days=2),
    )
    TaskFactory(status="failed", task_type="countdown", started_at=now, completed_at=now)

    with django_assert_num_queries(1):
        figures = selectors.run_times(now)

    assert set(figures) == {"countdown", "sum"}
    assert figures["countdown"]["count"] == 7
    assert figures["countdown"]["p50"] == pytest.approx(_percentile(seconds, 0.5), abs=1e-3)
    assert figures["countdown"]["p95"] == pytest.approx(_percentile(seconds, 0.95), abs=1e-3)
    assert figures["countdown"]["p50"] == pytest.approx(
        quantiles(seconds, n=2, method="inclusive")[0], abs=1e-3
    )
    assert figures["sum"] == {
        "count": 1,
        "p50": pytest.approx(1.0, abs=1e-3),
        "p95": pytest.approx(1.0, abs=1e-3),
    }


def test_oldest_pending_age():
    now = timezone.now()
    assert selectors.oldest_pending_age(now) is None
    old = TaskFactory(status="pending")
    TaskFactory(status="pending")
    TaskFactory(status="running")
    type(old).objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=7))
    TaskFactory(status="completed").__class__.objects.filter(status="completed").update(
        created_at=now - timedelta(days=3)
    )

    assert selectors.oldest_pending_age(now) == pytest.approx(420, abs=0.01)


def test_oldest_pending_age_is_a_workers_backlog():
    """A manual task pending for days (a person's to-do) pinned the figure at days; a task
    released from its run_at, or retried after a backoff, had waited since it was created."""
    now = timezone.now()
    manual = TaskFactory(status="pending", task_type="manual")
    released = TaskFactory(status="pending")
    type(manual).objects.filter(pk=manual.pk).update(created_at=now - timedelta(days=3))
    type(released).objects.filter(pk=released.pk).update(
        created_at=now - timedelta(days=1), run_at=now - timedelta(seconds=30)
    )
    assert selectors.oldest_pending_age(now) == pytest.approx(30, abs=0.01)
