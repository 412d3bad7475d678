"""A filter value that is not one of the choices is answered with the choices."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_wrong_status_lists_the_statuses(client_for, user):
    response = client_for(user).get("/api/tasks/?status=in_progress")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["status"] == [
        "in_progress is not one of the available choices: "
        "scheduled, pending, running, completed, failed, cancelled."
    ]


def test_a_wrong_type_lists_the_registered_types(client_for, user):
    response = client_for(user).get("/api/tasks/?task_type=sum,cleanup")

    assert response.status_code == 400
    message = response.json()["task_type"][0]
    assert message.startswith("cleanup is not one of the available choices: ")
    assert "countdown" in message and "sum" in message
