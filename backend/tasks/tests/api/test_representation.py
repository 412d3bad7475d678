"""The task representation every response uses is built directly (TaskSerializer's
to_representation); it must say exactly what DRF's generic ModelSerializer path says for
the same fields, for every kind of task and however the task was loaded."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from backend.tasks.api.serializers import TaskSerializer
from backend.tasks.models import Task, TaskPriority, TaskStatus
from backend.users.tests.factories import UserFactory

from ..factories import TaskFactory

pytestmark = pytest.mark.django_db


def rendered(data) -> dict:
    """As the JSON renderer writes it (UUIDs and the like as text)."""
    from rest_framework.utils.encoders import JSONEncoder

    return json.loads(json.dumps(data, cls=JSONEncoder))


def generic(task, context) -> dict:
    serializer = TaskSerializer(context=context)
    return serializers.ModelSerializer.to_representation(serializer, task)


def variety(user, other):
    now = datetime.now(UTC).replace(microsecond=123456)
    return [
        TaskFactory(owner=user),
        TaskFactory(owner=user, task_type="manual", assignee=other, input_data={}),
        TaskFactory(owner=user, task_type="manual", assignee=None, input_data={}),
        TaskFactory(
            owner=user,
            status=TaskStatus.COMPLETED,
            result={"result": 6, "nested": [1, "ü", None]},
            progress=100,
            priority=TaskPriority.URGENT,
            started_at=now - timedelta(seconds=3),
            completed_at=now,
            attempts=2,
        ),
        TaskFactory(
            owner=user,
            status=TaskStatus.FAILED,
            error="ValueError: bad",
            deadline=now + timedelta(days=1),
            run_at=now + timedelta(hours=1),
            priority=TaskPriority.LOW,
            description="multi\nline ✓",
        ),
        TaskFactory(owner=user, status=TaskStatus.SCHEDULED, run_at=now.replace(microsecond=0)),
        TaskFactory(
            owner=user,
            task_type="report_generation",
            input_data={"report": "task_summary", "format": "json"},
            status=TaskStatus.COMPLETED,
            result={"file_id": "f", "download_url": "/api/files/f/download/", "rows": 2},
        ),
    ]


@pytest.mark.parametrize("with_request", [True, False])
def test_the_direct_representation_is_the_generic_one(with_request):
    user, other = UserFactory(), UserFactory()
    tasks = variety(user, other)
    request = APIRequestFactory().get("/api/tasks/", HTTP_HOST="127.0.0.1")
    context = {"request": request} if with_request else {}
    loaded = [
        # fresh from the database, with the users it names
        *Task.objects.select_related("owner", "assignee").order_by("created_at"),
        # or with their names alone, as the list reads them
        *Task.objects.annotate(
            owner_username=F("owner__username"), assignee_username=F("assignee__username")
        ).order_by("created_at"),
        # or as the services hand them back
        *tasks,
    ]
    assert len(loaded) == 3 * len(tasks)
    for task in loaded:
        fast = TaskSerializer(task, context=context).data
        assert rendered(fast) == rendered(generic(task, context))
        assert list(fast) == list(TaskSerializer.Meta.fields)
    if with_request:
        assert fast["url"] == f"http://127.0.0.1/api/tasks/{task.pk}/"


def test_a_page_of_tasks_is_the_generic_one_too():
    user, other = UserFactory(), UserFactory()
    variety(user, other)
    request = APIRequestFactory().get("/api/tasks/", HTTP_HOST="127.0.0.1")
    tasks = list(Task.objects.select_related("owner", "assignee").order_by("created_at"))
    fast = TaskSerializer(tasks, many=True, context={"request": request}).data
    assert rendered(fast) == [rendered(generic(task, {"request": request})) for task in tasks]


@pytest.mark.parametrize("with_request", [True, False])
def test_a_reports_download_url_is_absolute_as_the_files_own_is(with_request, settings):
    """It was the stored path ("/api/files/<id>/download/"), which a client following the
    result could not fetch, while GET /api/files/{id}/ gives the address whole."""
    settings.PUBLIC_BASE_URL = "https://tasks.example.com"
    task = variety(UserFactory(), UserFactory())[-1]
    request = APIRequestFactory().get("/api/tasks/", HTTP_HOST="127.0.0.1")
    context = {"request": request} if with_request else {}
    shown = TaskSerializer(task, context=context).data["result"]
    base = "http://127.0.0.1" if with_request else "https://tasks.example.com"
    assert shown == {"file_id": "f", "download_url": f"{base}/api/files/f/download/", "rows": 2}
    task.refresh_from_db()
    assert task.result["download_url"] == "/api/files/f/download/"  # stored as it was


def test_only_a_reports_download_url_is_made_absolute():
    """A manual task completed with {"download_url": "/my/path"} came back with the
    service's address in front of the path its assignee gave."""
    given = {"download_url": "/my/relative/path", "note": "x"}
    task = TaskFactory(
        owner=UserFactory(),
        task_type="manual",
        input_data={},
        status=TaskStatus.COMPLETED,
        result=given,
    )
    request = APIRequestFactory().get("/api/tasks/", HTTP_HOST="127.0.0.1")
    assert TaskSerializer(task, context={"request": request}).data["result"] == given
    assert TaskSerializer(task).data["result"] == given
