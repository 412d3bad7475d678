"""Preferences on /api/users/me/, the webhook secret endpoint, and a task's callback_url."""

import pytest

from backend.notifications import signing
from backend.notifications.models import TaskCallback
from backend.users.models import User

pytestmark = pytest.mark.django_db


def test_me_shows_the_preferences_with_their_defaults(user, client_for):
    body = client_for(user).get("/api/users/me/").json()
    assert body["notify_email"] == ["task.failed"]
    assert body["webhook_url"] == "" and body["webhook_secret_set"] is False
    assert "webhook_secret" not in body


def test_preferences_are_changed_with_patch(user, client_for):
    client = client_for(user)
    response = client.patch(
        "/api/users/me/",
        {
            "notify_email": ["task.completed", "task.failed", "task.completed"],
            "webhook_url": "https://hooks.example.com/in",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["notify_email"] == ["task.completed", "task.failed"]
    user.refresh_from_db()
    assert user.notify_email == ["task.completed", "task.failed"]
    assert user.webhook_url == "https://hooks.example.com/in"
    response = client.patch(
        "/api/users/me/", {"notify_email": [], "webhook_url": ""}, format="json"
    )
    assert response.status_code == 200 and response.json()["notify_email"] == []


def test_a_webhook_url_is_cleared_with_null_as_with_empty(user, client_for):
    """A client clears a field with null: it was a 400 "This field may not be null"."""
    User.objects.filter(pk=user.pk).update(webhook_url="https://hooks.example.com/in")
    response = client_for(user).patch("/api/users/me/", {"webhook_url": None}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["webhook_url"] == ""
    user.refresh_from_db()
    assert user.webhook_url == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"notify_email": ["task.exploded"]}, "notify_email"),
        ({"notify_email": "task.failed"}, "notify_email"),
        ({"notify_email": [1]}, "notify_email"),
        ({"webhook_url": "ftp://hooks.example.com/"}, "webhook_url"),
        ({"webhook_url": "javascript:alert(1)"}, "webhook_url"),
        ({"webhook_url": "http://192.168.0.10/hook"}, "webhook_url"),
        ({"webhook_url": "http://169.254.169.254/"}, "webhook_url"),
        ({"webhook_url": "http://[::1]:9000/"}, "webhook_url"),
        ({"webhook_url": "http://" + "a" * 2100 + ".com/"}, "webhook_url"),
    ],
)
def test_bad_preferences_are_400_and_change_nothing(user, client_for, body, field):
    response = client_for(user).patch("/api/users/me/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()
    user.refresh_from_db()
    assert user.notify_email == ["task.failed"] and user.webhook_url == ""


def test_the_webhook_secret_is_shown_once_and_rotates(user, client_for):
    client = client_for(user)
    first = client.post("/api/users/me/webhook-secret/")
    assert first.status_code == 201
    secret = first.json()["webhook_secret"]
    assert secret.startswith(signing.PREFIX)
    user.refresh_from_db()
    assert user.webhook_secret == secret
    me = client.get("/api/users/me/").json()
    assert me["webhook_secret_set"] is True and secret not in str(me)
    second = client.post("/api/users/me/webhook-secret/")
    assert second.status_code == 201 and second.json()["webhook_secret"] != secret


def test_a_retried_rotation_with_an_idempotency_key_gets_the_same_secret(user, client_for):
    client = client_for(user)
    first = client.post("/api/users/me/webhook-secret/", HTTP_IDEMPOTENCY_KEY="rotate-1")
    again = client.post("/api/users/me/webhook-secret/", HTTP_IDEMPOTENCY_KEY="rotate-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    user.refresh_from_db()
    assert user.webhook_secret == first.json()["webhook_secret"]


def test_the_webhook_secret_needs_a_login(api_client):
    assert api_client.post("/api/users/me/webhook-secret/").status_code == 401


def test_a_task_keeps_its_callback_url(user, client_for):
    response = client_for(user).post(
        "/api/tasks/",
        {"task_type": "manual", "callback_url": "https://cb.example.com/done"},
        format="json",
    )
    assert response.status_code == 201
    assert "callback_url" not in response.json()  # write-only: it may carry a token
    assert TaskCallback.objects.get(task_id=response.json()["id"]).url == (
        "https://cb.example.com/done"
    )


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://10.1.1.1/", "http://0x7f.1/"])
def test_a_bad_callback_url_is_a_400(user, client_for, url):
    response = client_for(user).post(
        "/api/tasks/", {"task_type": "manual", "callback_url": url}, format="json"
    )
    assert response.status_code == 400 and "callback_url" in response.json()
    assert not TaskCallback.objects.exists()


# --- the notifications list ----------------------------------------------------------------


def _webhook_without_secret(user):
    """A task of ``user``, whose webhook has no secret: its task.created notification fails
    at once, its error saying why."""
    from backend.notifications import jobs
    from backend.notifications.models import Notification
    from backend.tasks import services as task_services

    user.webhook_url = "https://hooks.example.com/in"
    user.notify_email = []
    user.save()
    task = task_services.task_create(owner=user, task_type="manual", name="told")
    notification = Notification.objects.get(task_id=task.pk)
    assert jobs.deliver_notification(str(notification.pk)) == "failed"
    return task, notification


def test_a_user_sees_their_notifications_and_why_one_failed(user, client_for, sent):
    """A webhook without a secret (or refused by its receiver) failed where only staff could
    see it, in the admin."""
    from backend.users.tests.factories import UserFactory

    task, notification = _webhook_without_secret(user)
    client = client_for(user)
    body = client.get("/api/notifications/").json()
    assert body["count"] == 1
    [shown] = body["results"]
    assert shown == {
        "id": str(notification.pk),
        "event": "task.created",
        "channel": "webhook",
        "target": "https://hooks.example.com/in",
        "task": str(task.pk),
        "status": "failed",
        "attempts": 1,
        "last_error": "no webhook secret: create one with POST /api/users/me/webhook-secret/",
        "created_at": shown["created_at"],
        "delivered_at": None,
        "next_attempt_at": None,
    }
    assert client.get(f"/api/notifications/{notification.pk}/").json() == shown

    other = client_for(UserFactory())
    assert other.get("/api/notifications/").json()["count"] == 0
    missing = other.get(f"/api/notifications/{notification.pk}/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    staff = client_for(UserFactory(is_staff=True))
    assert staff.get("/api/notifications/").json()["count"] == 1


def test_the_notifications_list_filters_and_refuses_what_it_cannot_filter(user, client_for, sent):
    task, notification = _webhook_without_secret(user)
    client = client_for(user)
    for query, count in [
        ("status=failed", 1),
        ("status=pending", 0),
        ("channel=webhook", 1),
        ("channel=email", 0),
        ("event=task.created", 1),
        ("event=task.failed", 0),
        (f"task={task.pk}", 1),
        ("task=00000000-0000-0000-0000-000000000000", 0),
        # Several values, comma-separated or repeated (the last alone was taken).
        ("status=delivered,failed", 1),
        ("status=delivered&status=failed", 1),
        ("event=task.completed&event=task.created", 1),
        ("channel=email,callback", 0),
    ]:
        response = client.get(f"/api/notifications/?{query}")
        assert response.status_code == 200 and response.json()["count"] == count, query
    for query in (
        "status=lost",
        "status=failed,lost",
        "channel=pigeon",
        "event=task.exploded",
        "task=12",
    ):
        response = client.get(f"/api/notifications/?{query}")
        assert response.status_code == 400, query
    assert client.post("/api/notifications/", {}).status_code == 405
    assert client.delete(f"/api/notifications/{notification.pk}/").status_code == 405
    assert client_for(None).get("/api/notifications/").status_code == 401


def test_the_schema_describes_the_notifications_as_they_are_answered(api_client):
    """next_attempt_at is null once a notification is delivered or failed: the schema said
    it never was, and a generated client failed on the list; the operations were tagged
    "api" instead of their resource."""
    schema = api_client.get("/api/schema/?format=json").json()
    field = schema["components"]["schemas"]["Notification"]["properties"]["next_attempt_at"]
    assert field["nullable"] is True
    for path in ("/api/notifications/", "/api/notifications/{id}/"):
        assert schema["paths"][path]["get"]["tags"] == ["notifications"]
    # One enum of the events, whether a notification's or a choice of notify_email.
    assert "NotifyEmailEnum" not in schema["components"]["schemas"]
    notify = schema["components"]["schemas"]["User"]["properties"]["notify_email"]["items"]
    assert notify == {"$ref": "#/components/schemas/NotificationEvent"}
