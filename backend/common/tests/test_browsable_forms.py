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
