"""``api_integration``: input checks at create time, and runs against real HTTP servers on
loopback (allow-listed through OUTBOUND_ALLOWED_NETWORKS), including the runner's retry
with backoff for a server answering 503."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from backend.common.tests.conftest import _loopback_only  # noqa: F401 - every test here
from backend.common.tests.httpserver import Answer, HTTPServer
from backend.tasks import jobs, runner, services, types
from backend.tasks.models import Task, TaskStatus

from .factories import TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _loopback_guard(_loopback_only):  # noqa: F811
    yield


@pytest.fixture
def allow_loopback(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture(autouse=True)
def _defaults(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    settings.OUTBOUND_MAX_BODY = 64 * 1024
    settings.TASK_RETRY_BACKOFF = 10
    settings.TASK_RETRY_MAX_DELAY = 600


def validate(data):
    serializer = types.get("api_integration").input_serializer(data=data)
    return serializer.is_valid(), serializer.errors, getattr(serializer, "validated_data", None)


def integration_task(user, **input_data):
    kind = types.get("api_integration")
    return TaskFactory(
        owner=user,
        task_type="api_integration",
        input_data=input_data,
        max_attempts=kind.max_attempts,
    )


# --- input -----------------------------------------------------------------------------------


def test_defaults_are_filled_in():
    ok, _, data = validate({"url": "https://api.example.com/v1"})
    assert ok and data == {
        "url": "https://api.example.com/v1",
        "method": "GET",
        "timeout": 10,
        "follow_redirects": False,
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "http://10.0.0.1/"}, "url"),
        ({"url": "http://169.254.169.254/latest/"}, "url"),
        ({"url": "http://[::1]:8000/"}, "url"),
        ({"url": "http://localhost/"}, "url"),
        # Accepted, then retried as a connection error.
        ({"url": "http://example.com:99999/"}, "url"),
        ({"url": "http://example.com:0/"}, "url"),
        # A name in "xn--" form that is no valid punycode: a 500.
        ({"url": "http://xn--ls8h.la/"}, "url"),
        ({"url": "http://xn--/"}, "url"),
        ({"url": "https://xn--zz.com/"}, "url"),
        ({"url": ""}, "url"),
        ({"url": 5}, "url"),
        ({"url": "https://example.com", "method": "TRACE"}, "method"),
        ({"url": "https://example.com", "headers": {"Host": "internal"}}, "headers"),
        ({"url": "https://example.com", "headers": {"Connection": "close"}}, "headers"),
        ({"url": "https://example.com", "headers": {"Transfer-Encoding": "x"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "a\r\nX-B: b"}}, "headers"),
        # Accepted, then failed at run time (a control character as a retried network error).
        ({"url": "https://example.com", "headers": {"X-A": "a\x0bb"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "x\x01y"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "caf\u00e9"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "v\u2028w"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "abc "}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": " abc"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": "\t"}}, "headers"),
        # Names no resolver looks up: every lookup failed, retried as a network error.
        ({"url": "http://" + "a" * 64 + ".example.com/"}, "url"),
        ({"url": "http://a..example.com/"}, "url"),
        ({"url": "https://example.com", "headers": {"bad name": "v"}}, "headers"),
        # A name ending in a line break: taken, then each run a network error, retried.
        ({"url": "https://example.com", "headers": {"X-A\n": "v"}}, "headers"),
        ({"url": "https://example.com", "headers": {"Host\n": "internal"}}, "headers"),
        ({"url": "https://example.com", "headers": {"X-A": 1}}, "headers"),
        ({"url": "https://example.com", "headers": ["X-A"]}, "headers"),
        ({"url": "https://example.com", "timeout": 31}, "timeout"),
        ({"url": "https://example.com", "timeout": 0}, "timeout"),
        ({"url": "https://example.com", "timeout": True}, "timeout"),
        ({"url": "https://example.com", "timeout": 2.5}, "timeout"),
        ({"url": "https://example.com", "follow_redirects": "yes"}, "follow_redirects"),
        ({"url": "https://example.com", "body": "x"}, "body"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(data, field):
    ok, errors, _ = validate(data)
    assert not ok and field in errors


def test_a_timeout_written_as_a_whole_float_is_that_integer():
    """``5.0`` is an integer to JSON Schema (the type's published schema says "integer"),
    and some JSON encoders write whole numbers so: it was refused as "not a string"."""
    ok, errors, inputs = validate({"url": "https://example.com", "timeout": 5.0})
    assert ok, errors
    assert inputs["timeout"] == 5 and type(inputs["timeout"]) is int


def test_header_values_may_hold_what_http_carries():
    ok, errors, _ = validate(
        {
            "url": "https://example.com",
            "headers": {"X-A": "Bearer a.b~c/=", "X-B": "a\tb c", "X-C": ""},
        }
    )
    assert ok, errors


def test_a_literal_loopback_target_is_a_400_at_create(user, client_for):
    response = client_for(user).post(
        "/api/tasks/",
        {"task_type": "api_integration", "input_data": {"url": "http://2130706433:9/"}},
        format="json",
    )
    assert response.status_code == 400
    assert "loopback" in str(response.json()["input_data"]["url"])
    assert not Task.objects.exists()


# --- runs --------------------------------------------------------------------------------------


def test_a_call_returns_status_headers_and_body(user, allow_loopback):
    with HTTPServer(
        [Answer(200, '{"ok": "été"}'.encode(), {"Content-Type": "application/json"})]
    ) as server:
        task = integration_task(
            user,
            url=server.url("/v1/items"),
            method="POST",
            headers={"Authorization": "Bearer t"},
            json={"name": "a"},
        )
        assert jobs.run_task(str(task.pk)) == "completed"
        [received] = server.requests
    task.refresh_from_db()
    assert task.result["status_code"] == 200
    assert task.result["headers"]["content-type"] == "application/json"
    assert task.result["body"] == '{"ok": "été"}'
    assert task.result["body_base64"] is False and task.result["truncated"] is False
    assert received.method == "POST" and received.body == b'{"name":"a"}'
    assert received.headers["authorization"] == "Bearer t"


def test_a_large_body_is_truncated_and_binary_comes_back_as_base64(user, allow_loopback):
    with HTTPServer([Answer(200, "é".encode() * 500_000)]) as server:
        task = integration_task(user, url=server.url())
        jobs.run_task(str(task.pk))
    task.refresh_from_db()
    assert task.result["truncated"] is True
    assert task.result["body"] == "é" * (64 * 1024 // 2) and not task.result["body_base64"]

    with HTTPServer([Answer(200, b"\xff\xfe\x00binary")]) as server:
        task = integration_task(user, url=server.url())
        jobs.run_task(str(task.pk))
    task.refresh_from_db()
    assert task.result["body_base64"] is True and task.result["body"] == "//4AYmluYXJ5"


@pytest.mark.parametrize(
    ("charset", "body"),
    [("utf-7", b"+2AA-"), ("unicode_escape", b"\\udc00"), ("utf-8", b"a\x00b")],
)
def test_a_body_that_decodes_to_what_no_database_stores_comes_back_as_base64(
    user, allow_loopback, client_for, charset, body
):
    """The server names the codec: utf-7 and unicode_escape decode these bytes to a lone
    surrogate, which no database stores and no response can encode (the task, and every
    list holding it, answered 500 on SQLite, and the run failed with a DataError on
    PostgreSQL); like a NUL, such a body comes back as base64."""
    answer = Answer(200, body, {"Content-Type": f"text/plain; charset={charset}"})
    with HTTPServer([answer]) as server:
        task = integration_task(user, url=server.url())
        assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.result["body_base64"] is True
    assert task.result["body"] == base64.b64encode(body).decode()
    assert client_for(user).get(f"/api/tasks/{task.pk}/").status_code == 200
    assert client_for(user).get("/api/tasks/").status_code == 200


def test_a_4xx_is_a_result_not_a_failure(user, allow_loopback):
    with HTTPServer([Answer(404, b"nope")]) as server:
        task = integration_task(user, url=server.url())
        assert jobs.run_task(str(task.pk)) == "completed"
    task.refresh_from_db()
    assert task.result["status_code"] == 404 and task.result["body"] == "nope"


def test_a_name_resolving_to_loopback_fails_at_run_time_without_connecting(user):
    with HTTPServer() as server:
        task = integration_task(user, url=f"http://localhost:{server.port}/")
        assert jobs.run_task(str(task.pk)) == "failed"
        assert server.connections == 0
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("OutboundRefused: refused: ") and "loopback" in task.error


def _release(task):
    """Move the clock past run_at: the dispatcher makes the task pending again."""
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now() - timedelta(seconds=1))
    assert services.tasks_dispatch()["released"] == 1


def test_a_503_is_retried_with_growing_delays_then_fails(user, allow_loopback, monkeypatch):
    monkeypatch.setattr(services.queue, "publish", lambda jobs: [])  # no broker needed here
    with HTTPServer([Answer(503, b"busy")]) as server:
        task = integration_task(user, url=server.url())
        delays = []
        for attempt in (1, 2, 3):
            before = timezone.now()
            assert jobs.run_task(str(task.pk)).startswith("retrying in ")
            task.refresh_from_db()
            assert task.status == TaskStatus.SCHEDULED and task.attempts == attempt
            assert task.error == "UpstreamError: the server answered 503"
            delays.append((task.run_at - before).total_seconds())
            _release(task)
        assert jobs.run_task(str(task.pk)) == "failed"
        assert len(server.requests) == 4
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.attempts == 4
    assert task.error == "UpstreamError: the server answered 503 (gave up after 4 attempts)"
    # Equal jitter: attempt n waits between half and all of 10 * 2**(n-1) seconds.
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) / 2 - 1 <= delay <= 10 * 2 ** (n - 1) + 1
    # Whole seconds, each at least the last (two may be equal: 20 s drawn at the top of
    # [10, 20] and at the bottom of [20, 40]; the measured ones differ by the test's pace).
    whole = [round(delay) for delay in delays]
    assert whole == sorted(whole)


def test_after_a_manual_retry_the_backoff_starts_again(user, allow_loopback, monkeypatch):
    """A retry grants a fresh set of attempts; their first wait was computed from every
    attempt so far (80-160 s instead of 5-10 s after one round of four)."""
    monkeypatch.setattr(services.queue, "publish", lambda jobs: [])
    with HTTPServer([Answer(503, b"busy")]) as server:
        task = integration_task(user, url=server.url())
        for _ in range(3):
            assert jobs.run_task(str(task.pk)).startswith("retrying in ")
            _release(task)
        assert jobs.run_task(str(task.pk)) == "failed"
        task.refresh_from_db()
        services.task_retry(task=task, actor=user)
        before = timezone.now()
        assert jobs.run_task(str(task.pk)).startswith("retrying in ")
    task.refresh_from_db()
    assert task.attempts == 5 and task.status == TaskStatus.SCHEDULED
    assert 5 - 1 <= (task.run_at - before).total_seconds() <= 10 + 1


def test_after_a_manual_retry_giving_up_counts_the_attempts_since(
    user, allow_loopback, monkeypatch
):
    """It said "gave up after 8 attempts" for a type that tries 4 times."""
    monkeypatch.setattr(services.queue, "publish", lambda jobs: [])
    with HTTPServer([Answer(503, b"busy")]) as server:
        task = integration_task(user, url=server.url())
        for _round in range(2):
            for _ in range(3):
                assert jobs.run_task(str(task.pk)).startswith("retrying in ")
                _release(task)
            assert jobs.run_task(str(task.pk)) == "failed"
            task.refresh_from_db()
            if _round == 0:
                services.task_retry(task=task, actor=user)
    assert task.attempts == 8
    assert task.error == (
        "UpstreamError: the server answered 503 (gave up after 4 attempts, 8 in all)"
    )


def test_a_connection_error_is_retried(user, allow_loopback):
    with HTTPServer() as gone:
        url = gone.url()
    task = integration_task(user, url=url)
    assert jobs.run_task(str(task.pk)).startswith("retrying in ")
    task.refresh_from_db()
    assert task.status == TaskStatus.SCHEDULED
    assert task.error.startswith("OutboundUnavailable: could not reach 127.0.0.1")


def test_retry_delays_double_and_are_capped(settings):
    settings.TASK_RETRY_BACKOFF = 10
    settings.TASK_RETRY_MAX_DELAY = 60
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        for _ in range(20):
            assert ceiling / 2 - 1 <= runner.retry_delay(attempt) <= ceiling


def test_a_retry_recorded_after_a_cancel_changes_nothing(user):
    task = integration_task(user, url="https://api.example.com/")
    claimed = services.task_claim(task_id=task.pk)
    services.task_cancel(task=Task.objects.get(pk=task.pk), actor=user)
    assert not services.task_retry_later(task=claimed, error="x", delay=5)
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.run_at is None
