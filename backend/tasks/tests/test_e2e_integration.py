"""End to end: ``api_integration`` tasks run by a real worker (and beat, which releases the
retries) against real HTTP servers on loopback, allow-listed for the test."""

import pytest

from backend.common.tests.httpserver import Answer, HTTPServer
from backend.tasks.models import Task, TaskStatus

from .processes import Cluster, purge_filesystem_broker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def http_cluster(transactional_db, tmp_path, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    purge_filesystem_broker()
    running = Cluster(
        tmp_path,
        extra_env={"OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8", "TASK_RETRY_BACKOFF": "1"},
    )
    yield running
    running.stop()


def _finished(task_id) -> Task | None:
    task = Task.objects.get(pk=task_id)
    return task if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) else None


def test_calls_come_back_and_a_503_is_retried_then_fails(http_cluster, user, client_for):
    http_cluster.start_worker()
    http_cluster.start_beat()
    client = client_for(user)
    with (
        HTTPServer([Answer(200, b'{"hello": "world"}')]) as ok,
        HTTPServer([Answer(503, b"busy")]) as busy,
    ):
        good = client.post(
            "/api/tasks/",
            {"task_type": "api_integration", "input_data": {"url": ok.url("/ping")}},
            format="json",
        ).json()
        bad = client.post(
            "/api/tasks/",
            {"task_type": "api_integration", "input_data": {"url": busy.url()}},
            format="json",
        ).json()

        task = wait_for(lambda: _finished(good["id"]), timeout=60, what="the call")
        assert task.status == TaskStatus.COMPLETED, f"{task.error}\n{http_cluster.logs()}"
        assert task.result["status_code"] == 200 and task.result["body"] == '{"hello": "world"}'

        task = wait_for(lambda: _finished(bad["id"]), timeout=90, what="the retried call")
        assert task.status == TaskStatus.FAILED, http_cluster.logs()
        assert task.attempts == 4 and len(busy.requests) == 4
        assert task.error == "UpstreamError: the server answered 503 (gave up after 4 attempts)"
