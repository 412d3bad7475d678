"""Delivering notifications to a real SMTP server and real webhook receivers on loopback:
signatures, retries with backoff, the guarded claim, 410 Gone, the dispatcher."""

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from backend.common.tests.conftest import _loopback_only  # noqa: F401
from backend.common.tests.httpserver import Answer, HTTPServer
from backend.common.tests.smtpd import SMTPServer, use_smtp
from backend.notifications import jobs, services, signing
from backend.notifications.delivery import VERBS, email_message
from backend.notifications.models import DeliveryAttempt, Notification, TaskCallback
from backend.notifications.tests.conftest import signed_by
from backend.tasks import services as task_services
from backend.tasks.models import Task
from backend.users import services as user_services

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _guard(_loopback_only, settings):  # noqa: F811
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.NOTIFY_MAX_ATTEMPTS = 8
    settings.NOTIFY_BACKOFF = 30
    settings.NOTIFY_MAX_DELAY = 3600


def hooked(user, url):
    user.webhook_url = url
    user.notify_email = []
    user.save()
    secret = user_services.user_webhook_secret_rotate(user=user)
    return secret


def completed_task(user, **kwargs):
    task = task_services.task_create(owner=user, task_type="manual", input_data={}, **kwargs)
    Notification.objects.all().delete()  # keep the completion's only
    return task_services.task_complete(task=task, actor=user, result={"answer": 42})


def due_again(notification):
    Notification.objects.filter(pk=notification.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_signed_webhook_retried_after_two_500s_keeps_its_id(user, sent):
    with HTTPServer([Answer(500), Answer(500), Answer(204, b"")]) as receiver:
        secret = hooked(user, receiver.url("/hooks"))
        task = completed_task(user)
        notification = Notification.objects.get()
        outcomes = []
        for _ in range(3):
            outcomes.append(jobs.deliver_notification(str(notification.pk)))
            due_again(notification)
        assert outcomes == ["pending", "pending", "delivered"]
        assert jobs.deliver_notification(str(notification.pk)).startswith("skipped")

    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(notification.pk)}
    for request in receiver.requests:
        assert signed_by(request, secret)
        assert not signed_by(request, signing.new_secret())
    body = json.loads(receiver.requests[0].body)
    assert body["type"] == "task.completed" and body["timestamp"].endswith("Z")
    assert body["data"]["id"] == str(task.pk) and body["data"]["status"] == "completed"
    # The task's address, absolute as in the API, from PUBLIC_BASE_URL (no request here).
    assert body["data"]["url"] == f"http://127.0.0.1:8000/api/tasks/{task.pk}/"
    assert body["data"]["result"] == {"answer": 42}

    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.attempts == 3
    attempts = list(
        notification.delivery_attempts.values_list("number", "delivered", "status_code", "error")
    )
    assert attempts == [
        (1, False, 500, "the receiver answered 500"),
        (2, False, 500, "the receiver answered 500"),
        (3, True, 204, ""),
    ]
    # Delivered: the dispatcher never sends it again.
    sent.clear()
    assert services.notifications_dispatch() == {"due": 0, "sent": 0}


def test_after_a_rotation_webhooks_are_signed_with_both_secrets_for_the_overlap(
    user, sent, settings
):
    """The old secret stopped at once, so a receiver could not switch without rejecting
    deliveries (each using an attempt). For WEBHOOK_SECRET_OVERLAP the replaced secret signs
    too (a second v1 signature, as Standard Webhooks allows); then only the new one."""
    settings.WEBHOOK_SECRET_OVERLAP = 3600
    with HTTPServer([Answer(204, b"")] * 3) as receiver:
        old = hooked(user, receiver.url("/hooks"))
        completed_task(user)
        jobs.deliver_notification(str(Notification.objects.get().pk))
        new = user_services.user_webhook_secret_rotate(user=user)
        completed_task(user)
        jobs.deliver_notification(str(Notification.objects.get().pk))
        user.refresh_from_db()
        user.__class__.objects.filter(pk=user.pk).update(
            webhook_secret_rotated_at=timezone.now() - timedelta(seconds=3600)
        )
        completed_task(user)
        jobs.deliver_notification(str(Notification.objects.get().pk))

    first, during, after = receiver.requests
    assert len(first.headers["webhook-signature"].split(" ")) == 1  # no secret before
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert signed_by(during, new) and signed_by(during, old)
    assert during.headers["webhook-signature"].startswith(
        signing.sign(
            secret=new,
            msg_id=during.headers["webhook-id"],
            timestamp=int(during.headers["webhook-timestamp"]),
            body=during.body,
        )
    )
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert signed_by(after, new) and not signed_by(after, old)


def test_with_no_overlap_a_rotation_stops_the_old_secret_at_once(user, sent, settings):
    settings.WEBHOOK_SECRET_OVERLAP = 0
    with HTTPServer([Answer(204, b"")]) as receiver:
        old = hooked(user, receiver.url("/hooks"))
        new = user_services.user_webhook_secret_rotate(user=user)
        completed_task(user)
        jobs.deliver_notification(str(Notification.objects.get().pk))
    (request,) = receiver.requests
    assert signed_by(request, new) and not signed_by(request, old)


def test_a_retry_sends_the_same_message_though_the_task_changed_meanwhile(user, sent):
    """One webhook-id, one body: the task as the first attempt found it, even when it has
    been renamed (or has finished) before the retry. Mails are built from it too."""
    with HTTPServer([Answer(500), Answer(204, b"")]) as receiver:
        hooked(user, receiver.url("/hooks"))
        task = task_services.task_create(owner=user, task_type="manual", name="first name")
        notification = Notification.objects.get(event="task.created")
        assert jobs.deliver_notification(str(notification.pk)) == "pending"
        Task.objects.filter(pk=task.pk).update(name="renamed", status="completed")
        due_again(notification)
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
    first, retry = receiver.requests
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] == str(notification.pk)
    assert first.body == retry.body
    data = json.loads(retry.body)["data"]
    assert data["name"] == "first name" and data["status"] == "pending"


def test_failed_attempts_back_off_with_jitter_then_give_up(user, sent, settings):
    settings.NOTIFY_MAX_ATTEMPTS = 3
    with HTTPServer([Answer(503)]) as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        delays = []
        for _ in range(3):
            before = timezone.now()
            jobs.deliver_notification(str(notification.pk))
            notification.refresh_from_db()
            delays.append((notification.next_attempt_at - before).total_seconds())
            due_again(notification)
    assert notification.status == "failed" and notification.attempts == 3
    assert notification.last_error == "the receiver answered 503"
    assert 15 - 1 <= delays[0] <= 30 + 1 and 30 - 1 <= delays[1] <= 60 + 1
    assert DeliveryAttempt.objects.count() == 3


@pytest.mark.parametrize(
    "status, header, least, most",
    [
        (429, "7200", 7200, 7200),
        (503, "7200", 7200, 7200),
        (429, "in_an_hour", 3600 - 30, 3600 + 1),  # an HTTP date, an hour ahead
        (429, "99999999999999999999", 24 * 3600, 24 * 3600),  # at most a day
        (429, "soon", 15, 30),  # unreadable: the backoff's own delay
        (429, "1", 15, 30),  # shorter than the backoff: the backoff
        (500, "7200", 15, 30),  # only a 429's or a 503's is read
    ],
)
def test_a_receiver_asking_to_wait_is_not_tried_before_it_said(
    user, sent, settings, status, header, least, most
):
    """A receiver answering 429 with Retry-After: 7200 was tried again within seconds and
    its event failed after NOTIFY_MAX_ATTEMPTS, before the time it had asked for."""
    from django.utils.http import http_date

    if header == "in_an_hour":
        header = http_date(time.time() + 3600)
    with HTTPServer([Answer(status, headers={"Retry-After": header})]) as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        before = timezone.now()
        assert jobs.deliver_notification(str(notification.pk)) == "pending"
        after = timezone.now()
    notification.refresh_from_db()
    # Counted from the attempt's end, which falls between the two.
    assert (notification.next_attempt_at - before).total_seconds() >= least - 1
    assert (notification.next_attempt_at - after).total_seconds() <= most + 1
    assert notification.last_error.startswith(f"the receiver answered {status}")
    said = status in (429, 503) and header != "soon"
    assert ("Retry-After" in notification.last_error) is said


def test_retry_delays_double_up_to_the_cap(settings):
    settings.NOTIFY_BACKOFF = 30
    settings.NOTIFY_MAX_DELAY = 100
    for attempt, ceiling in [(1, 30), (2, 60), (3, 100), (10, 100)]:
        for _ in range(20):
            assert ceiling / 2 <= services.retry_delay(attempt) <= ceiling


def test_410_gone_disables_the_users_webhook(user, sent):
    with HTTPServer([Answer(410)]) as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
    user.refresh_from_db()
    assert user.webhook_url == ""
    notification.refresh_from_db()
    assert notification.status == "failed" and notification.attempts == 1


def test_a_410_from_a_callback_leaves_the_users_webhook(user, sent):
    with HTTPServer([Answer(410)]) as receiver, HTTPServer() as own:
        hooked(user, own.url())
        completed_task(user, callback_url=receiver.url("/cb"))
        callback = Notification.objects.get(channel="callback")
        assert jobs.deliver_notification(str(callback.pk)) == "failed"
    user.refresh_from_db()
    assert user.webhook_url == own.url()


def test_a_410_from_a_callback_stops_the_tasks_later_events_going_there(user, sent):
    user_services.user_webhook_secret_rotate(user=user)  # callbacks are signed with it
    with HTTPServer([Answer(410)]) as receiver:
        task = task_services.task_create(
            owner=user, task_type="manual", input_data={}, callback_url=receiver.url("/cb")
        )
        created = Notification.objects.get(channel="callback")
        assert jobs.deliver_notification(str(created.pk)) == "failed"
        created.refresh_from_db()
        assert created.last_error == "the receiver answered 410 Gone"
        task_services.task_cancel(task=task, actor=user)
    assert not TaskCallback.objects.filter(task_id=task.pk).exists()
    assert not Notification.objects.filter(channel="callback").exclude(pk=created.pk).exists()
    assert len(receiver.requests) == 1


def test_two_workers_never_send_the_same_notification(user, sent):
    with HTTPServer() as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        first = services.notification_claim(notification_id=notification.pk)
        assert first is not None
        assert services.notification_claim(notification_id=notification.pk) is None
        assert jobs.deliver_notification(str(notification.pk)).startswith("skipped")
        assert receiver.requests == []
    assert services.notification_claim(notification_id="not-a-uuid") is None


def test_a_crashed_delivery_is_taken_again_after_its_lease(user, sent):
    with HTTPServer() as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        assert services.notification_claim(notification_id=notification.pk)  # then a crash
        Notification.objects.filter(pk=notification.pk).update(
            locked_until=timezone.now() - timedelta(seconds=1),
            enqueued_at=timezone.now() - timedelta(hours=1),
        )
        sent.clear()
        assert services.notifications_dispatch() == {"due": 1, "sent": 1}
        assert jobs.deliver_notification(sent[0]) == "delivered"
        assert len(receiver.requests) == 1
    notification.refresh_from_db()
    assert notification.attempts == 2 and notification.status == "delivered"
    # The lost attempt is stored too, as lost: only the second one was.
    lost, delivered = notification.delivery_attempts.order_by("number")
    assert (lost.number, lost.delivered, lost.error) == (1, False, services.LOST_ATTEMPT)
    assert (delivered.number, delivered.delivered) == (2, True)


def test_no_secret_fails_without_calling(user, sent):
    with HTTPServer() as receiver:
        user.webhook_url = receiver.url()
        user.save()
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
        assert receiver.connections == 0
    notification.refresh_from_db()
    assert "POST /api/users/me/webhook-secret/" in notification.last_error


def test_a_refused_target_fails_without_connecting(user, sent, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with HTTPServer() as receiver:
        hooked(user, f"http://localhost:{receiver.port}/")  # a name: checked when sent
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
        assert receiver.connections == 0
    notification.refresh_from_db()
    assert "loopback" in notification.last_error and notification.attempts == 1


def test_emails_arrive_for_the_chosen_events_only(user, settings, sent):
    user.notify_email = ["task.completed"]
    user.save()
    with SMTPServer() as smtp:
        use_smtp(settings, smtp)
        task = task_services.task_create(owner=user, task_type="manual", input_data={})
        task_services.task_complete(task=task, actor=user, result={"answer": 42})
        [notification] = Notification.objects.all()
        assert notification.event == "task.completed"
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
        [mail] = smtp.messages
    assert mail.recipients == [user.email]
    assert mail.message["Subject"] == f'Task "{task.name}" completed'
    # The same at every attempt (one sent again after a lost outcome is one message).
    assert mail.message["Message-ID"] == f"<notification.{notification.pk}@localhost>"
    text = mail.message.get_body(("plain",)).get_content()
    assert "Type:   manual" in text and "Status: completed" in text
    assert 'Result: {"answer": 42}' in text
    assert f"http://127.0.0.1:8000/api/tasks/{task.pk}/" in text


def test_a_name_with_line_breaks_still_makes_a_one_line_subject(user, settings, sent):
    user.notify_email = ["task.completed"]
    user.save()
    with SMTPServer() as smtp:
        use_smtp(settings, smtp)
        task = task_services.task_create(
            owner=user, task_type="manual", input_data={}, name="line1\r\nBcc: x@example.com\n"
        )
        task_services.task_complete(task=task, actor=user, result={"answer": 42})
        [notification] = Notification.objects.all()
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
        [mail] = smtp.messages
    assert mail.recipients == [user.email]
    assert mail.message["Subject"] == 'Task "line1 Bcc: x@example.com" completed'
    assert mail.message["Bcc"] is None


@pytest.mark.parametrize(
    "event", ["task.created", "task.completed", "task.failed", "task.cancelled"]
)
@pytest.mark.parametrize(
    "name", ["Quarterly report " + "x" * 180, "Ü" * 199, "a" * 190 + " " * 9 + "b"]
)
def test_a_long_name_is_shortened_and_the_subject_still_says_what_happened(event, name):
    """A subject was cut at 200 characters: a long name took the event with it, and the
    recipient could not tell whether the task failed or completed."""
    notification = Notification(event=event, task_id=uuid.uuid4(), channel="email")
    subject, _ = email_message(notification, {"name": name})
    assert len(subject) <= 200
    assert subject.endswith(f'…" {VERBS[event]}')
    assert subject.startswith(f'Task "{name[:20]}')
    short = email_message(notification, {"name": "short"})[0]
    assert short == f'Task "short" {VERBS[event]}'


def test_an_smtp_failure_is_retried(user, settings, sent):
    use_smtp(settings, SMTPServer())  # never started
    user.notify_email = ["task.completed"]
    user.save()
    completed_task(user)
    notification = Notification.objects.get()
    assert jobs.deliver_notification(str(notification.pk)) == "pending"
    notification.refresh_from_db()
    assert notification.last_error.startswith("could not connect to the mail server")


@pytest.mark.parametrize(
    ("code", "status", "ends"),
    [
        (550, "", "failed"),  # 5.1.1: no such mailbox
        (550, "5.2.1", "failed"),  # a mailbox disabled
        (450, "", "pending"),  # for now
        (554, "5.7.1", "pending"),  # relaying denied: the service's settings, to be mended
        (530, "5.7.0", "pending"),  # a login required: the same
        (550, None, "pending"),  # no enhanced status: Exim's bare "550 relay not permitted"
    ],
)
def test_a_refused_address_fails_at_once_a_refusal_for_now_is_retried(
    user, settings, sent, code, status, ends
):
    """A relay's refusal at RCPT (5.7.x) is the service's settings, not the address:
    failing every notification at once lost them all to a setting an operator mends."""
    user.notify_email = ["task.completed"]
    user.save()
    with SMTPServer() as smtp:
        use_smtp(settings, smtp)
        smtp.handler.refuse_recipients = {user.email}
        smtp.handler.refuse_code = code
        smtp.handler.refuse_status = status
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == ends
    notification.refresh_from_db()
    assert notification.status == ends
    assert notification.last_error == (
        f"the mail server refused every recipient: {user.email} (SMTP {code})"
    )
    assert notification.attempts == 1


def test_a_deleted_task_is_still_reported(user, sent):
    with HTTPServer() as receiver:
        hooked(user, receiver.url())
        task = completed_task(user)
        Task.objects.filter(pk=task.pk).delete()
        jobs.deliver_notification(str(Notification.objects.get().pk))
    assert json.loads(receiver.requests[0].body)["data"] == {"id": str(task.pk), "deleted": True}


def test_a_broker_outage_delays_but_does_not_lose(user, broker_down, monkeypatch):
    from backend.tasks import queue

    queue.breaker.trip()  # the broker failed a moment ago: nothing is sent, all is kept
    with HTTPServer() as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        assert notification.enqueued_at is None
        assert services.notifications_dispatch() == {"due": 1, "sent": 0}
        queue.breaker.reset()
        messages = []
        monkeypatch.setattr(
            services.queue,
            "send_messages",
            lambda name, args, queue, rank: (
                messages.extend(pk for (b,) in args for pk in b) or len(args)
            ),
        )
        assert services.notifications_dispatch() == {"due": 1, "sent": 1}
        assert jobs.deliver_notification(messages[0]) == "delivered"
    notification.refresh_from_db()
    assert notification.enqueued_at is not None and notification.status == "delivered"


def test_resend_makes_a_notification_due_again(user, sent):
    """Only where the owner still wants it: the 410 cleared their webhook_url, so a resend
    fails unsent until they set it again."""
    with HTTPServer([Answer(410), Answer(200)]) as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        jobs.deliver_notification(str(notification.pk))
        assert services.notifications_resend(queryset=Notification.objects.all()) == 1
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
        user.webhook_url = receiver.url()
        user.save(update_fields=["webhook_url"])
        assert services.notifications_resend(queryset=Notification.objects.all()) == 1
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
    assert len(receiver.requests) == 2


def test_a_resent_delivered_notification_is_pending_without_a_delivery_time(user, sent):
    with HTTPServer([Answer(200), Answer(200)]) as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
        notification.refresh_from_db()
        first = notification.delivered_at
        assert first is not None
        services.notifications_resend(queryset=Notification.objects.all())
        notification.refresh_from_db()
        assert (notification.status, notification.delivered_at) == ("pending", None)
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
    notification.refresh_from_db()
    assert notification.delivered_at is not None and notification.delivered_at >= first


def test_the_signature_matches_the_standard_webhooks_test_vector():
    # Published with the Standard Webhooks specification and its reference libraries.
    assert (
        signing.sign(
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp=1614265330,
            body=b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_new_secrets_are_random_and_prefixed():
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_") and first != second and len(first) == 50


def test_a_slow_attempt_taken_over_keeps_one_row_with_its_own_outcome(user, sent):
    """An attempt that outlived its lease (a slow server, not a dead worker) is taken over
    and written as lost; its own outcome, recorded late, replaces that row: one row per
    attempt number, never a "lost" and a "delivered" one side by side."""
    with HTTPServer() as receiver:
        hooked(user, receiver.url())
        completed_task(user)
        notification = Notification.objects.get()
        slow = services.notification_claim(notification_id=notification.pk)
        Notification.objects.filter(pk=notification.pk).update(
            locked_until=timezone.now() - timedelta(seconds=1)
        )
        assert services.notification_claim(notification_id=notification.pk)  # the takeover
        services.notification_record(
            notification=slow,
            started_at=timezone.now(),
            outcome=services.Outcome(delivered=True, status_code=200),
        )
    rows = list(notification.delivery_attempts.values_list("number", "delivered", "error"))
    assert rows == [(1, True, "")]
    # Delivered, though the attempt that took over is still under way: it was left pending,
    # and sent again and again while each attempt outlived its lease.
    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.delivered_at is not None
    sent.clear()
    assert services.notifications_dispatch() == {"due": 0, "sent": 0}


def test_the_lease_outlasts_a_mail_server_answering_each_step_just_in_time(settings):
    """It was 3 x EMAIL_TIMEOUT, while one send waits for about ten replies."""
    settings.EMAIL_TIMEOUT = 10
    settings.NOTIFY_WEBHOOK_TIMEOUT = 10
    assert services._lease() >= timedelta(seconds=10 * 11)


def created_webhooks(user, count: int) -> list[Notification]:
    for number in range(count):
        task_services.task_create(owner=user, task_type="manual", name=f"t{number}")
    return list(Notification.objects.order_by("created_at"))


def silent_at_first() -> HTTPServer:
    """A receiver whose first request outlasts a NOTIFY_WEBHOOK_TIMEOUT of 1 s (no answer in
    time); it answers 204 to the others."""

    def answer(request):
        if len(receiver.requests) == 1:
            time.sleep(2)
        return Answer(204, b"")

    receiver = HTTPServer(answer)
    return receiver


def test_a_users_webhooks_under_way_at_once_are_bounded(user, sent, settings):
    """One user's receivers, each hanging on a port of its own (the rest is per receiver),
    held every process of the long queue: everyone's notifications and long tasks waited
    minutes. With NOTIFY_USER_CONCURRENCY of the user's webhooks under way, another waits
    for the dispatcher's next round, using no attempt; other users' go on."""
    from backend.users.tests.factories import UserFactory

    settings.NOTIFY_USER_CONCURRENCY = 2
    settings.NOTIFY_DISPATCH_INTERVAL = 10
    with HTTPServer([Answer(204, b"")] * 5) as receiver:
        hooked(user, receiver.url("/hooks"))
        first, second, third = created_webhooks(user, 3)
        # The first two under way in other processes, waiting on their receivers.
        held = Notification.objects.filter(pk__in=[first.pk, second.pk])
        held.update(attempts=1, locked_until=timezone.now() + timedelta(seconds=60))
        before = timezone.now()
        assert jobs.deliver_notification(str(third.pk)).startswith("skipped")
        after = timezone.now()
        third.refresh_from_db()
        assert third.status == "pending" and third.attempts == 0
        assert third.enqueued_at is None  # the dispatcher sends it again
        # A second before the dispatcher's next round (NOTIFY_DISPATCH_INTERVAL).
        assert before + timedelta(seconds=9) <= third.next_attempt_at
        assert third.next_attempt_at <= after + timedelta(seconds=9)
        assert receiver.requests == []
        assert not DeliveryAttempt.objects.exists()

        someone = UserFactory()
        hooked(someone, receiver.url("/theirs"))
        task_services.task_create(owner=someone, task_type="manual", name="theirs")
        theirs = Notification.objects.get(user=someone)
        assert jobs.deliver_notification(str(theirs.pk)) == "delivered"

        # An attempt whose lease ran out (its worker was lost) is no longer under way.
        Notification.objects.filter(pk=first.pk).update(
            locked_until=timezone.now() - timedelta(seconds=1)
        )
        due_again(third)
        assert jobs.deliver_notification(str(third.pk)) == "delivered"
    assert [r.path for r in receiver.requests] == ["/theirs", "/hooks"]


def test_the_dispatcher_leaves_out_a_busy_users_webhooks(user, sent, settings):
    """A user at NOTIFY_USER_CONCURRENCY with a backlog of due webhooks: they came first in
    every round (the oldest due), each only to wait again, and another user's retry went
    out rounds late. Their mails still go."""
    from backend.users.tests.factories import UserFactory

    settings.NOTIFY_USER_CONCURRENCY = 2
    hooked(user, "http://127.0.0.1:9/hooks")
    backlog = created_webhooks(user, 5)
    long_ago = timezone.now() - timedelta(minutes=5)
    Notification.objects.filter(pk__in=[n.pk for n in backlog]).update(
        next_attempt_at=long_ago, enqueued_at=None
    )
    held = Notification.objects.filter(pk__in=[backlog[0].pk, backlog[1].pk])
    held.update(attempts=1, locked_until=timezone.now() + timedelta(seconds=60))
    mail = Notification.objects.create(
        user=user,
        task_id=backlog[0].task_id,
        event="task.created",
        channel="email",
        target="someone@example.com",
        next_attempt_at=long_ago,
    )
    someone = UserFactory()
    hooked(someone, "http://127.0.0.1:9/theirs")
    task_services.task_create(owner=someone, task_type="manual", name="theirs")
    theirs = Notification.objects.get(user=someone)
    Notification.objects.filter(pk=theirs.pk).update(enqueued_at=None)
    sent.clear()
    assert services.notifications_dispatch(batch_size=2) == {"due": 2, "sent": 2}
    assert {str(pk) for pk in sent} == {str(mail.pk), str(theirs.pk)}
    # Once the user has room again, its backlog goes.
    held.update(locked_until=None)
    sent.clear()
    assert services.notifications_dispatch()["due"] == 5


def test_a_receiver_that_does_not_answer_rests_until_one_retry_probes_it(user, sent, settings):
    """Each attempt at a hanging receiver held a worker process of the long queue for
    NOTIFY_WEBHOOK_TIMEOUT, so a burst of one user's events delayed everyone's long tasks.
    Once an attempt gets no answer, the receiver's other webhooks are not tried (no attempt
    used, nothing lost) until that one's retry is due; it then probes the receiver."""
    settings.NOTIFY_WEBHOOK_TIMEOUT = 1
    with silent_at_first() as receiver:
        hooked(user, receiver.url("/hooks"))
        first, second, third = created_webhooks(user, 3)
        assert jobs.deliver_notification(str(first.pk)) == "pending"
        first.refresh_from_db()
        assert first.unreachable and first.attempts == 1
        for waiting in (second, third):
            assert jobs.deliver_notification(str(waiting.pk)).startswith("skipped")
            waiting.refresh_from_db()
            assert waiting.status == "pending" and waiting.attempts == 0
        assert len(receiver.requests) == 1
        # Nor is a callback there, at another path or with a query of its own (one each
        # took a timeout: a user's dead server held the long queue's processes for minutes).
        hooks = receiver.url("/hooks")
        for url in (
            receiver.url("/hooks?k=0"),
            receiver.url("/other?k=1"),
            receiver.url("?k=2"),
            hooks.replace("://", "://someone@"),  # credentials, one a callback
            hooks.replace("127.0.0.1", "127.0.0.1."),  # the address with a closing dot
        ):
            task = task_services.task_create(owner=user, task_type="manual", callback_url=url)
            callback = Notification.objects.get(task_id=task.pk, channel="callback")
            assert jobs.deliver_notification(str(callback.pk)).startswith("skipped"), url
            task_services.task_cancel(task=task, actor=user)  # a place under the limit
        assert len(receiver.requests) == 1
        # An email, or a webhook to another receiver, is not held up.
        with HTTPServer([Answer(204, b"")]) as other:
            task = task_services.task_create(
                owner=user, task_type="manual", callback_url=other.url("/cb")
            )
            callback = Notification.objects.get(task_id=task.pk, channel="callback")
            assert jobs.deliver_notification(str(callback.pk)) == "delivered"
        due_again(first)
        assert jobs.deliver_notification(str(first.pk)) == "delivered"
        assert jobs.deliver_notification(str(second.pk)) == "delivered"
        assert len(receiver.requests) == 3
    first.refresh_from_db()
    assert not first.unreachable
    assert list(first.delivery_attempts.values_list("status_code", "delivered")) == [
        (None, False),
        (204, True),
    ]


def test_a_receiver_rests_whichever_form_of_its_address_the_resting_one_has(user, sent, settings):
    """The resting deliveries were first narrowed to those whose URL held the host as the
    new one reads it: a webhook resting at 127.1 did not hold back a callback to 127.0.0.1
    (each took a timeout), though the two are one receiver."""
    settings.NOTIFY_WEBHOOK_TIMEOUT = 1
    with silent_at_first() as receiver:
        hooked(user, receiver.url("/hooks").replace("127.0.0.1", "127.1"))
        [first] = created_webhooks(user, 1)
        assert jobs.deliver_notification(str(first.pk)) == "pending"
        for host in ("127.0.0.1", "2130706433", "0x7f000001"):
            url = receiver.url("/cb").replace("127.0.0.1", host)
            task = task_services.task_create(owner=user, task_type="manual", callback_url=url)
            callback = Notification.objects.get(task_id=task.pk, channel="callback")
            assert jobs.deliver_notification(str(callback.pk)).startswith("skipped"), url
            task_services.task_cancel(task=task, actor=user)  # a place under the limit
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://h.example.com/a", "http://h.example.com:80/c"),
        ("https://h.example.com/a", "https://h.example.com:443/c?q"),
        ("https://user:pw@h.example.com/a", "https://H.Example.com/c"),
        ("https://h.example.com./a", "https://h.example.com#f"),
        ("http://[2001:db8::1]/a", "http://[2001:db8:0::1]:80/b"),
        ("http://127.0.0.1:8080/a", "http://[::ffff:127.0.0.1]:8080/b"),
        ("http://127.1:8080/a", "http://[::ffff:7f00:1]:8080/b"),
    ],
)
def test_a_receiver_is_one_however_its_urls_are_written(one, other):
    assert services._receiver(one) == services._receiver(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://h.example.com/a", "https://h.example.com/a"),
        ("http://h.example.com/a", "http://h.example.com:8080/a"),
        ("http://h.example.com/a", "http://g.example.com/a"),
    ],
)
def test_receivers_apart_are_apart(one, other):
    assert services._receiver(one) != services._receiver(other)


def test_a_receiver_that_answers_an_error_does_not_rest(user, sent):
    """An answer, even a 500, shows the receiver is there: each webhook keeps its own
    retries."""
    with HTTPServer([Answer(500)]) as receiver:
        hooked(user, receiver.url("/hooks"))
        first, second = created_webhooks(user, 2)
        assert jobs.deliver_notification(str(first.pk)) == "pending"
        assert jobs.deliver_notification(str(second.pk)) == "pending"
    assert len(receiver.requests) == 2
    assert not Notification.objects.filter(unreachable=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_goes_ahead_of_the_long_tasks_waiting(user):
    """On the configured broker: deliveries waited behind every queued countdown, at the
    lowest priority; they now go at an urgent task's, ahead of the others (level with
    urgent ones, which Redis's priority steps cannot tell apart)."""
    import ast

    from backend.celery import app as celery_app
    from backend.tasks import queue as task_queue
    from backend.tasks.tests.factories import TaskFactory
    from backend.tasks.tests.processes import purge_filesystem_broker

    purge_filesystem_broker()
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(services.DELIVERY_QUEUE)
    waiting = [
        TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1}, priority=p)
        for p in ("low", "high", "normal")
    ]
    assert len(task_queue.publish([task_queue.job_of(t) for t in waiting])) == 3
    assert services.send_delivery_messages(["00000000-0000-4000-8000-000000000001"]) == 1
    names = []
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        for _ in range(4):
            message = channel.basic_get(services.DELIVERY_QUEUE, no_ack=True)
            names.append(message.headers["task"])
            if message.headers["task"] != services.DELIVER:
                assert ast.literal_eval(message.headers["argsrepr"])[0] in {
                    str(t.pk) for t in waiting
                }
    assert names[0] == services.DELIVER and names.count(services.DELIVER) == 1


def unhooked(user, notification) -> None:
    """The owner clears their webhook_url; the notification's retry is due."""
    user.webhook_url = ""
    user.save(update_fields=["webhook_url"])
    due_again(notification)


def test_nothing_is_sent_to_a_deactivated_account(user, settings, sent):
    """Staff turned the account off: neither its webhook nor its mail is sent, retries
    included."""
    with HTTPServer([Answer(500)]) as receiver, SMTPServer() as smtp:
        use_smtp(settings, smtp)
        hooked(user, receiver.url("/hooks"))
        user.notify_email = ["task.completed"]  # beside the webhook
        user.save()
        completed_task(user)
        webhook = Notification.objects.get(channel="webhook")
        mail = Notification.objects.get(channel="email")
        assert jobs.deliver_notification(str(webhook.pk)) == "pending"
        user_services.user_deactivate(user=user)
        due_again(webhook)
        assert jobs.deliver_notification(str(webhook.pk)) == "failed"
        assert jobs.deliver_notification(str(mail.pk)) == "failed"
    assert len(receiver.requests) == 1 and smtp.messages == []
    for notification in (webhook, mail):
        notification.refresh_from_db()
        assert notification.last_error == "not sent: the owner's account is deactivated"


def test_a_webhook_is_not_sent_once_the_owner_changed_the_url(user, sent):
    """A user who removes a webhook_url (it leaked, say) got the events of tasks already
    running, and every retry, at the old one."""
    with HTTPServer([Answer(500)]) as receiver:
        hooked(user, receiver.url("/hooks"))
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "pending"
        unhooked(user, notification)
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
    assert len(receiver.requests) == 1
    notification.refresh_from_db()
    assert notification.last_error == "not sent: the owner's webhook_url changed after the event"


def test_a_mail_is_not_sent_once_the_owner_stopped_asking_for_it(user, settings, sent):
    user.email = "ann@example.com"
    user.notify_email = ["task.completed"]
    user.save()
    with SMTPServer() as smtp:
        use_smtp(settings, smtp)
        completed_task(user)
        notification = Notification.objects.get(channel="email")
        user.notify_email = []
        user.save(update_fields=["notify_email"])
        assert jobs.deliver_notification(str(notification.pk)) == "failed"
        assert smtp.messages == []


def test_a_callback_to_the_owners_webhook_url_outlives_a_change_of_it(user, sent):
    """One notification stands for both when a task's callback_url is the owner's
    webhook_url: clearing the webhook_url cancelled the task's own callback too."""
    with HTTPServer([Answer(500), Answer(204, b"")]) as receiver:
        url = receiver.url("/hooks")
        hooked(user, url)
        task = task_services.task_create(owner=user, task_type="manual", callback_url=url)
        [notification] = Notification.objects.filter(task_id=task.pk)
        assert jobs.deliver_notification(str(notification.pk)) == "pending"
        unhooked(user, notification)
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
    assert len(receiver.requests) == 2


def test_a_2xx_whose_body_comes_slowly_is_delivered(user, sent, settings):
    """The status is the receiver's answer. Its body was read within the timeout too, so a
    receiver that answered 200 at once and then sent its body slowly had the webhook
    counted as failed, and sent again."""
    settings.NOTIFY_WEBHOOK_TIMEOUT = 1
    with HTTPServer([Answer(200, b"thanks", body_after=2)]) as receiver:
        hooked(user, receiver.url("/hooks"))
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
        assert len(receiver.requests) == 1
    assert list(notification.delivery_attempts.values_list("status_code", "delivered")) == [
        (200, True)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_the_database_fails_to_record_is_recorded_again_not_sent_again(
    user, sent, monkeypatch
):
    """A PostgreSQL restart as a delivery was being written: the job failed, the row stayed
    held with its attempt counted, and at the end of its lease the dispatcher took it for a
    lost worker's ("the receiver may have got it") and sent the delivered webhook again."""
    from django.db import OperationalError

    from backend.tasks.tests.test_jobs import failing_first

    monkeypatch.setattr(services, "RECORD_PAUSES", (0, 0, 0), raising=False)
    restarting = OperationalError("terminating connection due to administrator command")
    fails_twice = failing_first(services.notification_record, restarting, times=2)
    monkeypatch.setattr(services, "notification_record", fails_twice)
    with HTTPServer([Answer(204, b"")]) as receiver:
        hooked(user, receiver.url("/hooks"))
        completed_task(user)
        notification = Notification.objects.get()
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
        assert len(receiver.requests) == 1 and fails_twice.calls == 3
    notification.refresh_from_db()
    assert notification.status == "delivered" and notification.attempts == 1
    assert list(notification.delivery_attempts.values_list("number", "delivered")) == [(1, True)]


def test_a_delivery_is_recorded_again_only_while_it_is_held(settings):
    """Tries that outlast the delivery's lease (17 s with EMAIL_TIMEOUT=1) would let the
    dispatcher take it over meanwhile, and send it again."""
    now = timezone.now()
    assert services.pauses_within(now + timedelta(seconds=125)) == services.RECORD_PAUSES
    assert services.pauses_within(now + timedelta(seconds=17)) == (1, 2, 4, 8)
    assert services.pauses_within(now + timedelta(seconds=1)) == ()


def test_a_resend_leaves_a_delivery_in_flight_to_its_sender(user, sent):
    """The admin's resend freed a notification a worker was sending: a second worker
    claimed it at once and the receiver got the same webhook-id twice, at the same time."""
    with HTTPServer([Answer(204, b"")]) as receiver:
        hooked(user, receiver.url("/hooks"))
        completed_task(user)
        notification = Notification.objects.get()
        held = services.notification_claim(notification_id=notification.pk)  # being sent
        assert held is not None
        services.notifications_resend(queryset=Notification.objects.filter(pk=notification.pk))
        assert services.notification_claim(notification_id=notification.pk) is None
        notification.refresh_from_db()
        assert notification.locked_until == held.locked_until
        # Its sender lost (the lease over): taken over, the lost attempt recorded as lost.
        Notification.objects.filter(pk=notification.pk).update(
            locked_until=timezone.now() - timedelta(seconds=1)
        )
        services.notifications_resend(queryset=Notification.objects.filter(pk=notification.pk))
        assert jobs.deliver_notification(str(notification.pk)) == "delivered"
    assert len(receiver.requests) == 1
    attempts = list(notification.delivery_attempts.values_list("number", "delivered", "error"))
    assert [(n, delivered) for n, delivered, _ in attempts] == [(1, False), (2, True)]
    assert "lost" in attempts[0][2]
