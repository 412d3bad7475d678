import os
import socket
import threading

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from backend.common.pytest_env import STORES
from backend.users.tests.factories import UserFactory


def pytest_configure(config):
    from django.conf import settings

    # A fast hasher: the default one is slow on purpose, and the suite creates many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_collection_modifyitems(config, items):
    # A test marked own_stores starts processes given an environment of its own (the
    # embedded default in the test's folder): it is the same test whatever stores the suite
    # is given, and the suite on the embedded default runs it (CI runs the suite on each).
    given = [name for name in STORES if os.environ.get(name)]
    if not given:
        return
    skip = pytest.mark.skip(
        reason=f"its processes run on stores of their own, not {', '.join(given)}: "
        "the suite on the embedded default runs it"
    )
    for item in items:
        if item.get_closest_marker("own_stores"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Under pytest-xdist a report travels to the main process as UTF-8: a lone surrogate in
    # its captured output (a test of what the service does with one logs it) stopped the run.
    outcome = yield
    report = outcome.get_result()
    report.sections = [
        (title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
        for title, text in report.sections
    ]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Throttle counters live in the cache; each test starts with none.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _broker_figures_fresh():
    # Queue depth and workers online are kept a few seconds per process; each test reads anew,
    # not held back by a read a hung broker's test left still waiting.
    from backend.ops import broker

    broker.reset_cache()
    broker._late.clear()
    yield
    broker.reset_cache()
    broker._late.clear()


@pytest.fixture(autouse=True)
def _breakers_closed():
    # A test that trips a breaker must not leave the next test without a broker or cache.
    from backend.tasks import queue
    from backend.users.api import throttling
    from backend.users.api.throttling import cache_breaker

    for breaker in (queue.breaker, cache_breaker):
        breaker.reset()
    throttling._slow_counts[0] = 0
    # Nor sends bounded as the web tier's are: a live server's start imports backend.wsgi.
    queue._whole_sends_bounded = False
    # Nor the web tier's database limits on the connections opened next (backend/wsgi.py).
    _database_options_as_at_start()
    queue._request.deadline = None
    yield
    for breaker in (queue.breaker, cache_breaker):
        breaker.reset()


class Blackhole:
    """A TCP server on loopback that accepts connections and never answers: a broker or
    cache that hangs (paused, or behind a network that drops packets)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def blackhole():
    server = Blackhole()
    yield server
    server.close()


@pytest.fixture
def broker_hung(monkeypatch, blackhole):
    """Point this process at a broker that accepts connections and never answers."""
    from backend.celery import app

    url = f"redis://127.0.0.1:{blackhole.port}/0"
    monkeypatch.setattr(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport", None)  # the URL names it
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    return monkeypatch


@pytest.fixture
def patient_health_probes(settings):
    """For a test that asserts what /health/'s probes found (each 1.5 s at most), not how
    fast they found it: CI runs the suites side by side on two cores."""
    settings.HEALTH_CHECK_TIMEOUT = 5.0


@pytest.fixture
def patient_broker_reads(settings, patient_health_probes):
    """For a test that asserts what the broker answered (no worker, empty queues), not how
    fast: a 1 s read of the workers online once came back late (``null``) on CI's loaded
    machine. Each read of the workers now waits 1.8 s for replies, not 0.6."""
    settings.OPS_BROKER_TIMEOUT = 3.0  # 1.2 s to spare, not 0.4


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def client_for():
    """``client_for(user)``: an API client signed in as that user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


UNREACHABLE_BROKER = "redis://127.0.0.1:9/0"


@pytest.fixture
def broker_down(monkeypatch):
    """Point this process at a broker that refuses connections. Celery reads the
    CELERY_BROKER_URL environment variable before its configuration, so set both."""
    from backend.celery import app

    # Configuration first: Celery's broker_url reads the variable first, so patching after
    # setenv would record (and later "restore") the unreachable URL.
    monkeypatch.setattr(app.conf, "broker_url", UNREACHABLE_BROKER)
    monkeypatch.setitem(app.conf, "broker_transport", None)  # the URL names it
    monkeypatch.setenv("CELERY_BROKER_URL", UNREACHABLE_BROKER)
    return monkeypatch


def _options():
    from django.db import connections

    return connections.settings["default"].setdefault("OPTIONS", {})


_OPTIONS_AT_START = None


def _database_options_as_at_start() -> None:
    global _OPTIONS_AT_START
    if _OPTIONS_AT_START is None:
        _OPTIONS_AT_START = dict(_options())
    elif _options() != _OPTIONS_AT_START:
        _options().clear()
        _options().update(_OPTIONS_AT_START)
