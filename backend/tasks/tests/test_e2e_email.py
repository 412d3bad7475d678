"""End to end: an ``email`` task submitted over HTTP, sent by a real worker process through
EMAIL_URL to a real SMTP server on loopback; then the server goes away, and the next one
waits to be sent again."""

import pytest

from backend.common.tests.smtpd import SMTPServer
from backend.tasks.models import Task, TaskStatus

from .processes import Cluster, purge_filesystem_broker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def smtp():
    with SMTPServer() as server:
        yield server


@pytest.fixture
def mail_cluster(transactional_db, tmp_path, smtp):
    purge_filesystem_broker()
    running = Cluster(tmp_path, extra_env={"EMAIL_URL": smtp.url(), "EMAIL_TIMEOUT": "5"})
    yield running
    running.stop()


def _finished(task_id) -> Task | None:
    task = Task.objects.get(pk=task_id)
    return task if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) else None


def _waiting(task_id) -> Task | None:
    task = Task.objects.get(pk=task_id)
    return task if task.status == TaskStatus.SCHEDULED and task.error else None


def test_the_worker_sends_through_smtp_and_waits_readably_without_it(
    mail_cluster, smtp, user, client_for
):
    mail_cluster.start_worker()
    client = client_for(user)
    body = {
        "task_type": "email",
        "input_data": {
            "to": ["ann@example.com", "bob@example.com"],
            "subject": "Quarterly numbers",
            "body": "They are in.",
        },
    }

    created = client.post("/api/tasks/", body, format="json").json()
    task = wait_for(lambda: _finished(created["id"]), timeout=60, what="the email task")

    assert task.status == TaskStatus.COMPLETED, f"{task.error}\n{mail_cluster.logs()}"
    assert task.result == {"sent": 2}
    [received] = smtp.messages
    assert received.recipients == ["ann@example.com", "bob@example.com"]
    assert received.message["Subject"] == "Quarterly numbers"
    assert received.message.get_body(("plain",)).get_content().strip() == "They are in."

    smtp.stop()  # the mail server is gone
    created = client.post("/api/tasks/", body, format="json").json()
    task = wait_for(lambda: _waiting(created["id"]), timeout=60, what="the second email task")

    # Put back to wait for a later send, saying why.
    assert task.attempts == 1 and task.run_at is not None
    assert task.error == (
        "EmailUnavailable: could not connect to the mail server at "
        f"127.0.0.1:{smtp.port}: connection refused"
    )
