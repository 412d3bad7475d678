"""The browsable API's raw-data form of a PUT or PATCH holds what may be sent back: posted
unchanged, it is accepted."""

import html
import json
import re

import pytest
from django.test import Client

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
