"""The ``email`` and ``reminder`` types: input rules over HTTP, and runs against a real SMTP
server on loopback (aiosmtpd), including servers that refuse or are not there."""

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from backend.common.email import send_budget
from backend.common.tests.smtpd import (
    AUTH_WARNING,
    BANNER,
    REFUSAL_TEXT,
    SMTPServer,
    free_port,
    use_smtp,
)
from backend.tasks import runner, services, types
from backend.tasks.models import Task, TaskStatus
from backend.tasks.types.messaging import MAIL_ATTEMPTS
from backend.users.tests.factories import UserFactory

from .factories import TaskFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pa55-word-never-shown"


@pytest.fixture
def smtp():
    with SMTPServer() as server:
        yield server


@pytest.fixture
def client(client_for, user):
    return client_for(user)


def email_input(**overrides) -> dict:
    return {"to": ["ann@example.com"], "subject": "Hello", "body": "Plain body", **overrides}


def run(task) -> Task:
    runner.execute(str(task.pk))
    task.refresh_from_db()
    return task


# --- input ------------------------------------------------------------------------------


def test_create_an_email_task(client):
    response = client.post(
        "/api/tasks/",
        {"task_type": "email", "input_data": email_input(to="bob@example.com")},
        format="json",
    )
    assert response.status_code == 201, response.content
    # One address is kept as a list of one.
    assert response.json()["input_data"]["to"] == ["bob@example.com"]


@pytest.mark.parametrize(
    ("input_data", "field", "message"),
    [
        (email_input(to=["ok@example.com", "bad@"]), "to", "'bad@' is not a valid email address."),
        (email_input(to=[]), "to", "At least one recipient is required."),
        (email_input(to="a@[127.0.0.1]"), "to", "not an address in brackets"),
        (email_input(to=["ok@example.com", "b@[10.1.2.3]"]), "to", "not an address in brackets"),
        (email_input(to=5), "to", "An email address or a list of email addresses is required."),
        # Django takes control characters in a quoted local part; a mail header ends its
        # line at \x0b, \x0c or \x1c-\x1e: the task failed in the worker, or its mail went
        # out with its To: split in two.
        (email_input(to='"a\x0bX-Injected:1"@example.com'), "to", "no control characters"),
        (email_input(to=["ok@example.com", '"x\x0c\x0cy"@example.com']), "to", "no control"),
        (email_input(to='"a\x01b"@example.com'), "to", "no control characters"),
        (email_input(to='"a\x7fb"@example.com'), "to", "no control characters"),
        (email_input(to=[f"u{i}@example.com" for i in range(11)]), "to", "At most 10 recipients"),
        (email_input(subject="two\nlines"), "subject", "no line breaks"),
        # Accepted, then refused by the mail library in the worker.
        (email_input(subject="s\x0bBcc: x@example.com"), "subject", "no line breaks"),
        (email_input(subject="s\x0cx"), "subject", "no line breaks"),
        (email_input(subject="s\x1cx"), "subject", "no line breaks"),
        (email_input(subject="s\u2028x"), "subject", "no line breaks"),
        (email_input(subject="x" * 201), "subject", "At most 200 characters"),
        (email_input(subject=""), "subject", "may not be blank"),
        (email_input(subject="   "), "subject", "may not be blank"),
        (email_input(subject="\t \u3000"), "subject", "may not be blank"),
        (email_input(body="x" * (100 * 1024 + 1)), "body", "At most 102400 bytes"),
        (email_input(html=7), "html", "A string is required."),
        (email_input(cc="x@example.com"), "cc", "Unknown field."),
    ],
)
def test_email_input_errors_name_the_problem(client, input_data, field, message):
    response = client.post(
        "/api/tasks/", {"task_type": "email", "input_data": input_data}, format="json"
    )
    assert response.status_code == 400, response.content
    errors = response.json()["input_data"][field]
    assert any(message in error for error in errors), errors
    assert not Task.objects.exists()


def test_an_email_task_with_no_input_mails_its_owner_its_name_and_description(client, user):
    """Seed 000's walkthrough creates an email task with a name and a description only."""
    body = {
        "name": "Send Welcome Email",
        "description": "Send email to new user",
        "task_type": "email",
        "priority": "high",
    }
    response = client.post("/api/tasks/", body, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["input_data"] == {
        "to": [user.email],
        "subject": "Send Welcome Email",
        "body": "Send email to new user",
    }


def test_given_parts_win_over_the_defaults_and_a_nameless_task_gets_a_subject(client, user):
    response = client.post(
        "/api/tasks/",
        {"task_type": "email", "name": "ignored", "input_data": {"subject": "Mine"}},
        format="json",
    )
    assert response.json()["input_data"] == {"to": [user.email], "subject": "Mine", "body": "Mine"}

    response = client.post("/api/tasks/", {"task_type": "email"}, format="json")
    data = response.json()["input_data"]
    assert data["subject"] == data["body"] == "A message from Async Task Manager"


def test_an_owner_without_email_must_name_the_recipient(client_for):
    response = client_for(UserFactory(email="")).post(
        "/api/tasks/", {"task_type": "email", "name": "Hi"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["input_data"]["to"] == [
        "Give an address: your account has no email address to default to."
    ]
    assert not Task.objects.exists()


def test_recipient_limit_follows_the_setting(client, settings):
    settings.EMAIL_TASK_MAX_RECIPIENTS = 2
    body = {"task_type": "email", "input_data": email_input(to=["a@x.org", "b@x.org", "c@x.org"])}
    response = client.post("/api/tasks/", body, format="json")
    assert response.status_code == 400
    assert response.json()["input_data"]["to"] == ["At most 2 recipients are allowed."]


@pytest.mark.parametrize(
    ("input_data", "status"),
    [
        ({"message": "Call the dentist"}, 201),
        ({"message": ""}, 400),
        ({"message": "x" * (10 * 1024 + 1)}, 400),
        ({}, 400),
        ({"message": ["not", "text"]}, 400),
    ],
)
def test_reminder_input(client, input_data, status):
    response = client.post(
        "/api/tasks/", {"task_type": "reminder", "input_data": input_data}, format="json"
    )
    assert response.status_code == status, response.content


def test_task_types_lists_both(client):
    kinds = {kind["name"]: kind for kind in client.get("/api/task-types/").json()}
    assert "required" not in kinds["email"]["input_schema"]  # each part has a default
    assert kinds["reminder"]["input_schema"]["required"] == ["message"]


# --- running ----------------------------------------------------------------------------


def test_email_arrives_with_subject_body_recipients_and_html(smtp, settings, user):
    use_smtp(settings, smtp)
    task = TaskFactory(
        owner=user,
        task_type="email",
        input_data=email_input(
            to=["ann@example.com", "bob@example.com"], html="<p>Rich <b>body</b></p>"
        ),
    )

    task = run(task)

    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == {"sent": 2}
    [received] = smtp.messages
    assert received.recipients == ["ann@example.com", "bob@example.com"]
    assert received.mail_from == "noreply@localhost"
    message = received.message
    assert message["Subject"] == "Hello"
    assert message["To"] == "ann@example.com, bob@example.com"
    assert message.get_body(("plain",)).get_content().strip() == "Plain body"
    assert "<b>body</b>" in message.get_body(("html",)).get_content()


@pytest.mark.filterwarnings(AUTH_WARNING)
def test_email_through_a_server_that_requires_a_login(settings, user):
    with SMTPServer(password=PASSWORD) as smtp:
        use_smtp(settings, smtp, user="mailer", password=PASSWORD)
        task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))
        assert task.status == TaskStatus.COMPLETED, task.error
        assert len(smtp.messages) == 1

        settings.EMAIL_HOST_PASSWORD = "wrong-" + PASSWORD
        task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))
    assert task.status == TaskStatus.FAILED
    assert "refused the login" in task.error and "SMTP 535" in task.error
    assert PASSWORD not in task.error and BANNER not in task.error


@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr(services.queue, "publish", lambda jobs: [])  # the test runs them


def release(task) -> None:
    """Move the clock past run_at: the dispatcher makes the task pending again."""
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now() - timedelta(seconds=1))
    assert services.tasks_dispatch()["released"] == 1


def test_an_unreachable_server_is_tried_again_and_the_mail_goes_when_it_is_back(
    settings, user, no_broker
):
    """The task failed for good at the first refused connection: a mail server down for a
    moment lost the mail."""
    server = SMTPServer()  # not started yet: nothing listens on its port
    use_smtp(settings, server)
    settings.EMAIL_HOST_PASSWORD = PASSWORD

    task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))

    assert (task.status, task.attempts) == (TaskStatus.SCHEDULED, 1)
    assert task.run_at > timezone.now()
    assert task.error.startswith("EmailUnavailable: could not connect to the mail server at ")
    assert "connection refused" in task.error and PASSWORD not in task.error
    with server:
        release(task)
        task = run(task)
        assert (task.status, task.attempts, task.result) == (
            TaskStatus.COMPLETED, 2, {"sent": 1}
        )  # fmt: skip
        assert len(server.messages) == 1


def test_a_server_down_for_good_fails_the_task_after_its_attempts(
    settings, user, no_broker, caplog
):
    use_smtp(settings, SMTPServer())  # never started
    task = TaskFactory(
        owner=user, task_type="email", input_data=email_input(), max_attempts=MAIL_ATTEMPTS
    )  # as a create sets it, from the type
    for attempt in range(1, MAIL_ATTEMPTS):
        task = run(task)
        assert (task.status, task.attempts) == (TaskStatus.SCHEDULED, attempt)
        release(task)

    caplog.clear()
    task = run(task)

    assert (task.status, task.attempts) == (TaskStatus.FAILED, MAIL_ATTEMPTS)
    assert task.error.endswith(f"connection refused (gave up after {MAIL_ATTEMPTS} attempts)")
    # Said in the worker's log too (it was silent), in one line.
    [record] = [r for r in caplog.records if r.name == "backend.tasks.runner"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == f"task {task.pk} (email) failed: {task.error}"


@pytest.mark.parametrize("timeout", [1, 2, 10, 60])
def test_a_mail_tasks_time_limit_outlasts_a_whole_send(settings, timeout):
    """It was 3 x EMAIL_TIMEOUT + 10 s: a slow server failed the task for good at its time
    limit (from EMAIL_TIMEOUT=2 on) before the send was cut and the task tried again."""
    settings.EMAIL_TIMEOUT = timeout
    for name in ("email", "reminder"):
        assert types.get(name).time_limit_for({}) > send_budget()


def test_a_server_that_never_answers_times_out_and_is_tried_again(settings, user, no_broker):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", free_port()))
        silent.listen()  # accepts connections, never says hello
        use_smtp(settings, SMTPServer())
        settings.EMAIL_PORT = silent.getsockname()[1]
        settings.EMAIL_TIMEOUT = 1

        task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))

    assert task.status == TaskStatus.SCHEDULED
    assert task.error.endswith("did not answer within 1 s (EMAIL_TIMEOUT)")


def test_a_refusal_for_now_is_tried_again(smtp, settings, user, no_broker):
    use_smtp(settings, smtp)
    smtp.handler.refuse_recipients, smtp.handler.refuse_code = {"ann@example.com"}, 450

    task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))

    assert task.status == TaskStatus.SCHEDULED
    assert task.error == (
        "EmailUnavailable: the mail server refused every recipient: ann@example.com (SMTP 450)"
    )
    smtp.handler.refuse_recipients = set()
    release(task)
    assert run(task).status == TaskStatus.COMPLETED and len(smtp.messages) == 1


@pytest.mark.parametrize(
    ("refuse", "expected"),
    [
        ("recipients", "refused every recipient: ann@example.com (SMTP 550)"),
        ("data", "refused the message (SMTP 554)"),
    ],
)
def test_refusals_keep_the_code_not_the_servers_words(smtp, settings, user, refuse, expected):
    use_smtp(settings, smtp)
    if refuse == "recipients":
        smtp.handler.refuse_recipients = {"ann@example.com"}
    else:
        smtp.handler.refuse_data = True

    task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))

    assert task.status == TaskStatus.FAILED
    assert expected in task.error
    assert REFUSAL_TEXT not in task.error and BANNER not in task.error
    assert not smtp.messages


@pytest.mark.parametrize("code", [550, 450])
def test_recipients_refused_among_others_are_named_in_the_result(smtp, settings, user, code):
    """The server took the message for one recipient and refused the other: the task said
    it was sent to both, and the refused address was named nowhere. It is not sent again
    (a retry would send the first a second copy)."""
    use_smtp(settings, smtp)
    smtp.handler.refuse_recipients, smtp.handler.refuse_code = {"bob@example.com"}, code
    data = email_input(to=["ann@example.com", "bob@example.com"])

    task = run(TaskFactory(owner=user, task_type="email", input_data=data))

    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == {"sent": 1, "refused": [f"bob@example.com (SMTP {code})"]}
    [received] = smtp.messages
    assert received.recipients == ["ann@example.com"]
    assert REFUSAL_TEXT not in json.dumps(task.result)


def test_the_default_console_backend_prints_the_mail(settings, user, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

    task = run(TaskFactory(owner=user, task_type="email", input_data=email_input()))

    assert task.status == TaskStatus.COMPLETED
    printed = capsys.readouterr().out
    assert "Subject: Hello" in printed and "To: ann@example.com" in printed
    assert "Plain body" in printed


def test_a_reminder_mails_the_tasks_owner(smtp, settings):
    use_smtp(settings, smtp)
    owner = UserFactory(email="owner@example.com")
    task = TaskFactory(
        owner=owner, task_type="reminder", input_data={"message": "Water the plants\nAll of them"}
    )

    task = run(task)

    assert task.status == TaskStatus.COMPLETED, task.error
    assert task.result == {"sent": 1}
    [received] = smtp.messages
    assert received.recipients == ["owner@example.com"]
    assert received.message["Subject"] == "Reminder: Water the plants"
    assert "All of them" in received.message.get_body(("plain",)).get_content()


def test_a_reminder_for_an_owner_without_email_fails_clearly(smtp, settings, caplog):
    use_smtp(settings, smtp)
    owner = UserFactory(email=None)

    task = run(TaskFactory(owner=owner, task_type="reminder", input_data={"message": "hi"}))

    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("EmailDeliveryError: the task's owner has no email address")
    assert not smtp.messages
    # The task's expected outcome, not a bug: one WARNING line in the worker's log, no
    # traceback (it was an ERROR with one).
    [record] = [r for r in caplog.records if r.name == "backend.tasks.runner"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == f"task {task.pk} (reminder) failed: {task.error}"


def test_a_reminder_of_a_deactivated_owner_is_not_sent(smtp, settings):
    """Its notifications were withheld, and the reminder itself went to the account staff
    had turned off."""
    use_smtp(settings, smtp)
    owner = UserFactory(email="owner@example.com", is_active=False)

    task = run(TaskFactory(owner=owner, task_type="reminder", input_data={"message": "hi"}))

    assert task.status == TaskStatus.FAILED
    assert task.error == "EmailDeliveryError: not sent: the owner's account is deactivated"
    assert not smtp.messages


def test_a_long_first_line_is_shortened_in_the_subject(mailoutbox, user):
    task = run(TaskFactory(owner=user, task_type="reminder", input_data={"message": "y" * 300}))

    assert task.status == TaskStatus.COMPLETED
    [mail] = mailoutbox
    assert mail.subject == "Reminder: " + "y" * 79 + "…"
    assert mail.to == [user.email]


def test_a_long_line_broken_only_by_unicode_separators_is_sent(smtp, settings, user):
    """Django chooses quoted-printable (which shortens lines) by the lines ``str.splitlines``
    finds, which U+2028 and its kind also end; a mail's lines end only at CR LF. So a body
    of short "lines" split that way went out as one line of 2,515 bytes, over SMTP's 1,000,
    and the server refused it."""
    use_smtp(settings, smtp)
    body = ("y" * 500 + "\u2028") * 5
    given = email_input(subject="Grüße", body=body, html=f"<p>{body}</p>")
    task = run(TaskFactory(owner=user, task_type="email", input_data=given))
    assert task.status == TaskStatus.COMPLETED, task.error
    [received] = smtp.messages
    assert received.message["Subject"] == "Grüße"
    assert body in received.message.get_body(("html",)).get_content()
    assert received.message.get_body(("plain",)).get_content().rstrip("\r\n") == body
