"""Bodies the database could not store, or Python could not parse, are a 400 at the door."""

import pytest

from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


def post_raw(client, path, raw: str):
    return client.post(path, raw, content_type="application/json")


@pytest.mark.parametrize(
    "raw",
    [
        '{"task_type": "reverse", "input_data": {"data": "a\\ud800b"}}',
        '{"task_type": "\\ud800"}',
        '{"task_type": "manual", "input_data": {"\\udc00": 1}}',
        '{"task_type": "reverse", "input_data": {"data": "nul\\u0000"}}',
    ],
)
def test_unstorable_strings_are_refused(client_for, user, raw):
    response = post_raw(client_for(user), "/api/tasks/", raw)
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
    assert not Task.objects.exists()


def test_unstorable_result_leaves_the_task_as_it_was(client_for, user):
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    response = post_raw(
        client_for(user), f"/api/tasks/{task.pk}/complete/", '{"result": {"k": "a\\u0000b"}}'
    )
    assert response.status_code == 400
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.result is None
    assert client_for(user).get("/api/tasks/").status_code == 200


def test_deeply_nested_json_is_400(api_client):
    response = post_raw(api_client, "/api/register/", "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [101, 935, 2000])
def test_json_nested_beyond_the_limit_is_400_wherever_it_goes(client_for, user, depth):
    """Nested a little less deep than the parser's own limit (about 930 levels), a value
    was parsed, then failed to be stored (psycopg's encoder recursed too deep): a 500."""
    client = client_for(user)
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    completed = post_raw(
        client, f"/api/tasks/{task.pk}/complete/", f'{{"result": {nested(depth)}}}'
    )
    created = post_raw(
        client, "/api/tasks/", f'{{"task_type": "manual", "input_data": {{"x": {nested(depth)}}}}}'
    )
    as_form = client.post(
        "/api/tasks/", {"task_type": "manual", "input_data": f'{{"x": {nested(depth)}}}'}
    )
    assert (completed.status_code, created.status_code, as_form.status_code) == (400,) * 3
    assert "nested" in completed.json()["detail"] and "nested" in created.json()["detail"]
    assert "levels deep" in as_form.json()["input_data"][0]
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and Task.objects.count() == 1


def test_json_nested_to_the_limit_is_stored(client_for, user):
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    response = post_raw(
        client_for(user), f"/api/tasks/{task.pk}/complete/", f'{{"result": {nested(99)}}}'
    )
    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED


def test_paired_surrogates_are_fine(client_for, user):
    # An emoji sent escaped as a surrogate pair is one ordinary character.
    response = post_raw(
        client_for(user),
        "/api/tasks/",
        '{"task_type": "reverse", "input_data": {"data": "ok \\ud83d\\ude00"}}',
    )
    assert response.status_code == 201
    assert response.json()["input_data"] == {"data": "ok \U0001f600"}


def test_message_without_a_field_still_has_detail_and_code():
    """A validation error tied to no field (a list of messages, as a filter backend may
    raise) is answered with the shape of every error. (The search filter's NUL refusal was
    one; it now names ``search``.)"""
    from rest_framework.exceptions import ValidationError

    from backend.common.exceptions import exception_handler

    response = exception_handler(ValidationError(["Null characters are not allowed."]), {})
    assert response.status_code == 400
    assert response.data == {"detail": "Null characters are not allowed.", "code": "invalid"}


FORM = "application/x-www-form-urlencoded"  # what `curl -d` sends without -H Content-Type


def test_a_json_object_sent_as_a_form_is_read_as_json(client_for, user):
    body = '{"task_type": "sum", "input_data": {"numbers": [1, 2, 3]}, "priority": "high"}'
    response = client_for(user).post("/api/tasks", body, content_type=FORM)

    assert response.status_code == 201, response.json()
    task = Task.objects.get()
    assert (task.task_type, task.input_data, task.priority) == (
        "sum",
        {"numbers": [1, 2, 3]},
        "high",
    )


def test_broken_json_sent_as_a_form_says_how_to_send_json(client_for, user):
    response = client_for(user).post("/api/tasks/", '{"task_type": "sum",', content_type=FORM)

    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["detail"]
    assert not Task.objects.exists()


def test_unstorable_json_sent_as_a_form_is_refused(client_for, user):
    body = '{"task_type": "reverse", "input_data": {"data": "nul\\u0000"}}'
    response = client_for(user).post("/api/tasks/", body, content_type=FORM)

    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_sent_as_a_form_refuses_what_json_does(client_for, user, constant):
    """The JSON parser refuses NaN and Infinity; the same body sent as a form took them."""
    body = '{"task_type": "sum", "input_data": {"numbers": [1]}, "name": ' + constant + "}"
    for content_type in ("application/json", FORM):
        response = client_for(user).post("/api/tasks/", body, content_type=content_type)
        assert response.status_code == 400, (content_type, response.json())
        assert response.json()["code"] == "parse_error"
    assert not Task.objects.exists()


def test_a_real_form_is_still_a_form(client_for, user):
    body = "task_type=sum&input_data=%7B%22numbers%22%3A+%5B4%2C+5%5D%7D"
    response = client_for(user).post("/api/tasks/", body, content_type=FORM)

    assert response.status_code == 201, response.json()
    assert Task.objects.get().input_data == {"numbers": [4, 5]}


def test_register_and_token_take_json_sent_as_a_form(api_client):
    account = '{"username": "curlish", "password": "curlish-Secret-42"}'
    assert api_client.post("/api/register", account, content_type=FORM).status_code == 201
    response = api_client.post("/api/token", account, content_type=FORM)
    assert response.status_code == 200 and "access" in response.json()


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_an_integer_of_too_many_digits_is_refused_in_the_clients_terms(
    client_for, user, content_type
):
    """Python's refusal named sys.set_int_max_str_digits(), an internal of the server."""
    raw = '{"task_type": "sum", "input_data": {"numbers": [' + "9" * 4301 + "]}}"
    response = client_for(user).post("/api/tasks/", raw, content_type=content_type)
    assert response.status_code == 400 and response.json()["code"] == "parse_error"
    detail = response.json()["detail"]
    assert "an integer has more than 4300 digits, more than any field here takes" in detail
    assert "sys." not in detail
    assert not Task.objects.exists()
