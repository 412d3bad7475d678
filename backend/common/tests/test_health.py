"""§8 ``GET /health/``: 200 when the database and the broker answer, 503 naming what failed."""

import pytest
from django.db import OperationalError

from backend.common import health

HEALTH = "/health/"

pytestmark = pytest.mark.django_db


class BrokenConnection:
    def cursor(self):
        raise OperationalError("database is unreachable")


@pytest.fixture
def database_down(monkeypatch):
    monkeypatch.setattr(health, "connection", BrokenConnection())


def test_health_ok(api_client, patient_broker_reads):
    response = api_client.get(HEALTH)

    assert response.status_code == 200
    expected = {"database": "ok", "broker": "ok"}
    if health.cache_is_shared():  # a cache server is configured (CI's Redis)
        expected["cache"] = "ok"
    body = response.json()
    assert body["checks"] == expected
    # No worker runs here, so the service says it is degraded (backend/ops/tests/test_e2e.py
    # starts one and sees "ok").
    assert body["status"] == "degraded"
    assert body["workers"] == 0
    assert "no worker consumes the 'tasks' queue" in body["reason"]


def test_health_names_a_queue_no_worker_consumes(api_client, monkeypatch, patient_health_probes):
    """With the maintenance worker gone, it said "ok" while no expiry, dispatch or rescue
    ran; the status stays "ok" (tasks run), with a warning per queue left alone."""
    from backend.ops import broker

    online = [{"name": "worker@h", "queues": ["tasks"], "active": 0}]
    monkeypatch.setattr(broker, "workers", lambda accept=None: online)
    body = api_client.get(HEALTH).json()
    assert body["status"] == "ok" and body["workers"] == 1
    assert body["queues"] == {"tasks": 1, "long": 0, "maintenance": 0}
    assert [warning.split(":")[0] for warning in body["warnings"]] == [
        "no worker consumes the 'long' queue",
        "no worker consumes the 'maintenance' queue",
    ]
    online.append({"name": "long@h", "queues": ["long", "maintenance"], "active": 0})
    body = api_client.get(HEALTH).json()
    assert body["queues"] == {"tasks": 1, "long": 1, "maintenance": 1}
    assert "warnings" not in body


def test_health_keeps_a_queues_warning_beside_a_reason(
    api_client, monkeypatch, patient_health_probes
):
    """With the short and the long workers both gone, the reason named the 'tasks' queue
    and the 'long' queue's warning was dropped: only the first of two outages showed."""
    from backend.ops import broker

    online = [{"name": "maintenance@h", "queues": ["maintenance"], "active": 0}]
    monkeypatch.setattr(broker, "workers", lambda accept=None: online)
    body = api_client.get(HEALTH).json()
    assert body["status"] == "degraded"
    assert "no worker consumes the 'tasks' queue" in body["reason"]
    assert [warning.split(":")[0] for warning in body["warnings"]] == [
        "no worker consumes the 'long' queue"
    ]
    online.clear()  # no worker at all: the reason says it, no warning per queue
    body = api_client.get(HEALTH).json()
    assert body["workers"] == 0 and "warnings" not in body


def test_health_needs_no_authentication(api_client, patient_health_probes):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    assert api_client.get(HEALTH).status_code == 200


def test_health_503_when_broker_unreachable(api_client, broker_down, patient_health_probes):
    response = api_client.get(HEALTH)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "error: OperationalError (see the service's log)"
    assert body["failed"] == ["broker"]


def test_a_failed_check_shows_no_address_to_the_public(api_client, broker_down, caplog):
    """It showed the error's text ("connection to server at 127.0.0.1, port 59201
    failed…") to anyone; the log keeps it."""
    from backend.conftest import UNREACHABLE_BROKER

    port = UNREACHABLE_BROKER.rsplit(":", 1)[1].split("/")[0]
    body = api_client.get(HEALTH).json()
    assert f":{port}" not in str(body) and "127.0.0.1" not in str(body)
    assert any("health check broker failed" in r.getMessage() for r in caplog.records)


def test_health_recovers_when_broker_is_back(api_client, broker_down, patient_health_probes):
    assert api_client.get(HEALTH).status_code == 503

    broker_down.undo()

    assert api_client.get(HEALTH).status_code == 200


def test_a_cache_down_leaves_the_service_up_and_says_it_is_degraded(api_client, monkeypatch):
    """The cache is optional (the throttles let requests through without it), yet its
    failure answered 503: a load balancer took out a service that worked."""
    from backend.ops import broker

    def cache_down():
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(health, "cache_is_shared", lambda: True)
    monkeypatch.setitem(health.CHECKS, "cache", cache_down)
    online = [{"name": "worker@h", "queues": ["tasks", "long", "maintenance"], "active": 0}]
    monkeypatch.setattr(broker, "workers", lambda accept=None: online)

    response = api_client.get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["cache"] == "error: ConnectionError (see the service's log)"
    assert "failed" not in body
    assert body["status"] == "degraded"
    assert body["reason"] == "the cache is unavailable: the throttles let every request through"
    online.clear()  # and no worker either: both reasons
    body = api_client.get(HEALTH).json()
    assert body["reason"] == (
        "no worker consumes the 'tasks' queue: new tasks wait; "
        "the cache is unavailable: the throttles let every request through"
    )


def test_health_503_when_database_fails(api_client, database_down, patient_health_probes):
    response = api_client.get(HEALTH)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] != "ok"
    assert body["checks"]["database"] != "ok"
    assert "OperationalError" in body["checks"]["database"]
    assert body["checks"]["broker"] == "ok"


def test_health_503_when_a_check_raises(api_client, monkeypatch):
    def failing():
        raise RuntimeError("boom")

    monkeypatch.setitem(health.CHECKS, "database", failing)

    response = api_client.get(HEALTH)

    assert response.status_code == 503
    assert response.json()["checks"]["database"] != "ok"


def test_on_rabbitmq_the_broker_check_is_a_publish_it_confirms(settings):
    """RabbitMQ under a memory or disk alarm takes connections and blocks every publish:
    /health/ said the broker was ok while no task could be sent. The check now publishes
    (to a queue nobody has; here one is declared to catch it) and waits for the confirm;
    under an alarm it times out and /health/ answers 503 naming the broker (checked by
    hand with ``rabbitmqctl set_disk_free_limit``)."""
    if not settings.BROKER_IS_AMQP:
        pytest.skip("Redis and the embedded broker do not block publishers")
    from kombu import Queue

    from backend.celery import app

    with app.connection_for_write() as conn:
        probe = Queue(health.HEALTH_ROUTING_KEY, auto_delete=False, durable=False)
        bound = probe(conn.default_channel)
        bound.declare()
        try:
            bound.purge()
            health.check_broker()
            assert bound.get(no_ack=True) is not None
        finally:
            bound.delete()


def test_a_probe_by_address_gets_the_health_check_whatever_its_host(
    client, settings, patient_health_probes
):
    """With ALLOWED_HOSTS set to the service's name, as production needs, a probe by address
    (a load balancer's, the containers' healthcheck on 127.0.0.1) got a 400: compose's web
    service never became healthy, so no worker or beat started."""
    settings.ALLOWED_HOSTS = ["tasks.example.com"]
    response = client.get("/health/", HTTP_HOST="10.0.0.5:8000")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"
    assert client.head("/health", HTTP_HOST="127.0.0.1:8000").status_code == 200
    # Anything else keeps Django's host check.
    assert client.get("/api/", HTTP_HOST="10.0.0.5:8000").status_code == 400
    assert client.post("/health/", HTTP_HOST="10.0.0.5:8000").status_code == 400
    assert client.get("/health/", HTTP_HOST="tasks.example.com").status_code == 200
    # Served as any request: the same headers, the same checks.
    by_name = client.get("/health/", HTTP_HOST="tasks.example.com")
    by_address = client.get("/health/", HTTP_HOST="10.0.0.5:8000")
    for header in ("X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options"):
        assert by_address.get(header) == by_name.get(header) is not None, header
    crowded = client.get("/health/?" + "&".join(["a=1"] * 1001), HTTP_HOST="10.0.0.5")
    assert crowded.status_code == 400 and crowded.json()["code"] == "too_many_fields"
    # With every host allowed, only a malformed Host is refused: a probe still gets the check.
    settings.ALLOWED_HOSTS = ["*"]
    assert client.get("/health/", HTTP_HOST="bad host").status_code == 200
    assert client.get("/api/", HTTP_HOST="bad host").status_code == 400


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/health"])
def test_a_scrape_by_a_host_not_allowed_gets_a_json_error(client, settings, path):
    """Prometheus scraping compose's `web:8000` once ALLOWED_HOSTS was set without `web` got
    Django's HTML "Bad Request (400)" page, where every other error of /metrics is JSON."""
    settings.ALLOWED_HOSTS = ["tasks.example.com"]
    response = client.post(path, HTTP_HOST="web:8000")
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request.", "code": "bad_request"}


@pytest.mark.django_db(transaction=True)
def test_a_database_not_migrated_is_not_healthy(client, monkeypatch, patient_health_probes):
    """An empty database, or one an upgrade did not migrate, answered "ok" while every
    request failed; once this process has seen every migration applied, it does not look
    again."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(health, "_MIGRATED", health.threading.Event())
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes("schedules")
    MigrationExecutor(connection).migrate([("schedules", "0001_initial")])
    try:
        body = client.get("/health/").json()
        assert body["status"] == "error" and body["failed"] == ["database"]
        assert body["checks"]["database"] == "error: NotMigrated (see the service's log)"
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert client.get("/health/").json()["checks"]["database"] == "ok"
    assert health._MIGRATED.is_set()


@pytest.mark.parametrize("accept", ["text/plain", "application/health+json", "text/plain;q=1"])
def test_a_probe_accepting_no_renderer_gets_the_json_check(client, accept, patient_health_probes):
    """A probe sending its own Accept got a 406: a healthy service looked down."""
    response = client.get("/health/", HTTP_ACCEPT=accept)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["checks"]["database"] == "ok"
    # A browser still gets the page; a format asked for by name that does not exist, 404.
    assert client.get("/health/", HTTP_ACCEPT="text/html")["Content-Type"].startswith("text/html")
    assert client.get("/health/?format=xml").status_code == 404


@pytest.fixture
def rabbitmq_alarm(settings):
    """Raise a memory alarm on CI's RabbitMQ node (``.ci/rabbitmq.sh alarm``); cleared after."""
    import os
    import subprocess
    from pathlib import Path

    folder = os.environ.get("CI_RABBITMQ_DIR")
    if not settings.BROKER_IS_AMQP or not folder:
        pytest.skip("needs the RabbitMQ node .ci/run starts (CI_RABBITMQ_DIR)")
    script = Path(settings.BASE_DIR) / ".ci" / "rabbitmq.sh"

    def alarm(state: str) -> None:
        subprocess.run(["bash", str(script), "alarm", folder, state], check=True, timeout=60)

    alarm("on")
    try:
        yield
    finally:
        alarm("off")


def _until(condition, seconds: float = 20.0):
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            return condition()
        except (AssertionError, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_under_a_rabbitmq_alarm_the_broker_check_fails_and_reads_do_not_pile_up(
    rabbitmq_alarm, settings
):
    """A new connection's first publish is confirmed before RabbitMQ blocks it: the check's
    one publish passed under an alarm (with HEALTH_CHECK_TIMEOUT above 2 s, /health/ said
    "ok"). And each read of the workers started a broadcast that never ended: threads and
    connections piled up by the /health/ probe, and task_stats never exited."""
    import threading

    from backend.ops import broker

    settings.HEALTH_CHECK_TIMEOUT = 3

    def refused():
        with pytest.raises(Exception):  # noqa: B017 (a timeout, or a closed connection)
            health.check_broker()

    _until(refused)
    broker.reset_cache()
    before = {t for t in threading.enumerate() if t.name.startswith("ops-")}
    for _ in range(4):
        broker.reset_cache()
        assert broker.workers() is None
    stuck = {t for t in threading.enumerate() if t.name.startswith("ops-")} - before
    assert len(stuck) <= 3, [t.name for t in stuck]  # one read and its two broadcasts
    assert all(thread.daemon for thread in threading.enumerate() if thread.name.startswith("ops"))
