"""The browsable API's raw-data form of a PUT or PATCH holds what may be sent back: posted
unchanged, it is accepted."""

import html
import json
import re

import pytest
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from backend.schedules.tests.factories import make_schedule

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html"}


def raw_form_content(client: Client, path: str) -> dict:
    text = client.get(path, **HTML).content.decode()
    found = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', text, re.DOTALL)
    assert found, "no raw-data form"
    return json.loads(html.unescape(found.group(1)))


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_schedules_form_holds_its_writable_fields_and_patches_back(user):
    schedule = make_schedule(user)
    client = signed_in(user)
    content = raw_form_content(client, f"/api/schedules/{schedule.pk}/")
    assert content["enabled"] is True and content["interval_seconds"] == 300
    assert not {"id", "owner", "total_runs", "next_run_at", "created_at"} & set(content)
    content["enabled"] = False
    response = client.patch(
        f"/api/schedules/{schedule.pk}/", content, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    schedule.refresh_from_db()
    assert schedule.enabled is False


def test_the_profiles_form_holds_its_writable_fields_and_patches_back(user):
    client = signed_in(user)
    content = raw_form_content(client, "/api/users/me/")
    assert "username" in content and "notify_email" in content
    assert not {"id", "date_joined", "is_staff", "total_tasks_assigned"} & set(content)
    content["name"] = "Changed"
    response = client.patch("/api/users/me/", content, content_type="application/json")
    assert response.status_code == 200, response.content
    user.refresh_from_db()
    assert user.name == "Changed"


def test_the_schedules_html_forms_create_and_change_one(user):
    """The create form had no field (it was built from the read-only serializer), and the
    change form's numbers were refused: an HTML form sends text, and "3600" was "not an
    integer"."""
    client = signed_in(user)
    page = client.get("/api/schedules/", **HTML).content.decode()
    for field in ("task_type", "interval_seconds", "crontab", "deadline_seconds"):
        assert f'name="{field}"' in page, field
    created = client.post(
        "/api/schedules/",
        {
            "task_type": "sum",
            "input_data": '{"numbers": [1, 2]}',
            "interval_seconds": "3600",
            "crontab": "",
            "deadline_seconds": "",
            "timezone": "UTC",
            "enabled": "true",
        },
        HTTP_ACCEPT="application/json",
    )
    assert created.status_code == 201, created.content
    schedule = created.json()
    assert schedule["interval_seconds"] == 3600 and schedule["deadline_seconds"] is None
    changed = client.put(
        f"/api/schedules/{schedule['id']}/",
        "task_type=sum&input_data=%7B%22numbers%22%3A+%5B3%5D%7D&interval_seconds=&"
        "crontab=0+9+*+*+*&deadline_seconds=60&timezone=UTC&enabled=true",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["crontab"] == "0 9 * * *" and body["interval_seconds"] is None
    assert body["deadline_seconds"] == 60


def test_a_form_number_too_long_for_an_integer_is_a_400(user):
    """Python refuses to read an integer of more than 4,300 digits: that was a 500."""
    response = signed_in(user).post(
        "/api/schedules/",
        {"task_type": "sum", "input_data": '{"numbers": [1]}', "interval_seconds": "1" * 5000},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    assert "interval_seconds" in response.json()


def test_a_number_in_json_must_still_be_a_json_integer(user):
    client = signed_in(user)
    response = client.post(
        "/api/schedules/",
        {"task_type": "sum", "input_data": {"numbers": [1]}, "interval_seconds": "3600"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "interval_seconds" in response.json()


def test_an_unchecked_enabled_box_means_disabled(user):
    """A browser leaves an unchecked box out of the form: the schedule is created, or put
    back, disabled (it was enabled, so editing a paused schedule in the form re-enabled
    it). Left out of JSON, ``enabled`` stays true."""
    client = signed_in(user)
    form = {"task_type": "sum", "input_data": '{"numbers": [1]}', "interval_seconds": "3600"}
    created = client.post("/api/schedules/", form, HTTP_ACCEPT="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["enabled"] is False and created.json()["next_run_at"] is None
    paused = make_schedule(user, enabled=False)
    changed = client.put(
        f"/api/schedules/{paused.pk}/",
        "task_type=sum&input_data=%7B%22numbers%22%3A+%5B3%5D%7D&interval_seconds=600",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert changed.status_code == 200, changed.content
    paused.refresh_from_db()
    assert paused.enabled is False and paused.interval_seconds == 600
    as_json = client.post(
        "/api/schedules/",
        {"task_type": "sum", "input_data": {"numbers": [1]}, "interval_seconds": 3600},
        content_type="application/json",
    )
    assert as_json.status_code == 201 and as_json.json()["enabled"] is True


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("deadline_seconds=30", {"deadline_seconds": 30}),
        ("deadline_seconds=", {"deadline_seconds": None}),
        ("interval_seconds=600", {"interval_seconds": 600}),
        ("input_data=%7B%22numbers%22%3A%5B2%5D%7D", {"input_data": {"numbers": [2]}}),
        ("enabled=false", {"enabled": False, "next_run_at": None}),
        ("crontab=0+9+*+*+*", {"crontab": "0 9 * * *", "interval_seconds": None}),
    ],
)
def test_a_patch_sent_as_form_fields_reads_them_as_post_and_put_do(user, form, expected):
    """A PATCH's form fields were taken as JSON values: "30" was "not an integer", and
    JSON text in ``input_data`` was "not a JSON object"."""
    schedule = make_schedule(user, deadline_seconds=120)
    response = signed_in(user).patch(
        f"/api/schedules/{schedule.pk}/",
        form,
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert {key: body[key] for key in expected} == expected
    assert body["name"] == schedule.name


def test_a_multipart_patch_is_read_as_a_form(user):
    schedule = make_schedule(user)
    response = signed_in(user).patch(
        f"/api/schedules/{schedule.pk}/",
        encode_multipart(BOUNDARY, {"interval_seconds": "900"}),
        content_type=MULTIPART_CONTENT,
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["interval_seconds"] == 900


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ("deadline_seconds=soon", "deadline_seconds"),
        ("interval_seconds=5", "interval_seconds"),
        ("input_data=%7Bnot+json", "input_data"),
        ("enabeld=false", "enabeld"),
        ("owner=someone", "owner"),
    ],
)
def test_a_bad_form_patch_is_400_naming_the_field_and_changes_nothing(user, form, field):
    schedule = make_schedule(user, interval_seconds=300)
    response = signed_in(user).patch(
        f"/api/schedules/{schedule.pk}/",
        form,
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400, response.content
    assert field in response.json()
    schedule.refresh_from_db()
    assert schedule.interval_seconds == 300 and schedule.enabled


def test_the_webhook_secret_form_asks_for_nothing(user):
    """It showed the profile's fields, which the endpoint ignores."""
    page = signed_in(user).get("/api/users/me/webhook-secret/", **HTML).content.decode()
    form = page[page.index('id="post-generic-content-form"') :]
    assert 'name="_content"' in form
    for field in ("username", "email", "password", "webhook_url"):
        assert f'name="{field}"' not in page, field


@pytest.mark.parametrize("method", ["patch", "put"])
def test_an_empty_enabled_box_means_disabled(user, method):
    """``enabled=`` turned a paused schedule back on (DRF read the empty box as the
    field's default, true)."""
    paused = make_schedule(user, enabled=False)
    form = "enabled="
    if method == "put":
        form = (
            "task_type=sum&input_data=%7B%22numbers%22%3A+%5B3%5D%7D&interval_seconds=600&enabled="
        )
    response = getattr(signed_in(user), method)(
        f"/api/schedules/{paused.pk}/",
        form,
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, response.content
    paused.refresh_from_db()
    assert paused.enabled is False


def test_an_empty_box_for_a_field_with_no_none_is_400_in_a_patch(user):
    """``priority=`` reset a high priority to normal, the field's default."""
    schedule = make_schedule(user, priority="high")
    response = signed_in(user).patch(
        f"/api/schedules/{schedule.pk}/",
        "priority=",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400 and "priority" in response.json()
    schedule.refresh_from_db()
    assert schedule.priority == "high"


def test_the_create_form_shows_enabled_ticked(user):
    page = signed_in(user).get("/api/schedules/", **HTML).content.decode()
    box = page[page.index('name="enabled"') - 200 : page.index('name="enabled"') + 200]
    assert "checked" in box


def test_a_schedule_given_as_a_dict_is_held_to_the_json_depth(user):
    """The admin's schedule form hands input_data over as a dict, which skipped the depth
    check: saved 800 levels deep, a 500 at 900 on SQLite."""
    from backend.schedules.api.serializers import ScheduleWriteSerializer
    from backend.schedules.validation import template_context

    deep: list = []
    for _ in range(150):
        deep = [deep]
    serializer = ScheduleWriteSerializer(
        data={
            "task_type": "api_integration",
            "input_data": {"url": "https://example.com/", "json": deep},
            "interval_seconds": 3600,
        },
        context=template_context(user, None),
    )
    assert not serializer.is_valid()
    assert "levels deep" in str(serializer.errors["input_data"])


def raw_content_of(page: str) -> dict:
    found = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert found, "no raw-data form"
    return json.loads(html.unescape(found.group(1)))


def test_after_a_refused_patch_the_forms_hold_the_object_as_it_is(user):
    """A refused PATCH answered with the errors of a serializer made for the data alone (or
    of none, for a form with a password): DRF built the page's edit forms for no object, so
    they came back empty, and a correction had to be typed again from nothing."""
    from backend.tasks.tests.factories import TaskFactory

    client = signed_in(user)
    schedule = make_schedule(user, name="nightly")
    response = client.patch(
        f"/api/schedules/{schedule.pk}/",
        {"interval_seconds": -5},
        content_type="application/json",
        **HTML,
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert raw_content_of(page)["name"] == "nightly"
    assert re.search(r'name="name"[^>]*value="nightly"', page)  # the PUT form

    task = TaskFactory(owner=user, name="report", status="pending")
    response = client.patch(
        f"/api/tasks/{task.pk}/", {"priority": "nope"}, content_type="application/json", **HTML
    )
    assert response.status_code == 400
    assert raw_content_of(response.content.decode())["name"] == "report"

    typed = "Typed-Secret-99"
    for path in ("/api/users/me/", f"/api/users/{user.pk}/"):
        response = client.patch(
            path, {"email": "bad", "password": typed}, content_type="application/json", **HTML
        )
        assert response.status_code == 400
        page = response.content.decode()
        assert raw_content_of(page)["username"] == user.username, path
        assert typed not in page, path


def test_options_describes_each_write_as_it_is_sent(client_for, user, staff):
    """OPTIONS (DRF's metadata action) described an upload by the file's read-only metadata
    (no ``file``), a schedule's create and PUT with every field read-only, and a user's
    create without its password."""

    def writable(who, path, method):
        fields = client_for(who).options(path).json()["actions"][method]
        return {name for name, field in fields.items() if not field["read_only"]}

    assert writable(user, "/api/files/", "POST") == {"file", "sha256"}
    schedule = make_schedule(user)
    expected = {"task_type", "input_data", "interval_seconds", "crontab", "enabled"}
    assert expected <= writable(user, "/api/schedules/", "POST")
    assert expected <= writable(user, f"/api/schedules/{schedule.pk}/", "PUT")
    assert {"username", "password"} <= writable(staff, "/api/users/", "POST")


def test_the_create_forms_raw_data_posts_as_it_is(user):
    """The schedules' raw-data form offered "timezone": "" (refused as blank) and no time
    to fire; both forms an input the sum refused."""
    client = signed_in(user)
    for path in ("/api/schedules/", "/api/tasks/"):
        content = raw_form_content(client, path)
        response = client.post(path, content, content_type="application/json")
        assert response.status_code == 201, (path, content, response.content)


def test_the_user_create_forms_raw_data_keeps_the_default_notifications(staff):
    """It offered "notify_email": [], so a user made from it got no mail at all, where one
    made through the HTML form or JSON got the default, task.failed."""
    content = raw_form_content(signed_in(staff), "/api/users/")
    assert content["notify_email"] == ["task.failed"]


def test_a_create_refused_by_a_rule_shows_its_form_as_it_was_typed(user):
    """A deadline in the past is refused by the service once the input is valid: the answer
    had no serializer, so DRF showed the create form empty, and what was typed was lost."""
    client = signed_in(user)
    response = client.post(
        "/api/tasks/",
        {
            "task_type": "sum",
            "name": "typed-name",
            "priority": "high",
            "input_data": '{"numbers": [7, 8]}',
            "deadline": "2000-01-01T00:00",
        },
        **HTML,
    )
    assert response.status_code == 400, response.content
    page = response.content.decode()
    assert "deadline_in_past" in page
    assert re.search(r'name="name"[^>]*value="typed-name"', page)
    assert re.search(r'<option value="high"\s+selected', page)
    assert "[7, 8]" in html.unescape(page)


def test_a_body_that_could_not_be_read_leaves_the_create_form_as_on_a_first_visit(user):
    """Nothing was read: the form is not bound to an empty body (each field would say it
    is required)."""
    client = signed_in(user)
    response = client.post("/api/tasks/", "{not json", content_type="application/json", **HTML)
    assert response.status_code == 400
    assert "This field is required." not in response.content.decode()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/api/tasks/{task}/", "text/plain", "x"),
        ("/api/tasks/{task}/", "application/xml", "<a/>"),
        ("/api/users/me/", "text/plain", "x"),
        ("/api/files/{file}/", "application/json", "{}"),
    ],
)
def test_a_put_of_a_body_no_parser_reads_is_its_error_page_for_a_browser(
    user, path, content_type, body
):
    """The page's forms read the body of a refused PUT again: a body no parser takes raised
    UnsupportedMediaType there too, and a browser got a 500 for a 405 or a 415."""
    from backend.files.tests.factories import make_file
    from backend.tasks.tests.factories import TaskFactory

    path = path.format(task=TaskFactory(owner=user).pk, file=make_file(user).pk)
    client = signed_in(user)
    response = client.put(path, body, content_type=content_type, **HTML)
    assert response.status_code in (405, 415), response.content[:300]
    assert response["Content-Type"].startswith("text/html")
    as_json = client.put(path, body, content_type=content_type)
    assert as_json.status_code == response.status_code


def test_a_page_never_reads_a_body_its_answer_did_not(user):
    """Reading the body for the page's forms parsed an upload the answer had refused
    unread (a 401, a 404), and Django's limits on its parts then replaced the answer: 400
    too_many_files for a browser, 401 for any other client."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    anonymous = Client()
    for accept in ("text/html", "application/json"):
        files = {f"f{i}": SimpleUploadedFile("a.txt", b"x") for i in range(101)}
        response = anonymous.post("/api/tasks/", files, HTTP_ACCEPT=accept)
        assert response.status_code == 401, (accept, response.content[:200])
    fields = "&".join(f"k{i}=v" for i in range(1001))
    missing = "/api/tasks/00000000-0000-0000-0000-000000000000/cancel/"
    response = signed_in(user).post(
        missing, fields, content_type="application/x-www-form-urlencoded", **HTML
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/tasks/{task}/",
        "/api/tasks/{task}/cancel/",
        "/api/tasks/{task}/assign/",
        "/api/files/{task}/",
        "/api/schedules/{task}/",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "options", "delete"])
def test_a_browser_not_signed_in_gets_its_401_page_not_a_500(user, path, method):
    """A task's link opened signed out (from a mail, a lapsed session): the page of the 401
    read the object as the anonymous user, a 500."""
    from backend.tasks.tests.factories import TaskFactory

    url = path.format(task=TaskFactory(owner=user).pk)
    response = getattr(Client(), method)(url, **HTML)
    assert response.status_code == 401, response.content[:300]
    assert "text/html" in response["Content-Type"]


def test_a_form_posted_without_its_csrf_token_is_a_403_page_not_a_500(user):
    from backend.tasks.tests.factories import TaskFactory

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    task = TaskFactory(owner=user)
    response = client.post(f"/api/tasks/{task.pk}/cancel/", **HTML)
    assert response.status_code == 403, response.content[:300]
    assert b"CSRF" in response.content


@pytest.mark.parametrize(
    ("path", "field"), [("/api/register/", "password"), ("/api/token/", "password")]
)
def test_sign_up_and_sign_in_offer_their_forms_to_a_browser_not_signed_in(path, field):
    """What a visitor may do is offered: the sign-up and sign-in pages kept their forms when
    the pages of a 401 stopped reading objects as the anonymous user."""
    page = Client().get(path, **HTML).content.decode()
    assert re.search(r'<form[^>]+method="POST"', page), page[-2000:]
    assert f'name="{field}"' in page
