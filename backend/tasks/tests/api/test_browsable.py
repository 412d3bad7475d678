"""The browsable API as a person uses it: the HTML create form of /api/tasks/ (posted as a
browser posts it, under session login with its CSRF token), links from list rows to each
task, and every action reachable from a task's page."""

import html
import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from backend.tasks import types
from backend.tasks.api.views import TaskViewSet
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.factories import TaskFactory
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html"}


@pytest.fixture
def browser(user) -> Client:
    """A browser signed in through the session, with Django's CSRF checks on as in real use."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def page(client: Client, path: str) -> str:
    response = client.get(path, **HTML)
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


def create_form(text: str) -> str:
    """The HTML form (not the raw-data one) that posts to /api/tasks/."""
    match = re.search(
        r'<form action="/api/tasks/" method="POST" enctype="multipart/form-data".*?</form>',
        text,
        re.DOTALL,
    )
    assert match, "no HTML create form on the page"
    return match.group(0)


def csrf_token(text: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text).group(1)


def form_fields(**values) -> dict:
    """What a browser sends for the create form: every field, the untouched ones empty."""
    fields = {
        "task_type": "sum",
        "input_data": "{}",
        "name": "",
        "description": "",
        "priority": "normal",
        "deadline": "",
        "run_at": "",
        "assignee": "",
        "callback_url": "",
    }
    fields.update(values)
    return fields


def submit(browser: Client, *, encoding: str = "multipart", accept="text/html", **values):
    """Load the list page (as a person would), then post its form with the page's token."""
    token = csrf_token(page(browser, "/api/tasks/"))
    data = form_fields(csrfmiddlewaretoken=token, **values)
    if encoding == "multipart":
        return browser.post("/api/tasks/", data, HTTP_ACCEPT=accept)
    from urllib.parse import urlencode

    return browser.post(
        "/api/tasks/",
        urlencode(data),
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT=accept,
    )


# --- the form ---------------------------------------------------------------------------------


def test_list_page_has_a_create_form_with_every_field(browser):
    form = create_form(page(browser, "/api/tasks/"))

    task_type = re.search(r'<select[^>]*name="task_type".*?</select>', form, re.DOTALL).group(0)
    assert re.findall(r'<option value="([^"]+)"', task_type) == types.names()
    assert re.search(r'<option value="sum" selected', task_type)
    input_data = re.search(r'<textarea name="input_data"[^>]*>(.*?)</textarea>', form, re.DOTALL)
    assert input_data and json.loads(html.unescape(input_data.group(1))) == {"numbers": [1, 2, 3]}
    assert re.search(r'<textarea name="description"', form)
    priority = re.search(r'<select[^>]*name="priority".*?</select>', form, re.DOTALL).group(0)
    # The form starts at the API's default, not at the first choice.
    assert re.findall(r'<option value="([^"]+)"\s+selected', priority) == ["normal"]
    for name in ("name", "callback_url"):
        assert re.search(rf'<input name="{name}"[^>]*type="text"', form), name
    for name in ("deadline", "run_at"):
        assert re.search(rf'<input name="{name}"[^>]*type="datetime-local"', form), name
    assert re.search(r'<input name="assignee"[^>]*type="text"', form)
    assert 'name="csrfmiddlewaretoken"' in form


def test_the_assignee_box_lists_no_users(browser, user):
    others = UserFactory.create_batch(3)
    text = page(browser, "/api/tasks/")

    assert not re.search(r'<select[^>]*name="assignee"', text)
    for other in others:
        assert other.username not in text
        assert str(other.pk) not in text
    # OPTIONS describes the fields without listing users either.
    options = browser.options("/api/tasks/", HTTP_ACCEPT="application/json").json()
    assignee = options["actions"]["POST"]["assignee"]
    assert "choices" not in assignee
    assert [c["value"] for c in options["actions"]["POST"]["task_type"]["choices"]] == (
        types.names()
    )


def test_the_raw_data_box_holds_the_create_fields(browser):
    text = page(browser, "/api/tasks/")
    raw = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', text, re.DOTALL)
    assert raw
    body = json.loads(html.unescape(raw.group(1)))
    assert {"task_type", "input_data", "name", "priority", "deadline", "assignee"} <= set(body)


# --- posting the form -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded"])
def test_the_form_creates_a_countdown(browser, user, encoding):
    response = submit(
        browser,
        encoding=encoding,
        task_type="countdown",
        input_data='{"seconds": 3}',
        name="From the form",
    )

    assert response.status_code == 201, response.content[:2000]
    task = Task.objects.get()
    assert task.task_type == "countdown" and task.input_data == {"seconds": 3}
    assert task.name == "From the form" and task.status == TaskStatus.PENDING
    assert task.owner == user and task.assignee == user
    assert task.deadline is None and task.run_at is None
    # The answer page shows the new task, with a link to it.
    assert f'href="http://testserver/api/tasks/{task.pk}/"' in response.content.decode()


def test_the_form_answer_as_json(browser, user):
    response = submit(
        browser, accept="application/json", task_type="countdown", input_data='{"seconds": 2}'
    )

    assert response.status_code == 201
    body = response.json()
    assert body["task_type"] == "countdown" and body["input_data"] == {"seconds": 2}
    assert body["assignee"] == str(user.pk)
    assert body["url"] == f"http://testserver/api/tasks/{body['id']}/"


def test_the_form_without_its_csrf_token_is_refused(browser):
    response = browser.post(
        "/api/tasks/",
        form_fields(task_type="countdown", input_data='{"seconds": 3}'),
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 403
    assert response.json()["code"]
    assert not Task.objects.exists()


def test_the_optional_fields_from_the_form(browser, user):
    deadline = timezone.localtime() + timedelta(hours=2)
    response = submit(
        browser,
        accept="application/json",
        task_type="reverse",
        input_data='  {"data": "abc"}  ',
        description="line one\nline two",
        priority="urgent",
        deadline=deadline.strftime("%Y-%m-%dT%H:%M"),
        assignee=str(user.pk),
        callback_url="https://example.com/hook",
    )

    assert response.status_code == 201, response.content
    task = Task.objects.get()
    assert task.priority == "urgent" and task.description == "line one\nline two"
    assert task.deadline == deadline.replace(second=0, microsecond=0)
    assert task.assignee == user


def test_the_word_null_leaves_a_manual_task_unassigned(browser):
    response = submit(browser, accept="application/json", task_type="manual", assignee="null")

    assert response.status_code == 201, response.content
    assert Task.objects.get().assignee is None


def test_an_empty_input_box_means_an_empty_object(browser):
    response = submit(browser, accept="application/json", task_type="manual", input_data="")

    assert response.status_code == 201, response.content
    assert Task.objects.get().input_data == {}

    refused = submit(browser, accept="application/json", task_type="countdown", input_data=" ")
    assert refused.status_code == 400
    assert "seconds" in refused.json()["input_data"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{seconds: 3}", "Value must be valid JSON."),
        ('{"seconds": 3', "Value must be valid JSON."),
        ('{"seconds": NaN}', "Value must be valid JSON."),
        ("Infinity", "Value must be valid JSON."),
        ("[" * 100_000 + "]" * 100_000, "JSON may nest at most 100 levels deep."),
        ("9" * 5000, "Value must be valid JSON."),
        ('{"data": "a\\u0000b"}', "JSON strings may not contain NUL"),
        ('{"data": "\\ud800"}', "JSON strings may not contain NUL"),
        ("[3]", "Expected a JSON object."),
        ('"{\\"seconds\\": 3}"', "Expected a JSON object."),
    ],
)
def test_bad_json_in_the_form_is_a_400_json_error(browser, text, message):
    response = submit(browser, accept="application/json", task_type="reverse", input_data=text)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["detail"].startswith("input_data: ")
    assert any(str(m).startswith(message) for m in body["input_data"]), body
    assert not Task.objects.exists()


def test_a_bad_form_is_answered_with_its_error_and_the_form_again(browser):
    response = submit(browser, task_type="countdown", input_data="{oops")

    assert response.status_code == 400
    text = response.content.decode()
    assert create_form(text)
    assert "input_data: Value must be valid JSON." in html.unescape(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [("deadline", "tomorrow"), ("run_at", "2025-13-01T10:00"), ("deadline", 123)],
)
def test_a_date_that_is_no_date_is_answered_with_its_error_and_the_form(browser, field, value):
    """DRF parsed the date to fill the form again, and the page became a 500."""
    token = csrf_token(page(browser, "/api/tasks/"))
    body = {"task_type": "sum", "input_data": {"numbers": [1]}, field: value}
    response = browser.post(
        "/api/tasks/",
        json.dumps(body),
        content_type="application/json",
        HTTP_ACCEPT="text/html",
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert create_form(text) and f"{field}: Datetime has wrong format" in text
    assert not Task.objects.exists()


# --- links and actions ------------------------------------------------------------------------


def test_every_task_carries_its_url(client_for, user):
    task = TaskFactory(owner=user)
    client = client_for(user)
    address = f"http://testserver/api/tasks/{task.pk}/"

    row = client.get("/api/tasks/").json()["results"][0]
    assert row["url"] == address
    assert client.get(f"/api/tasks/{task.pk}/").json()["url"] == address
    assert client.get(address).json()["id"] == str(task.pk)


def test_list_rows_link_to_their_task(browser, user):
    tasks = TaskFactory.create_batch(2, owner=user)
    text = page(browser, "/api/tasks/")
    for task in tasks:
        assert f'<a href="http://testserver/api/tasks/{task.pk}/"' in text


def detail_actions() -> list[str]:
    return sorted(
        action.url_path for action in TaskViewSet.get_extra_actions() if action.detail is True
    )


def test_a_task_page_links_every_action(browser, user):
    task = TaskFactory(owner=user)
    text = page(browser, f"/api/tasks/{task.pk}/")

    assert "Extra Actions" in text
    assert detail_actions() == ["assign", "cancel", "complete", "decline", "retry", "start"]
    for name in detail_actions():
        assert f'href="http://testserver/api/tasks/{task.pk}/{name}/"' in text, name
    assert f'"url": "<a href="http://testserver/api/tasks/{task.pk}/"' in html.unescape(text)


def test_an_action_page_posts_its_form(browser, user):
    task = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 30})
    text = page(browser, f"/api/tasks/{task.pk}/cancel/")
    form = re.search(
        rf'<form action="/api/tasks/{task.pk}/cancel/" method="POST".*?</form>', text, re.DOTALL
    )
    assert form and "POST</button>" in form.group(0)

    response = browser.post(
        f"/api/tasks/{task.pk}/cancel/",
        {"csrfmiddlewaretoken": csrf_token(text)},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED


def test_the_assign_form_takes_a_user_id_not_a_list(browser, user):
    other = UserFactory()
    task = TaskFactory(owner=user, task_type="manual", input_data={})
    text = page(browser, f"/api/tasks/{task.pk}/assign/")

    assert re.search(r'<input name="assignee"[^>]*type="text"', text)
    assert other.username not in text
    response = browser.post(
        f"/api/tasks/{task.pk}/assign/",
        {"csrfmiddlewaretoken": csrf_token(text), "assignee": str(other.pk)},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert task.assignee == other


def test_edit_and_delete_forms_are_offered_to_the_owner_only(user):
    """The assignee saw the PATCH form and the DELETE button on a task, and each answered
    403: the owner's rule is a permission of the view too, which the page asks."""
    owner = UserFactory()
    task = TaskFactory(owner=owner, assignee=user, task_type="manual", input_data={})
    path = f"/api/tasks/{task.pk}/"
    for who, offered in [(owner, True), (user, False), (UserFactory(is_staff=True), True)]:
        client = Client()
        client.force_login(who)
        text = page(client, path)
        assert ("Make a PATCH request" in text) is offered, who
        assert ("Make a DELETE request" in text) is offered, who


@pytest.mark.parametrize(
    "action, owner_sees, assignee_sees, staff_sees",
    [
        ("assign", True, False, True),
        ("cancel", True, False, True),
        ("retry", True, False, True),
        ("start", False, True, False),
        ("decline", False, True, False),
        ("complete", False, True, True),
    ],
)
def test_an_action_form_is_offered_only_to_whom_it_serves(
    user, action, owner_sees, assignee_sees, staff_sees
):
    """The assignee of a task someone gave them was offered assign, cancel and retry, its
    owner start and decline (page and OPTIONS): each answered 403 with the service's words,
    which the refusal still says."""
    owner, staff = UserFactory(), UserFactory(is_staff=True)
    task = TaskFactory(owner=owner, assignee=user, task_type="manual", input_data={})
    path = f"/api/tasks/{task.pk}/{action}/"
    for who, offered in [(owner, owner_sees), (user, assignee_sees), (staff, staff_sees)]:
        client = Client()
        client.force_login(who)
        text = page(client, path)
        assert (f'<form action="{path}" method="POST"' in text) is offered, (who, text)
        options = client.options(path, HTTP_ACCEPT="application/json").json()
        assert ("POST" in options.get("actions", {})) is offered, (who, options)
        if not offered:
            refused = client.post(path, {}, content_type="application/json")
            assert refused.status_code == 403
            wanted = {
                "assign": "Only the task's owner or staff can do this.",
                "cancel": "Only the task's owner or staff can do this.",
                "retry": "Only the task's owner or staff can do this.",
                "start": "Only the assignee can start this task.",
                "decline": "Only the assignee can decline this task.",
                "complete": "Only the assignee or staff can complete this task.",
            }[action]
            assert refused.json()["detail"] == wanted


def test_a_manual_action_on_a_worker_task_is_still_a_409_for_anyone(user):
    """The services say first that a worker task is not started by hand: the view's check
    of who may leaves that to them."""
    task = TaskFactory(
        owner=UserFactory(), assignee=user, task_type="sum", input_data={"numbers": [1]}
    )
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    for action in ("start", "decline"):
        response = client.post(
            f"/api/tasks/{task.pk}/{action}/", {}, content_type="application/json"
        )
        assert response.status_code == 409, action
        assert response.json()["code"] == "not_manual"


def test_a_refused_form_comes_back_filled_in_with_the_error_under_its_field(browser):
    """The form came back reset to its defaults (what was typed lost), with the error only
    in the JSON above it: the error body no longer carried the form's serializer."""
    response = submit(browser, task_type="sum", input_data="{numbers: [1,", name="Typed by hand")

    assert response.status_code == 400
    form = create_form(response.content.decode())
    assert 'value="Typed by hand"' in form
    assert "{numbers: [1," in html.unescape(form)
    assert "Value must be valid JSON." in form  # under the field, in the form itself
    assert not Task.objects.exists()
    as_json = submit(browser, accept="application/json", task_type="sum", input_data="{")
    assert as_json.json() == {
        "detail": "input_data: Value must be valid JSON.",
        "code": "invalid",
        "input_data": ["Value must be valid JSON."],
    }


def test_after_a_create_the_form_is_there_again_with_its_fields(browser):
    """The answer page's form had no field (it was built from the read serializer of the
    answer), and sending it was refused: "task_type: This field is required."."""
    response = submit(browser, task_type="sum", input_data='{"numbers": [1, 2]}')

    assert response.status_code == 201
    form = create_form(response.content.decode())
    for field in ("task_type", "input_data", "name", "priority", "deadline", "run_at"):
        assert f'name="{field}"' in form, field


def test_an_input_error_is_shown_under_its_box_with_its_message(browser):
    """The box showed only the key ("numbers"), not what was wrong with it."""
    response = submit(browser, task_type="sum", input_data='{"numbers": "x"}')

    assert response.status_code == 400
    form = html.unescape(create_form(response.content.decode()))
    assert 'numbers: Expected a list of items but got type "str".' in form
