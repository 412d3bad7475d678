"""The limit under real concurrency: many threads, each with its own database connection."""

import pytest

from backend.common.errors import Conflict
from backend.common.tests.concurrency import at_once
from backend.tasks import services
from backend.tasks.models import ACTIVE_STATUSES, Task, TaskStatus
from backend.users.tests.factories import UserFactory

from .factories import TaskFactory

pytestmark = pytest.mark.django_db(transaction=True)

CONCURRENT = 50


def race(action, count=CONCURRENT) -> dict[str, int]:
    """Run ``action(i)`` in ``count`` threads released at once; count outcomes."""
    outcomes = {"ok": 0, "limit": 0, "other": 0}
    errors = []
    for outcome in at_once(action, count):
        if isinstance(outcome, Conflict):
            key = "limit" if outcome.code == "active_task_limit" else "other"
        elif isinstance(outcome, Exception):
            key = "other"
            errors.append(repr(outcome))
        else:
            key = "ok"
        outcomes[key] += 1
    assert not errors, errors[:3]
    return outcomes


def test_fifty_concurrent_creates_make_exactly_five(settings):
    user = UserFactory()
    outcomes = race(lambda i: services.task_create(owner=user, task_type="manual", name=f"t{i}"))
    assert outcomes == {"ok": 5, "limit": 45, "other": 0}
    assert Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count() == 5


def test_concurrent_assigns_to_one_user_stop_at_five():
    target = UserFactory()
    owners = UserFactory.create_batch(CONCURRENT)
    tasks = [TaskFactory(owner=o, task_type="manual", input_data={}) for o in owners]
    outcomes = race(lambda i: services.task_assign(task=tasks[i], actor=owners[i], assignee=target))
    assert outcomes["ok"] == 5 and outcomes["limit"] == CONCURRENT - 5
    assert Task.objects.filter(assignee=target, status__in=ACTIVE_STATUSES).count() == 5


def test_concurrent_retries_stop_at_five():
    user = UserFactory()
    failed = TaskFactory.create_batch(20, owner=user, status=TaskStatus.FAILED)
    outcomes = race(lambda i: services.task_retry(task=failed[i], actor=user), count=20)
    assert outcomes["ok"] == 5 and outcomes["limit"] == 15
    assert Task.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count() == 5
