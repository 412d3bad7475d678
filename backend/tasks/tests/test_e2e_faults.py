"""End to end with a broker that hangs: a Redis server of the test's own is paused (SIGSTOP)
while tasks are created, then resumed; a real worker and beat run every task exactly once.
Needs the redis-server program (CI installs it); skipped where it is not installed."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from backend.tasks.models import Task, TaskStatus

from .processes import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs the redis-server program"),
]

BOUND = 5.0  # seconds a create may take while the broker hangs (publish timeout: 1 s)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(port: int, folder) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            *("--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", str(folder)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(answers, timeout=20, what="the test's Redis to start")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path, monkeypatch):
    """A Redis server on loopback for this test alone, made this process's broker."""
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    from backend.celery import app

    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setattr(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport", None)  # the URL names it
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    proc.port = port
    yield proc
    _stop(proc)


def test_paused_broker_loses_nothing_and_runs_each_task_once(
    own_redis, cluster, user, client_for, settings
):
    settings.MAX_ACTIVE_TASKS = 100
    cluster.env["MAX_ACTIVE_TASKS"] = "100"
    cluster.env["CELERY_BROKER_URL"] = os.environ["CELERY_BROKER_URL"]
    cluster.start_worker()
    cluster.start_beat()
    client = client_for(user)

    own_redis.send_signal(signal.SIGSTOP)
    created, slowest = [], 0.0
    for n in range(20):
        started = time.monotonic()
        response = client.post(
            "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [n, 1]}}, format="json"
        )
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 201, response.content
        created.append(response.json()["id"])
    assert slowest < BOUND
    own_redis.send_signal(signal.SIGCONT)

    def all_done():
        return Task.objects.filter(pk__in=created, status=TaskStatus.COMPLETED).count() == 20

    wait_for(all_done, timeout=90, interval=0.25, what="every task to complete after the pause")
    tasks = Task.objects.filter(pk__in=created)
    assert Task.objects.count() == 20
    assert {t.result["result"] for t in tasks} == {n + 1 for n in range(20)}
    assert all(t.attempts == 1 for t in tasks)  # each run once


def test_an_autoscaled_worker_still_grows_after_the_broker_restarts(
    own_redis, cluster, user, client_for, settings, tmp_path
):
    """Celery cut the prefetch count of a worker that reconnected to what its pool held
    then: the long queue's worker, shrunk to its minimum while idle, could reserve no more
    than that from then on, so its autoscaler never grew it again (long tasks ran one by
    one until it was restarted)."""
    settings.MAX_ACTIVE_TASKS = 100
    cluster.env["MAX_ACTIVE_TASKS"] = "100"
    cluster.env["CELERY_BROKER_URL"] = os.environ["CELERY_BROKER_URL"]
    worker = cluster.start_worker(
        ("long",), "--concurrency=4", "--autoscale=4,1", "--prefetch-multiplier=1"
    )
    _stop(own_redis)
    restarted = _start_redis(own_redis.port, tmp_path)
    try:
        wait_for(
            lambda: worker.log().count(" Connected to ") >= 2,
            timeout=60,
            what="the worker to reconnect",
        )
        # The running tasks are kept on purpose: no warning of Celery's coming default.
        assert "cancel_long_running_tasks" not in worker.log(), worker.log()[-3000:]
        client = client_for(user)
        created = [
            client.post(
                "/api/tasks/",
                # Long enough that the first still runs once the pool has grown to four on
                # a loaded machine (a second or more per step); teardown stops them.
                {"task_type": "countdown", "input_data": {"seconds": 60}},
                format="json",
            ).json()["id"]
            for _ in range(4)
        ]

        def all_four_running():
            running = Task.objects.filter(pk__in=created, status=TaskStatus.RUNNING)
            return running.count() == 4

        wait_for(all_four_running, timeout=20, interval=0.2, what="4 countdowns running at once")
    finally:
        _stop(restarted)
