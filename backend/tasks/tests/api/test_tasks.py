"""The task endpoints over HTTP: shapes, filters, visibility, actions, errors."""

import json
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.utils import timezone

from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TASK_FIELDS = {
    "id", "url", "name", "description", "task_type", "input_data", "priority", "status", "progress",
    "result", "error", "owner", "owner_username", "assignee", "assignee_username", "deadline",
    "run_at", "attempts", "created_at", "updated_at", "started_at", "completed_at",
}  # fmt: skip


@pytest.fixture
def client(client_for, user):
    return client_for(user)


def url(task=None, action=None) -> str:
    if task is None:
        return "/api/tasks/"
    base = f"/api/tasks/{task if isinstance(task, str) else task.pk}/"
    return f"{base}{action}/" if action else base


# --- create -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/tasks/", "/api/tasks/create/"])
def test_create_returns_the_full_task(client, user, path):
    response = client.post(
        path,
        {"task_type": "sum", "input_data": {"numbers": [1, 2, 3]}, "priority": "high"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == TASK_FIELDS
    assert body["status"] == "pending" and body["priority"] == "high"
    assert body["owner"] == str(user.pk) and body["assignee"] == str(user.pk)
    assert body["owner_username"] == user.username and body["progress"] == 0
    assert Task.objects.get(pk=body["id"]).input_data == {"numbers": [1, 2, 3]}


def test_create_needs_authentication(api_client):
    response = api_client.post(url(), {"task_type": "sum"}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input_data": {"numbers": [1]}}, "task_type"),
        ({"task_type": "nope", "input_data": {}}, "task_type"),
        ({"task_type": "sum", "input_data": {"numbers": [True]}}, "input_data"),
        ({"task_type": "sum", "input_data": {"numbers": [1e308, 1e308]}}, "input_data"),
        ({"task_type": "sum", "input_data": [1, 2]}, "input_data"),
        ({"task_type": "sum", "input_data": "x"}, "input_data"),
        ({"task_type": "sum"}, "input_data"),
        ({"task_type": "countdown", "input_data": {"seconds": 0}}, "input_data"),
        ({"task_type": "countdown", "input_data": {"seconds": False}}, "input_data"),
        ({"task_type": "reverse", "input_data": {"data": 5}}, "input_data"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}, "priority": "meh"}, "priority"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}, "deadline": "soon"}, "deadline"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}, "assignee": "x"}, "assignee"),
        (
            {
                "task_type": "sum",
                "input_data": {"numbers": [1]},
                "assignee": "00000000-0000-0000-0000-000000000000",
            },
            "assignee",
        ),
    ],
)
def test_create_rejects_bad_input_with_field_errors(client, body, field):
    response = client.post(url(), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Task.objects.exists()


@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_the_inputs_errors_come_beside_another_fields(client, encoding):
    """A bad priority and an empty list of numbers: the second came only once the first
    was fixed, a request later."""
    body = {"task_type": "sum", "input_data": {"numbers": []}, "priority": "x"}
    if encoding == "multipart":
        body["input_data"] = json.dumps(body["input_data"])
    response = client.post(url(), body, format=encoding)
    assert response.status_code == 400
    errors = response.json()
    assert errors["priority"] and errors["input_data"] == {
        "numbers": ["This list may not be empty."]
    }
    assert not Task.objects.exists()
    body["priority"] = "high"  # the type's errors alone, as before
    assert client.post(url(), body, format=encoding).json()["input_data"] == errors["input_data"]


@pytest.mark.parametrize("given", [123, 1.5, True, ["x"], {"id": "x"}])
def test_an_assignee_given_as_anything_but_a_string_is_refused_as_such(client, given):
    """123 was read as the UUID it encodes and answered 'object does not exist', where a
    string that is no UUID said so."""
    body = {"task_type": "manual", "assignee": given}
    response = client.post(url(), body, format="json")
    assert response.status_code == 400, response.content
    kind = type(given).__name__
    assert response.json()["assignee"] == [f"A user's id is a UUID string, not {kind}."]
    assert not Task.objects.exists()


def test_a_create_refuses_an_unknown_key_naming_the_fields_it_takes(client):
    """A typo one level above input_data ("priorty") was dropped without a word: the task
    was created with the default priority."""
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "priorty": "high"}
    response = client.post(url(), body, format="json")
    assert response.status_code == 400
    assert response.json()["priorty"] == [
        "Unknown field. The fields taken here: task_type, input_data, name, description, "
        "priority, deadline, run_at, assignee, callback_url."
    ]
    # Beside the other fields' errors.
    response = client.post(url(), {**body, "priority": "meh"}, format="json")
    assert response.status_code == 400 and {"priorty", "priority"} <= set(response.json())
    # A form or a multipart body alike (its CSRF token aside).
    form = {"task_type": "sum", "input_data": '{"numbers": [1]}', "priorty": "high"}
    for encoded in ("multipart", "form"):
        if encoded == "multipart":
            response = client.post(url(), {**form, "csrfmiddlewaretoken": "x"}, format="multipart")
        else:
            response = client.post(
                url(), urlencode(form), content_type="application/x-www-form-urlencoded"
            )
        assert response.status_code == 400 and set(response.json()) >= {"priorty"}
    assert not Task.objects.exists()


def test_a_create_ignores_the_keys_of_a_task_as_answered(client, user):
    """A copy of an answer sent back (its id, status, result, ...) creates a task as the
    fields taken say; what the service sets is not taken from the client."""
    answer = client.post(url(), {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json")
    copy = {**answer.json(), "status": "completed", "result": 99, "owner": str(uuid.uuid4())}
    response = client.post(url(), copy, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["id"] != copy["id"] and created["status"] in ("pending", "running", "completed")
    assert created["owner"] == str(user.pk) and created["result"] in (None, 1)


def test_input_errors_name_the_inner_field(client):
    response = client.post(
        url(), {"task_type": "sum", "input_data": {"numbers": [1, "2"]}}, format="json"
    )
    assert response.status_code == 400
    assert "numbers" in response.json()["input_data"]


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_a_number_beyond_a_double_is_400_saying_so(client, number):
    body = '{"task_type": "sum", "input_data": {"numbers": [1, NUMBER]}}'.replace("NUMBER", number)
    response = client.post(url(), body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["input_data"][0].startswith("Numbers must be finite")
    assert not Task.objects.exists()


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"numbers": [1e999]}', "Numbers must be finite"),
        ('{"numbers": [1], "x": "a\\u0000b"}', "JSON strings may not contain NUL"),
    ],
)
def test_a_form_input_the_database_cannot_store_is_a_400(client, encoding, text, message):
    """A form's JSON text was read without the checks a JSON body gets: 1e999 reached
    PostgreSQL as infinity, a 500 (DataError), with the schedule's create too."""
    data = {"task_type": "sum", "input_data": text}
    if encoding == "urlencoded":
        response = client.post(
            url(), urlencode(data), content_type="application/x-www-form-urlencoded"
        )
    else:
        response = client.post(url(), data, format="multipart")
    assert response.status_code == 400
    assert response.json()["input_data"][0].startswith(message)
    assert not Task.objects.exists()


def test_a_completion_result_the_database_cannot_store_is_a_400(client, user):
    task = Task.objects.create(
        owner=user, assignee=user, name="m", task_type="manual", status="running"
    )
    for body in ('result={"x": 1e999}', 'result={"x": NaN}'):
        response = client.post(
            f"{url()}{task.pk}/complete/", body, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 400, body
        assert "result" in response.json()
    task.refresh_from_db()
    assert task.status == "running"


KEYS = [f"unknown{i:05}" for i in range(3_000)]


@pytest.mark.parametrize(
    ("body", "inside"),
    [
        ({"task_type": "sum", "input_data": {"numbers": [""] * 30_003}}, "input_data"),
        ({"task_type": "sum", "input_data": {"numbers": [1], **dict.fromkeys(KEYS)}}, "input_data"),
        ({"task_type": "sum", "input_data": {"numbers": [1]}, **dict.fromkeys(KEYS)}, None),
    ],
    ids=["a list past its length", "unknown input keys", "unknown keys"],
)
def test_a_huge_bad_body_gets_a_short_answer(client, body, inside):
    """Every item of a list past its length was checked, and every bad one answered (2.6
    million empty strings held a web worker two minutes and 5 GB, to answer 165 MB); every
    unknown key was named (400,000: 15 s, 58 MB). A list too long is refused as such; 20
    keys are named, and how many more there are."""
    response = client.post(url(), body, format="json")
    assert response.status_code == 400
    assert len(response.content) < 5_000, len(response.content)
    errors = response.json()[inside] if inside else response.json()
    if len(body["input_data"]["numbers"]) > 10_000:
        assert errors == {"numbers": ["Ensure this field has no more than 10000 elements."]}
    else:
        assert sum(key.startswith("unknown") for key in errors) == 20
        assert errors["non_field_errors"] == ["And 2980 more fields not taken here."]
    assert not Task.objects.exists()


def test_a_completion_or_an_assignment_refuses_an_unknown_key(client, user, other_user):
    """{"result": 1, "foo": 2} completed the task with result 1 and dropped foo (meant, most
    likely, to be part of the result), while a create refuses an unknown key."""
    task = Task.objects.create(
        owner=user, assignee=user, name="m", task_type="manual", status="running"
    )
    response = client.post(url(task, "complete"), {"result": 1, "foo": 2}, format="json")
    assert response.status_code == 400
    assert response.json()["foo"] == ["Unknown field."]
    response = client.post(url(task, "assign"), {"asignee": str(other_user.pk)}, format="json")
    assert response.status_code == 400
    assert response.json()["asignee"] == ["Unknown field."]
    task.refresh_from_db()
    assert (task.status, task.assignee_id) == ("running", user.pk)
    response = client.post(url(task, "complete"), {"result": {"foo": 2}}, format="json")
    assert response.status_code == 200


@pytest.mark.parametrize("body", ["result=", "result=null"])
def test_a_completion_forms_empty_or_null_result_box_means_no_result(client, user, body):
    """The browsable API's completion form shows ``null`` in the result box; clearing it
    said "Value must be valid JSON"."""
    task = Task.objects.create(
        owner=user, assignee=user, name="m", task_type="manual", status="running"
    )
    response = client.post(
        f"{url()}{task.pk}/complete/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.json()
    task.refresh_from_db()
    assert task.status == "completed" and task.result is None


def test_rule_errors_are_400_with_a_code(client):
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "deadline": past}
    response = client.post(url(), body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "deadline_in_past" and response.json()["detail"]
    response = client.post(
        url(), {"task_type": "sum", "input_data": {"numbers": [1]}, "assignee": None}, format="json"
    )
    assert response.status_code == 400 and response.json()["code"] == "assignee_required"


def test_malformed_json_is_400(client):
    response = client.post(url(), "{not json", content_type="application/json")
    assert response.status_code == 400


def test_sixth_active_task_is_409(client, user):
    for _ in range(5):
        response = client.post(
            url(), {"task_type": "countdown", "input_data": {"seconds": 60}}, format="json"
        )
        assert response.status_code == 201
    response = client.post(
        url(), {"task_type": "countdown", "input_data": {"seconds": 60}}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "active_task_limit" and response.json()["detail"]
    assert Task.objects.filter(assignee=user).count() == 5


def test_unassigned_manual_task(client):
    response = client.post(
        url(), {"task_type": "manual", "name": "Review", "assignee": None}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["assignee"] is None and response.json()["name"] == "Review"


def test_run_at_in_the_future_schedules(client):
    run_at = (timezone.now() + timedelta(hours=1)).isoformat()
    response = client.post(
        url(), {"task_type": "sum", "input_data": {"numbers": [1]}, "run_at": run_at}, format="json"
    )
    assert response.status_code == 201 and response.json()["status"] == "scheduled"


# --- read and visibility ----------------------------------------------------------------


def test_owner_and_assignee_see_a_task_others_get_404(client_for, user, other_user, staff):
    task = TaskFactory(owner=user, assignee=other_user)
    stranger = UserFactory()
    assert client_for(user).get(url(task)).status_code == 200
    assert client_for(other_user).get(url(task)).status_code == 200
    assert client_for(staff).get(url(task)).status_code == 200
    assert client_for(stranger).get(url(task)).status_code == 404
    assert client_for(stranger).post(url(task, "cancel")).status_code == 404
    assert client_for(stranger).delete(url(task)).status_code == 404
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING


def test_not_a_uuid_is_404(client):
    assert client.get(url("not-a-uuid")).status_code == 404
    assert client.get(url("00000000-0000-0000-0000-000000000000")).status_code == 404


def test_list_shows_only_visible_tasks(client_for, user, other_user, staff):
    mine = TaskFactory(owner=user)
    assigned_to_me = TaskFactory(owner=other_user, assignee=user)
    TaskFactory(owner=other_user)
    body = client_for(user).get(url()).json()
    assert body["count"] == 2
    assert {t["id"] for t in body["results"]} == {str(mine.pk), str(assigned_to_me.pk)}
    assert client_for(staff).get(url()).json()["count"] == 3


def test_pagination(client, user):
    TaskFactory.create_batch(12, owner=user, status=TaskStatus.COMPLETED)
    body = client.get(url()).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 12 and len(body["results"]) == 10 and body["next"]
    assert len(client.get(url(), {"page_size": 5, "page": 3}).json()["results"]) == 2
    assert len(client.get(url(), {"page_size": 1000}).json()["results"]) == 12
    assert client.get(url(), {"page": 99}).status_code == 404


def test_list_queries_do_not_grow_with_the_page(
    client, user, other_user, django_assert_max_num_queries
):
    for i in range(30):
        TaskFactory(owner=user, assignee=other_user if i % 2 else user)

    def count_queries(page_size):
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url(), {"page_size": page_size})
        assert response.status_code == 200 and len(response.json()["results"]) == page_size
        return len(ctx.captured_queries)

    assert count_queries(2) == count_queries(25)
    # The count and the rows; on PostgreSQL the page's ids come first (two index halves).
    with django_assert_max_num_queries(3 if connection.vendor == "postgresql" else 2):
        client.get(url(), {"page_size": 25})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "completed"}, {"done"}),
        ({"status": "completed,failed"}, {"done", "broken"}),
        ({"task_type": "countdown"}, {"slow"}),
        ({"priority": "urgent"}, {"slow"}),
        ({"priority": "urgent,low"}, {"slow", "broken"}),
        ({"assignee": "none"}, {"todo"}),
        ({"search": "QUARTERLY"}, {"done"}),
        ({"search": "invoice"}, {"broken"}),
    ],
)
def test_filters(client, user, params, expected):
    TaskFactory(owner=user, name="done", description="quarterly report", status="completed")
    TaskFactory(
        owner=user, name="broken", description="invoice run", status="failed", priority="low"
    )
    TaskFactory(owner=user, name="slow", task_type="countdown", priority="urgent")
    TaskFactory(owner=user, name="todo", task_type="manual", assignee=None, input_data={})
    response = client.get(url(), params)
    assert response.status_code == 200
    assert {t["name"] for t in response.json()["results"]} == expected


def test_filter_by_user_refs(client, user, other_user):
    TaskFactory(owner=user, name="mine")
    TaskFactory(owner=user, assignee=other_user, name="delegated")
    TaskFactory(owner=other_user, assignee=user, name="given")
    names = lambda params: {t["name"] for t in client.get(url(), params).json()["results"]}  # noqa: E731
    assert names({"assignee": "me"}) == {"mine", "given"}
    assert names({"assignee": str(other_user.pk)}) == {"delegated"}
    assert names({"owner": "me"}) == {"mine", "delegated"}
    assert names({"owner": str(other_user.pk)}) == {"given"}
    # Every task has an owner: 'none' is refused, not an empty page.
    response = client.get(url(), {"owner": "none"})
    assert response.status_code == 400
    assert response.json()["detail"] == "owner: Give a user id (uuid) or 'me'."
    assert names({"assignee": "none"}) == set()


def test_date_filters(client, user):
    old = TaskFactory(owner=user, name="old", deadline=timezone.now() + timedelta(days=1))
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    TaskFactory(owner=user, name="new", deadline=timezone.now() + timedelta(days=30))
    cutoff = (timezone.now() - timedelta(days=5)).isoformat()
    names = lambda params: {t["name"] for t in client.get(url(), params).json()["results"]}  # noqa: E731
    assert names({"created_after": cutoff}) == {"new"}
    assert names({"created_before": cutoff}) == {"old"}
    week = (timezone.now() + timedelta(days=7)).isoformat()
    assert names({"deadline_before": week}) == {"old"}
    assert names({"deadline_after": week}) == {"new"}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"status": "completed,bogus"},
        {"priority": "top"},
        {"task_type": "nope"},
        {"assignee": "someone"},
        {"owner": "12"},
        {"created_after": "yesterday"},
        {"deadline_before": "2026-13-45"},
        {"ordering": "name"},
    ],
)
def test_invalid_filter_values_are_400(client, user, params):
    TaskFactory(owner=user)
    response = client.get(url(), params)
    assert response.status_code == 400, response.content
    assert set(response.json()) & set(params)


def test_ordering_by_priority_uses_rank(client, user):
    for priority in ("normal", "urgent", "low", "high"):
        TaskFactory(owner=user, name=priority, priority=priority)
    names = [t["name"] for t in client.get(url(), {"ordering": "-priority"}).json()["results"]]
    assert names == ["urgent", "high", "normal", "low"]
    names = [t["name"] for t in client.get(url(), {"ordering": "priority"}).json()["results"]]
    assert names == ["low", "normal", "high", "urgent"]


def test_ordering_by_other_fields(client, user):
    now = timezone.now()
    TaskFactory(owner=user, name="b", deadline=now + timedelta(days=2), status="running")
    TaskFactory(owner=user, name="a", deadline=now + timedelta(days=1), status="completed")
    first = lambda ordering: client.get(url(), {"ordering": ordering}).json()["results"][0]["name"]  # noqa: E731
    assert first("deadline") == "a" and first("-deadline") == "b"
    assert first("status") == "a" and first("-created_at") == "a"
    assert first("created_at") == "b"


@pytest.mark.parametrize("field", ["deadline", "completed_at"])
def test_tasks_without_the_field_come_last_either_way_on_every_database(client, user, field):
    """PostgreSQL put the tasks with no deadline (or not finished) last when ascending and
    first when descending; SQLite the other way round."""
    now = timezone.now()
    TaskFactory(owner=user, name="early", **{field: now + timedelta(hours=1)})
    TaskFactory(owner=user, name="none")
    TaskFactory(owner=user, name="late", **{field: now + timedelta(hours=2)})
    names = lambda ordering: [  # noqa: E731
        t["name"] for t in client.get(url(), {"ordering": ordering}).json()["results"]
    ]
    assert names(field) == ["early", "late", "none"]
    assert names(f"-{field}") == ["late", "early", "none"]


# --- edit and delete --------------------------------------------------------------------


def test_patch_editable_fields(client, user):
    task = TaskFactory(owner=user)
    deadline = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    response = client.patch(
        url(task),
        {"name": "renamed", "priority": "urgent", "deadline": deadline.isoformat()},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["name"] == "renamed" and response.json()["priority"] == "urgent"
    task.refresh_from_db()
    assert task.priority_rank == 3 and task.deadline == deadline


def test_patch_refuses_a_deadline_before_the_tasks_run_at(client, user):
    """As at create: a scheduled task given a deadline before its run_at would fail unrun.
    Nothing of the request is written."""
    run_at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    task = TaskFactory(owner=user, status=TaskStatus.SCHEDULED, run_at=run_at)
    early = (run_at - timedelta(hours=1)).isoformat()
    response = client.patch(url(task), {"deadline": early, "name": "x"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "run_at_after_deadline"
    task.refresh_from_db()
    assert task.deadline is None and task.name != "x"
    later = (run_at + timedelta(hours=1)).isoformat()
    assert client.patch(url(task), {"deadline": later}, format="json").status_code == 200
    task.refresh_from_db()
    assert task.deadline == run_at + timedelta(hours=1)


@pytest.mark.parametrize("field", ["status", "result", "progress", "task_type", "owner"])
def test_patch_refuses_other_fields(client, user, field):
    task = TaskFactory(owner=user)
    response = client.patch(url(task), {field: "completed", "name": "x"}, format="json")
    assert response.status_code == 400 and field in response.json()
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.name != "x"


def test_patch_by_form_takes_the_forms_own_keys(client, user):
    """A form's PATCH was refused for its CSRF token: "csrfmiddlewaretoken: This field
    cannot be changed here", where every other write of the API skips the form's keys."""
    task = TaskFactory(owner=user)
    form = {"name": "by form", "csrfmiddlewaretoken": "token-of-the-form"}
    response = client.patch(url(task), form, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "by form"
    response = client.patch(url(task), {**form, "status": "completed"}, format="multipart")
    assert response.status_code == 400 and "status" in response.json()
    assert "csrfmiddlewaretoken" not in response.json()


def test_patch_by_assignee_is_forbidden(client_for, user, other_user):
    task = TaskFactory(owner=user, assignee=other_user)
    response = client_for(other_user).patch(url(task), {"name": "mine now"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_put_is_not_allowed(client, user):
    assert client.put(url(TaskFactory(owner=user)), {}, format="json").status_code == 405


def test_delete(client, user):
    done = TaskFactory(owner=user, status=TaskStatus.COMPLETED)
    assert client.delete(url(done)).status_code == 204
    assert client.get(url(done)).status_code == 404
    running = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    response = client.delete(url(running))
    assert response.status_code == 409 and response.json()["code"] == "task_running"
    assert Task.objects.filter(pk=running.pk).exists()


# --- actions ----------------------------------------------------------------------------


def test_cancel_and_retry(client, user):
    task = TaskFactory(owner=user, status=TaskStatus.RUNNING)
    response = client.post(url(task, "cancel"))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    response = client.post(url(task, "cancel"))
    assert response.status_code == 409
    assert (
        set(response.json()) == {"detail", "code"} and response.json()["code"] == "invalid_status"
    )
    response = client.post(url(task, "retry"))
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert response.json()["completed_at"] is None


def test_retry_of_a_pending_task_is_409_and_changes_nothing(client, user):
    task = TaskFactory(owner=user)
    before = Task.objects.filter(pk=task.pk).values().get()
    response = client.post(url(task, "retry"))
    assert response.status_code == 409
    assert Task.objects.filter(pk=task.pk).values().get() == before


def test_a_task_of_a_type_no_longer_provided_is_shown_and_its_retry_is_409(client, user):
    """A type's module removed, its tasks left: a retry of one was a 500 (a KeyError)."""
    task = TaskFactory(owner=user, task_type="retired", status=TaskStatus.FAILED)
    assert client.get(url(task)).status_code == 200
    response = client.post(url(task, "retry"))
    assert response.status_code == 409 and response.json()["code"] == "unknown_task_type"
    assert Task.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_assign(client_for, user, other_user):
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    response = client_for(user).post(
        url(task, "assign"), {"assignee": str(other_user.pk)}, format="json"
    )
    assert response.status_code == 200 and response.json()["assignee"] == str(other_user.pk)
    # The new assignee sees it but may not reassign it (not the owner).
    response = client_for(other_user).post(url(task, "assign"), {"assignee": None}, format="json")
    assert response.status_code == 403
    response = client_for(user).post(url(task, "assign"), {}, format="json")
    assert response.status_code == 400 and "assignee" in response.json()


@pytest.mark.parametrize("action", ["create", "assign"])
def test_a_deactivated_assignee_is_unknown_to_all_but_staff(
    client_for, user, other_user, staff, action
):
    """To a user, a deactivated account answers as a random id does (it is gone from
    /api/users/ too); staff learn it is deactivated."""
    other_user.is_active = False
    other_user.save(update_fields=["is_active"])

    def give(who, assignee) -> tuple[int, dict]:
        body = {"task_type": "manual", "name": "for them", "assignee": str(assignee)}
        if action == "create":
            response = client_for(who).post("/api/tasks/", body, format="json")
        else:
            task = TaskFactory(owner=who, assignee=None, task_type="manual", input_data={})
            url = f"/api/tasks/{task.pk}/assign/"
            response = client_for(who).post(url, {"assignee": str(assignee)}, format="json")
        return response.status_code, response.json()

    unknown = uuid.uuid4()
    status, deactivated = give(user, other_user.pk)
    _, random_id = give(user, unknown)
    assert status == 400
    assert deactivated == json.loads(
        json.dumps(random_id).replace(str(unknown), str(other_user.pk))
    )
    assert give(staff, other_user.pk) == (
        400,
        {"detail": "The assignee's account is deactivated.", "code": "assignee_inactive"},
    )
    assert not Task.objects.filter(assignee=other_user).exists()


def test_assign_over_the_limit_is_409(client_for, user, other_user):
    TaskFactory.create_batch(5, owner=other_user)
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    response = client_for(user).post(
        url(task, "assign"), {"assignee": str(other_user.pk)}, format="json"
    )
    assert response.status_code == 409 and response.json()["code"] == "active_task_limit"


def test_manual_flow(client_for, user, other_user):
    response = client_for(user).post(
        url(),
        {"task_type": "manual", "name": "Sign", "assignee": str(other_user.pk)},
        format="json",
    )
    task_id = response.json()["id"]
    assert client_for(user).post(url(task_id, "start")).status_code == 403
    response = client_for(other_user).post(url(task_id, "start"))
    assert response.status_code == 200 and response.json()["status"] == "running"
    response = client_for(other_user).post(
        url(task_id, "complete"), {"result": {"ok": True}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "completed" and response.json()["result"] == {"ok": True}
    response = client_for(other_user).post(url(task_id, "complete"))
    assert response.status_code == 409


def test_a_completion_result_over_1_mb_is_400_and_changes_nothing(client_for, user, other_user):
    """A result was bounded only by the body's 8 MB, and is shown in every list of the task."""
    task = TaskFactory(owner=user, assignee=other_user, task_type="manual", input_data={})
    assignee = client_for(other_user)

    refused = assignee.post(
        url(task, "complete"), {"result": {"blob": "a" * 1024 * 1024}}, format="json"
    )

    assert refused.status_code == 400
    assert refused.json()["result"] == [
        "At most 1048576 bytes of JSON are allowed; this is 1048587."
    ]
    assert refused.json()["code"] == "too_large"
    task.refresh_from_db()
    assert (task.status, task.result) == ("pending", None)
    fits = {"blob": "é" * ((1024 * 1024 - 11) // 2)}  # 1 MB of JSON in UTF-8, but a byte
    response = assignee.post(url(task, "complete"), {"result": fits}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["result"] == fits


def test_start_on_a_worker_task_is_409(client, user):
    response = client.post(url(TaskFactory(owner=user), "start"))
    assert response.status_code == 409 and response.json()["code"] == "not_manual"


def test_actions_are_post_only(client, user):
    assert client.get(url(TaskFactory(owner=user), "cancel")).status_code == 405


# --- task types -------------------------------------------------------------------------


def test_task_types_lists_the_registry(client):
    response = client.get("/api/task-types/")
    assert response.status_code == 200
    by_name = {t["name"]: t for t in response.json()}
    assert set(by_name) >= {
        "sum", "countdown", "reverse", "uppercase", "lowercase", "count_words", "count_letters",
        "manual",
    }  # fmt: skip
    assert by_name["sum"]["input_schema"]["required"] == ["numbers"]
    assert by_name["manual"]["runs_on_worker"] is False
    assert all(t["description"] for t in by_name.values())


def test_task_types_need_authentication(api_client):
    assert api_client.get("/api/task-types/").status_code == 401


def test_task_type_filter_still_works_after_the_schema_is_generated(client, user):
    TaskFactory(owner=user, name="counted", task_type="countdown", input_data={"seconds": 1})
    assert client.get("/api/schema/").status_code == 200
    response = client.get(url(), {"task_type": "countdown"})
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["results"]] == ["counted"]


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "0001-01-01T00:00:00+05:00"},
        {"deadline_before": "9999-12-31T23:59:59-05:00"},
    ],
)
def test_date_filters_out_of_range_are_400(client, user, params):
    TaskFactory(owner=user)
    response = client.get(url(), params)
    assert response.status_code == 400
    assert set(response.json()) == {*params, "detail", "code"}
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize("offset", ["+16:00", "-16:00", "+23:59", "-23:59", "+15:59", "+00:00"])
@pytest.mark.parametrize(
    "name", ["created_after", "created_before", "deadline_after", "deadline_before"]
)
def test_date_filters_take_any_iso_offset(client, user, name, offset):
    """Offsets beyond ±15:59 are valid ISO 8601; they are converted to UTC before the query
    (PostgreSQL refuses them as they are)."""
    task = TaskFactory(owner=user, deadline=timezone.now() + timedelta(days=1))
    response = client.get(url(), {name: f"2020-01-01T00:00:00{offset}"})
    assert response.status_code == 200, response.content
    ids = {t["id"] for t in response.json()["results"]}
    assert ids == ({str(task.pk)} if name.endswith("after") else set())


def test_datetime_inputs_take_any_iso_offset(client):
    response = client.post(
        url(),
        {
            "task_type": "sum",
            "input_data": {"numbers": [1]},
            "deadline": "2999-01-01T00:00:00+23:59",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["deadline"] == "2998-12-31T00:01:00Z"


def test_retry_of_a_task_whose_run_at_is_ahead_waits_for_it(client, user):
    task = TaskFactory(
        owner=user, status=TaskStatus.CANCELLED, run_at=timezone.now() + timedelta(hours=1)
    )
    response = client.post(url(task, "retry"))
    assert response.status_code == 200 and response.json()["status"] == "scheduled"


# --- slots belong to their holder -------------------------------------------------------


def test_worker_task_cannot_be_given_to_someone_else(client_for, user, other_user):
    """B cannot fill A's slots with worker tasks, by create or by assign."""
    b = client_for(other_user)
    body = {"task_type": "countdown", "input_data": {"seconds": 60}, "assignee": str(user.pk)}
    response = b.post(url(), body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "assignee_not_allowed"
    own = TaskFactory(owner=other_user, task_type="countdown", input_data={"seconds": 60})
    response = b.post(url(own, "assign"), {"assignee": str(user.pk)}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "assignee_not_allowed"
    assert not Task.objects.filter(assignee=user).exists()
    # Assigning a worker task to its own owner is allowed (a no-op here).
    response = b.post(url(own, "assign"), {"assignee": str(other_user.pk)}, format="json")
    assert response.status_code == 200


def test_staff_may_give_a_worker_task_to_someone_else(client_for, staff, user):
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, "assignee": str(user.pk)}
    response = client_for(staff).post(url(), body, format="json")
    assert response.status_code == 201 and response.json()["assignee"] == str(user.pk)


def test_assignee_declines_a_manual_task_and_gets_the_slot_back(
    client_for, user, other_user, settings
):
    b, a = client_for(other_user), client_for(user)
    for _ in range(settings.MAX_ACTIVE_TASKS):
        body = {"task_type": "manual", "name": "chore", "assignee": str(user.pk)}
        assert b.post(url(), body, format="json").status_code == 201
    refused = a.post(url(), {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "active_task_limit"
    given = Task.objects.filter(assignee=user).first()
    response = a.post(url(given, "decline"))
    assert response.status_code == 200
    assert response.json()["assignee"] is None and response.json()["status"] == "pending"
    created = a.post(url(), {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json")
    assert created.status_code == 201


def test_decline_rules(client_for, user, other_user):
    given = TaskFactory(owner=other_user, assignee=user, task_type="manual", input_data={})
    # Only the assignee declines; the owner gets 403, a stranger 404.
    assert client_for(other_user).post(url(given, "decline")).status_code == 403
    assert client_for(UserFactory()).post(url(given, "decline")).status_code == 404
    # One's own task is cancelled or reassigned, not declined.
    own = TaskFactory(owner=user, task_type="manual", input_data={})
    response = client_for(user).post(url(own, "decline"))
    assert response.status_code == 409 and response.json()["code"] == "not_declinable"
    # Worker tasks are not declined; nor are tasks no longer pending.
    worker = TaskFactory(owner=other_user, assignee=user)
    response = client_for(user).post(url(worker, "decline"))
    assert response.status_code == 409 and response.json()["code"] == "not_manual"
    assert response.json()["detail"] == "Only manual tasks are declined by hand."
    Task.objects.filter(pk=given.pk).update(status=TaskStatus.RUNNING)
    response = client_for(user).post(url(given, "decline"))
    assert response.status_code == 409 and response.json()["code"] == "invalid_status"
    assert Task.objects.get(pk=given.pk).assignee_id == user.pk


@pytest.mark.parametrize(
    "ordering",
    [
        None,
        "priority",
        "-priority,created_at",
        "deadline",
        "-deadline",
        "-status",
        "completed_at",
        "-completed_at,priority",
    ],
)
def test_list_pages_match_the_plain_query(client, user, other_user, ordering):
    """The list's two-index form (PostgreSQL) gives exactly the rows and order of
    ``owner = u OR assignee = u`` with the same ordering, page after page."""
    now = timezone.now()
    for i in range(23):
        owner, assignee = [(user, user), (other_user, user), (user, other_user)][i % 3]
        TaskFactory(
            owner=owner,
            assignee=assignee,
            task_type="manual" if owner != assignee else "sum",
            priority=["low", "normal", "high", "urgent"][i % 4],
            deadline=now + timedelta(days=i % 5) if i % 2 else None,
            status=[TaskStatus.PENDING, TaskStatus.COMPLETED][i % 2],
        )
    TaskFactory.create_batch(3, owner=other_user)  # not visible
    params = {"page_size": 5} | ({"ordering": ordering} if ordering else {})
    seen, page = [], 1
    while True:
        body = client.get(url(), {**params, "page": page}).json()
        seen += [t["id"] for t in body["results"]]
        if not body["next"]:
            break
        page += 1
    assert body["count"] == 23 and len(seen) == 23 and len(set(seen)) == 23
    from backend.tasks.filters import TaskFilter
    from backend.tasks.selectors import tasks_visible_to

    expected = TaskFilter(
        {"ordering": ordering} if ordering else {},
        queryset=tasks_visible_to(user).order_by("-created_at", "id"),
    ).qs
    assert seen == [str(pk) for pk in expected.values_list("pk", flat=True)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL trigger keeps it")
@pytest.mark.django_db(transaction=True)
def test_the_visible_count_follows_every_change(user, other_user):
    """The per-user count kept by the database matches the rows after inserts, deletes,
    reassignments (both ways) and bulk changes."""
    from backend.tasks.models import VisibleTaskCount
    from backend.tasks.selectors import tasks_visible_to

    def counts():
        kept = dict(VisibleTaskCount.objects.values_list("user_id", "total"))
        for who in (user, other_user):
            assert kept.get(who.pk, 0) == tasks_visible_to(who).count(), who

    mine = TaskFactory.create_batch(3, owner=user)
    given = TaskFactory(owner=user, assignee=other_user, task_type="manual", input_data={})
    counts()
    Task.objects.filter(pk=mine[0].pk).update(assignee=other_user)
    Task.objects.filter(pk=given.pk).update(assignee=None)
    counts()
    Task.objects.filter(pk=given.pk).update(assignee=other_user, owner=other_user)
    counts()
    mine[1].name = "saved again"
    mine[1].save()
    Task.objects.filter(pk__in=[t.pk for t in mine]).delete()
    counts()
    assert VisibleTaskCount.objects.get(user=user).total == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL trigger keeps it")
@pytest.mark.django_db(transaction=True)
def test_a_truncate_empties_the_visible_counts(client_for, user, other_user):
    """A TRUNCATE fires no row trigger: the kept counts are emptied with the table, so the
    list counts what is there, not the tasks that were."""
    TaskFactory.create_batch(3, owner=user)
    TaskFactory(owner=other_user, assignee=user, task_type="manual", input_data={})
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Task._meta.db_table} CASCADE")
    mine = TaskFactory(owner=user)
    body = client_for(user).get("/api/tasks/").json()
    assert (body["count"], [row["id"] for row in body["results"]]) == (1, [str(mine.pk)])
    assert client_for(other_user).get("/api/tasks/").json()["count"] == 0


def test_rabbitmq_consumer_timeout_bounds_a_task_time_limit(client, settings):
    """On RabbitMQ a task that could outlive the server's consumer timeout is refused at
    create time, not cut (and handed out again) by the broker later."""
    settings.BROKER_IS_AMQP = True
    settings.BROKER_CONSUMER_TIMEOUT = 200

    def create(seconds):
        body = {"task_type": "countdown", "input_data": {"seconds": seconds}}
        return client.post(url(), body, format="json")

    # A countdown's limit is its length + 30 s; its message may stay unacknowledged 80 s
    # more (until the hard limit, which leaves its outcome 70 s to be written while the
    # database fails, and its reservation and claim): a limit just under the timeout was
    # taken, and its message could still pass it, which stops the worker.
    refused = create(90)
    assert refused.status_code == 400
    assert "BROKER_CONSUMER_TIMEOUT" in refused.json()["input_data"][0]
    # Its own code, which a client tells from any other bad input (it was "invalid").
    assert refused.json()["code"] == "exceeds_broker_timeout"
    assert create(89).status_code == 201
    settings.BROKER_IS_AMQP = False
    assert create(90).status_code == 201


def test_repeated_filter_parameters_combine(client, user):
    TaskFactory(owner=user, status=TaskStatus.FAILED, name="f")
    TaskFactory(owner=user, status=TaskStatus.COMPLETED, name="c")
    TaskFactory(owner=user, status=TaskStatus.PENDING, name="p")
    response = client.get(url() + "?status=failed&status=completed")
    assert {t["name"] for t in response.json()["results"]} == {"f", "c"}
    # An ordering's keys too (the last alone was taken), as comma-separated.
    TaskFactory(owner=user, status=TaskStatus.FAILED, name="u", priority="urgent")
    repeated = client.get(url() + "?ordering=-priority&ordering=status")
    together = client.get(url() + "?ordering=-priority,status")
    order = [t["name"] for t in repeated.json()["results"]]
    assert order == [t["name"] for t in together.json()["results"]] and order[0] == "u"
