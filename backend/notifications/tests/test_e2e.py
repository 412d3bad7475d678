"""End to end: real worker and beat processes deliver notifications to a real webhook
receiver and a real SMTP server on loopback; a receiver that fails is retried by the
dispatcher, and a worker killed in the middle of a delivery does not lose it."""

import json
import threading

import pytest

from backend.common.tests.httpserver import Answer, HTTPServer
from backend.common.tests.smtpd import SMTPServer
from backend.notifications.models import Notification
from backend.notifications.tests.conftest import signed_by
from backend.tasks.models import Task, TaskStatus
from backend.tasks.tests.processes import Cluster, purge_filesystem_broker, wait_for
from backend.users import services as user_services

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def smtp():
    with SMTPServer() as server:
        yield server


@pytest.fixture
def notify_cluster(transactional_db, tmp_path, smtp, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    purge_filesystem_broker()
    running = Cluster(
        tmp_path,
        extra_env={
            "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
            "EMAIL_URL": smtp.url(),
            "EMAIL_TIMEOUT": "1",
            "NOTIFY_BACKOFF": "1",
            "NOTIFY_DISPATCH_INTERVAL": "1",
            "NOTIFY_REDISPATCH_AFTER": "2",
            "NOTIFY_WEBHOOK_TIMEOUT": "3",
        },
    )
    yield running
    running.stop()


def _listen(user, url, events):
    user.notify_email = events
    user.webhook_url = url
    user.save()
    return user_services.user_webhook_secret_rotate(user=user)


def _all_settled(count):
    rows = list(Notification.objects.values_list("status", flat=True))
    return len(rows) == count and all(status != "pending" for status in rows) and rows


def test_a_completed_task_reaches_the_receiver_and_the_mailbox_once(
    notify_cluster, smtp, user, client_for
):
    def answer(request):
        # The completion is refused twice, then taken; the creation at once.
        event = json.loads(request.body)["type"]
        tries = sum(
            1
            for seen in receiver.requests
            if seen.headers["webhook-id"] == request.headers["webhook-id"]
        )
        return Answer(500) if event == "task.completed" and tries <= 2 else Answer(200)

    with HTTPServer(answer) as receiver:
        secret = _listen(user, receiver.url("/hook"), ["task.completed"])
        notify_cluster.start_worker()
        notify_cluster.start_beat()
        created = client_for(user).post(
            "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [2, 3]}}, format="json"
        )
        assert created.status_code == 201

        # created (webhook), completed (webhook, email): three notifications, all settled.
        statuses = wait_for(lambda: _all_settled(3), timeout=90, what="the notifications")
        assert set(statuses) == {"delivered"}, notify_cluster.logs()
        requests = list(receiver.requests)

    task = Task.objects.get(pk=created.json()["id"])
    assert task.status == TaskStatus.COMPLETED
    by_event = {}
    for request in requests:
        assert signed_by(request, secret)
        by_event.setdefault(json.loads(request.body)["type"], []).append(request)
    assert len(by_event["task.created"]) == 1
    completed = by_event["task.completed"]
    assert len(completed) == 3 and len({r.headers["webhook-id"] for r in completed}) == 1
    assert json.loads(completed[-1].body)["data"]["result"] == {"result": 5}

    [mail] = smtp.messages  # task.completed only: task.created is not in notify_email
    assert mail.recipients == [user.email] and "completed" in mail.message["Subject"]
    webhook = Notification.objects.get(event="task.completed", channel="webhook")
    assert webhook.attempts == 3 and webhook.delivery_attempts.count() == 3


def test_a_worker_killed_during_a_delivery_does_not_lose_it(notify_cluster, user, client_for):
    release = threading.Event()

    def answer(request):
        if len(receiver.requests) == 1:
            release.wait(timeout=30)  # the first delivery hangs until the worker is gone
        return Answer(200)

    with HTTPServer(answer) as receiver:
        _listen(user, receiver.url(), [])
        worker = notify_cluster.start_worker()
        notify_cluster.start_beat()
        task = client_for(user).post("/api/tasks/", {"task_type": "manual"}, format="json")
        assert task.status_code == 201

        wait_for(lambda: len(receiver.requests) >= 1, timeout=60, what="the first delivery")
        worker.kill()  # SIGKILL, mid-delivery
        release.set()
        notification = Notification.objects.get()
        assert notification.status == "pending"

        notify_cluster.start_worker()
        wait_for(
            lambda: Notification.objects.filter(status="delivered").exists(),
            timeout=90,
            what="the delivery after the restart",
        )
        requests = list(receiver.requests)

    notification.refresh_from_db()
    assert notification.attempts == 2
    assert len(requests) == 2
    assert {r.headers["webhook-id"] for r in requests} == {str(notification.pk)}


def test_an_event_while_the_broker_is_unreachable_is_delivered_later(
    notify_cluster, smtp, user, client_for, request
):
    """The web process cannot reach the broker when the task is completed: the request still
    succeeds, the notification waits in the outbox, and the dispatcher (beat, on the broker
    that is back for it) has a worker deliver it once."""
    with HTTPServer() as receiver:
        _listen(user, receiver.url(), [])
        notify_cluster.start_worker()
        notify_cluster.start_beat()
        request.getfixturevalue("broker_down")  # from now on, this process's sends fail
        client = client_for(user)
        task = client.post("/api/tasks/", {"task_type": "manual"}, format="json").json()
        done = client.post(f"/api/tasks/{task['id']}/complete/", {}, format="json")
        assert done.status_code == 200
        assert Notification.objects.filter(enqueued_at__isnull=True).count() == 2

        statuses = wait_for(lambda: _all_settled(2), timeout=90, what="the delivery")
        assert set(statuses) == {"delivered"}, notify_cluster.logs()
        events = sorted(json.loads(r.body)["type"] for r in receiver.requests)
    assert events == ["task.completed", "task.created"]
