"""Dependencies that are down or hang delay work but never fail or hold a request long:
a broker that refuses or never answers, a cache that is down or hangs, a database probe
that hangs. The bounds asserted here are liveness bounds (seconds, not milliseconds): without
the timeouts these requests would wait for as long as the dependency hangs."""

import contextlib
import select
import socket
import threading
import time
from queue import Empty, SimpleQueue
from urllib.parse import urlsplit

import pytest

from backend.common import health
from backend.tasks import queue
from backend.tasks.models import Task, TaskStatus

pytestmark = pytest.mark.django_db

BOUND = 5.0  # seconds: BROKER_PUBLISH_TIMEOUT / CACHE_TIMEOUT / HEALTH_CHECK_TIMEOUT are 1-1.5


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def create(client):
    return client.post(
        "/api/tasks/", {"task_type": "sum", "input_data": {"numbers": [1]}}, format="json"
    )


@pytest.mark.django_db(transaction=True)
def test_creates_answer_201_promptly_while_the_broker_hangs(client_for, user, broker_hung):
    client = client_for(user)
    response, elapsed = timed(lambda: create(client))
    assert response.status_code == 201
    assert elapsed < BOUND
    # The send failed: the task waits for the dispatcher, and the breaker skips the broker.
    task = Task.objects.get(pk=response.json()["id"])
    assert task.status == TaskStatus.PENDING and task.enqueued_at is None
    assert not queue.accepting()
    response, elapsed = timed(lambda: create(client))
    assert response.status_code == 201 and elapsed < 1.0  # no send attempted at all
    assert Task.objects.filter(enqueued_at__isnull=True).count() == 2


@pytest.mark.django_db(transaction=True)
def test_creates_answer_201_promptly_while_the_broker_refuses(client_for, user, broker_down):
    client = client_for(user)
    for _ in range(3):
        response, elapsed = timed(lambda: create(client))
        assert response.status_code == 201 and elapsed < BOUND
    assert Task.objects.filter(enqueued_at__isnull=True).count() == 3


def test_dispatcher_leaves_tasks_unsent_while_the_broker_hangs(user, broker_hung):
    from backend.tasks import services
    from backend.tasks.tests.factories import TaskFactory

    TaskFactory.create_batch(3, owner=user)
    outcome, elapsed = timed(services.tasks_dispatch)
    assert outcome["sent"] == 0 and outcome["due"] == 3 and elapsed < BOUND
    assert Task.objects.filter(enqueued_at__isnull=True).count() == 3


def test_health_names_a_hung_broker_within_the_bound(api_client, broker_hung):
    response, elapsed = timed(lambda: api_client.get("/health/"))
    assert response.status_code == 503 and elapsed < BOUND
    body = response.json()
    assert body["failed"] == ["broker"] and body["checks"]["database"] == "ok"


def test_health_names_a_hung_database_within_the_bound(api_client, monkeypatch, settings):
    # A deadline the broker's probe meets on a loaded machine; the database's never ends.
    settings.HEALTH_CHECK_TIMEOUT = 3
    released = threading.Event()
    monkeypatch.setitem(health.CHECKS, "database", lambda: released.wait(60))
    try:
        response, elapsed = timed(lambda: api_client.get("/health/"))
    finally:
        released.set()
    assert response.status_code == 503 and elapsed < 6
    assert response.json()["checks"]["database"] == "error: timed out after 3 s"
    assert response.json()["checks"]["broker"] == "ok"


@pytest.fixture(params=["refused", "hung"])
def cache_down(request, settings, blackhole):
    """A Redis cache that refuses connections, or accepts them and never answers."""
    port = 9 if request.param == "refused" else blackhole.port
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/1",
            "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
        }
    }
    # Django's setting_changed handler rebuilds the cache handler, now and on restore.
    return request.param


def test_auth_works_with_the_cache_down(api_client, user, cache_down):
    user.set_password("s3cret-pass-123")
    user.save()
    for _ in range(3):
        response, elapsed = timed(
            lambda: api_client.post(
                "/api/token/",
                {"username": user.username, "password": "s3cret-pass-123"},
                format="json",
            )
        )
        assert response.status_code == 200, response.content
        assert elapsed < BOUND
    response = api_client.post(
        "/api/register/",
        {"username": "newcomer", "password": "s3cret-pass-123"},
        format="json",
    )
    assert response.status_code == 201


def test_health_reports_the_cache_when_one_is_configured(api_client, cache_down):
    response, elapsed = timed(lambda: api_client.get("/health/"))
    # The service works without it: degraded, not down (a 503 took it out of a balancer).
    assert response.status_code == 200 and elapsed < BOUND
    body = response.json()
    assert body["checks"]["cache"].startswith("error: ") and "failed" not in body
    assert body["status"] == "degraded" and "the cache is unavailable" in body["reason"]


@pytest.mark.django_db(transaction=True)
def test_creates_answer_promptly_while_an_amqp_broker_hangs(
    client_for, user, monkeypatch, blackhole
):
    """The same bound on RabbitMQ's transport: the handshake of a broker that accepts the
    connection and never answers times out after BROKER_PUBLISH_TIMEOUT."""
    from backend.celery import app

    url = f"amqp://guest:guest@127.0.0.1:{blackhole.port}//"
    monkeypatch.setattr(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport", None)
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    response, elapsed = timed(lambda: create(client_for(user)))
    assert response.status_code == 201 and elapsed < BOUND
    assert Task.objects.get(pk=response.json()["id"]).enqueued_at is None
    assert not queue.accepting()


def sends_ended(within: float = 60) -> None:
    """Wait until no send of the web tier's sender threads is under way."""
    deadline = time.monotonic() + within
    while queue._senders().busy:
        assert time.monotonic() < deadline, "a send never ended"
        time.sleep(0.1)


class _FreezingProxy:
    """A TCP relay to the broker that, once frozen, keeps every connection open and relays
    nothing more: a broker that hangs after the pool's connection was made (SIGSTOP, a
    RabbitMQ that blocks publishers on a disk alarm). ``cut`` closes the connections made so
    far, as a broker restarted drops them; new ones are relayed."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.delay = 0.0  # seconds each chunk waits before it is relayed (a slow broker)
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._relay, args=(source, target), daemon=True).start()

    def _relay(self, source, target):
        # Each chunk goes ``delay`` after it came, whatever came before it: latency, as a
        # slow broker's network has. Waiting ``delay`` after each chunk in turn added the
        # delays of a reply sent in several packets (AMQP's), past a 1 s socket timeout.
        in_transit: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._deliver, args=(in_transit, target), daemon=True).start()
        while not self.closed.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            ready, _, _ = select.select([source], [], [], 0.05)
            if not ready or self.frozen.is_set():
                continue
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            in_transit.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _deliver(self, in_transit: SimpleQueue, target):
        while not self.closed.is_set():
            try:
                due, data = in_transit.get(timeout=0.05)
            except Empty:
                continue
            while (self.frozen.is_set() or time.monotonic() < due) and not self.closed.is_set():
                time.sleep(0.005)
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def cut(self):
        dropped, self.sockets = self.sockets, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self):
        self.closed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def proxied_broker(monkeypatch):
    """The app's broker reached through a ``_FreezingProxy``."""
    from backend.celery import app

    url = urlsplit(app.conf.broker_url)
    if url.scheme not in ("redis", "amqp", "pyamqp"):
        pytest.skip("the embedded broker has no connection to hang")
    proxy = _FreezingProxy(url.hostname, url.port)
    proxied = url._replace(netloc=url.netloc.replace(f":{url.port}", f":{proxy.port}")).geturl()
    monkeypatch.setattr(app.conf, "broker_url", proxied)
    monkeypatch.setenv("CELERY_BROKER_URL", proxied)
    try:
        yield proxy
    finally:
        queue.breaker.reset()
        queue._discard_pool()
        proxy.close()


@pytest.mark.django_db(transaction=True)
def test_a_broker_that_hangs_on_a_pooled_connection_holds_a_send_one_timeout(
    user, settings, proxied_broker
):
    """On AMQP a failed send also closed its channel and connection gracefully, each close
    waiting for the hung broker's answer: 3 s with the default 1 s timeout, not 1."""
    from backend.tasks.tests.factories import TaskFactory

    [task] = TaskFactory.create_batch(1, owner=user)
    assert queue.publish([queue.job_of(task)]) == [task.pk]  # the pool's connection
    proxied_broker.frozen.set()
    sent, elapsed = timed(lambda: queue.publish([queue.job_of(task)]))
    assert sent == []
    assert elapsed < settings.BROKER_PUBLISH_TIMEOUT * 2


@pytest.mark.django_db(transaction=True)
def test_a_slow_broker_holds_a_create_one_timeout_and_the_task_still_goes(
    client_for, user, settings, proxied_broker, monkeypatch
):
    """Each step of a send, and of making its connection (about ten round trips on Redis),
    was bounded alone: a broker answering each in 0.8 s (within the 1 s timeout) held a
    create 8 to 13 s, and every web worker with it. In the web tier a send as a whole
    waits one timeout; the task is then left for the dispatcher."""
    from backend.tasks import services

    monkeypatch.setattr(queue, "_whole_sends_bounded", True)  # as backend/wsgi.py sets it
    queue._discard_pool()  # a process's first send
    proxied_broker.delay = 0.4  # each way
    response, elapsed = timed(lambda: create(client_for(user)))
    assert response.status_code == 201
    # The send waits one timeout; the rest of the create may take a few on a loaded machine.
    assert elapsed < settings.BROKER_PUBLISH_TIMEOUT * 4, elapsed
    task = Task.objects.get(pk=response.json()["id"])
    assert task.enqueued_at is None and not queue.accepting()  # left for the dispatcher
    sends_ended()  # the send given up goes on: its end, awaited
    # The dispatcher (beat's, a process that waits for its sends) sends it.
    monkeypatch.setattr(queue, "_whole_sends_bounded", False)
    queue.breaker.reset()  # as it is BROKER_BREAKER_SECONDS later
    assert services.tasks_dispatch()["sent"] == 1
    task.refresh_from_db()
    assert task.enqueued_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_requests_sends_wait_one_timeout_in_all(user, settings, proxied_broker, monkeypatch):
    """A create whose owner has a webhook sends twice (its run, the delivery): each waited
    a timeout of its own, 1.8 s a create with a broker slow by 0.45 s each way."""
    from backend.tasks.tests.factories import TaskFactory

    tasks = TaskFactory.create_batch(5, owner=user)
    first, last = tasks[0], tasks[-1]
    assert queue.publish([queue.job_of(first)]) == [first.pk]  # the pool's connection
    monkeypatch.setattr(queue, "_whole_sends_bounded", True)
    queue._request_began()  # as each request does
    # Each send takes about 0.3 of a timeout: the first goes well within the request's
    # time, even on a loaded machine; five would take 1.5 timeouts.
    proxied_broker.delay = settings.BROKER_PUBLISH_TIMEOUT * 0.15  # each way
    sent, elapsed = timed(lambda: [queue.publish([queue.job_of(task)]) for task in tasks])
    assert sent[0] == [first.pk] and sent[-1] == []  # the last, given up: left for later
    assert elapsed < settings.BROKER_PUBLISH_TIMEOUT * 1.3, elapsed
    sends_ended()  # the send given up goes on, on the pooled connection
    queue._request_began()  # the next request has a timeout of its own
    queue.breaker.reset()
    assert queue.publish([queue.job_of(last)]) == [last.pk]
    assert all(
        thread.daemon for thread in threading.enumerate() if thread.name.startswith("broker send")
    )  # a send given up does not hold the process's exit


def test_a_requests_send_after_its_time_went_elsewhere_trips_no_breaker(
    user, settings, monkeypatch
):
    """Left for the dispatcher, as the request's time is spent, but nothing says the broker
    is slow: it tripped the breaker, and every request of the process skipped a healthy
    broker for BROKER_BREAKER_SECONDS."""
    from backend.tasks.tests.factories import TaskFactory

    first, second = TaskFactory.create_batch(2, owner=user)
    # The pool's connection first (on a loaded machine, making one took more than 0.2 s).
    assert queue.publish([queue.job_of(first)]) == [first.pk]
    monkeypatch.setattr(queue, "_whole_sends_bounded", True)
    queue._request_began()
    assert queue.publish([queue.job_of(first)]) == [first.pk]
    time.sleep(settings.BROKER_PUBLISH_TIMEOUT * 1.2)  # the request's other work
    assert queue.publish([queue.job_of(second)]) == []
    assert queue.accepting()


@pytest.mark.django_db(transaction=True)
def test_an_admins_send_is_awaited_whole(user, settings, proxied_broker, monkeypatch):
    """The admin's "Run selected tasks" said "not sent" of a send given up that went a few
    seconds later (and another click ran it twice)."""
    monkeypatch.setattr(queue, "_whole_sends_bounded", True)
    queue._request_began()
    queue._discard_pool()  # a process's first send: about ten round trips
    proxied_broker.delay = settings.BROKER_PUBLISH_TIMEOUT * 0.2
    with queue.sends_awaited():
        assert queue.send_messages("backend.ops.jobs.fold_task_counts", [[]], queue="maintenance")


def test_run_messages_are_built_in_the_callers_thread(user, monkeypatch):
    """A type's time limit may read the database (a file's size): worked out in a web
    request's sender thread, on a connection never checked nor closed, every such send
    failed after a database restart, taken for the broker's failure. One that cannot be
    worked out is left for later alone."""
    from backend.tasks import types
    from backend.tasks.tests.factories import TaskFactory

    tasks = TaskFactory.create_batch(3, owner=user)
    where, original = [], types.TaskType.time_limit_for

    def limit(kind, input_data):
        where.append(threading.current_thread())
        if len(where) == 2:
            raise RuntimeError("the database is away")
        return original(kind, input_data)

    monkeypatch.setattr(types.TaskType, "time_limit_for", limit)
    monkeypatch.setattr(queue, "_whole_sends_bounded", True)
    queue._request_began()
    assert queue.publish([queue.job_of(task) for task in tasks]) == [tasks[0].pk, tasks[2].pk]
    assert where == [threading.current_thread()] * 3 and queue.accepting()


@pytest.mark.django_db(transaction=True)
def test_outside_the_web_tier_a_send_to_a_slow_broker_waits_until_it_goes(user, proxied_broker):
    """A management command (a fresh process each run) that gave up after one timeout
    left its messages to a thread its exit stopped: nothing sent, and exit status 1."""
    from backend.tasks.tests.factories import TaskFactory

    assert not queue._whole_sends_bounded
    [task] = TaskFactory.create_batch(1, owner=user)
    queue._discard_pool()
    proxied_broker.delay = 0.1
    assert queue.publish([queue.job_of(task)]) == [task.pk]


def test_the_web_tier_bounds_its_sends_as_a_whole(monkeypatch):
    import importlib

    import backend.wsgi

    monkeypatch.setattr(queue, "_whole_sends_bounded", False)
    importlib.reload(backend.wsgi)
    assert queue._whole_sends_bounded


def test_a_slow_cache_is_skipped_by_the_throttle_as_a_down_one_is(
    api_client, user, settings, caplog
):
    """Each of the throttle's three or four round trips to the cache was bounded alone: a
    cache answering each just within CACHE_TIMEOUT added 1 to 2 s to every sign-in."""
    from backend.users.api.throttling import cache_breaker

    cache = settings.CACHES["default"]
    location = urlsplit(cache["LOCATION"]) if "redis" in cache["BACKEND"].lower() else None
    if location is None:
        pytest.skip("a Redis cache is what can be slow here")
    proxy = _FreezingProxy(location.hostname, location.port)
    proxy.delay = settings.CACHE_TIMEOUT * 0.35  # each way: each answer within the timeout
    settings.CACHES = {
        "default": {
            **cache,
            "LOCATION": location._replace(netloc=f"127.0.0.1:{proxy.port}").geturl(),
        }
    }
    user.set_password("s3cret-pass-123")
    user.save()
    signed_in = []
    try:
        for _ in range(2):  # one slow count alone (a fresh process's first) is let be
            assert not cache_breaker.is_open
            signed_in.append(
                api_client.post(
                    "/api/token/", {"username": user.username, "password": "s3cret-pass-123"}
                ).status_code
            )
    finally:
        proxy.close()
    assert signed_in == [200, 200]
    assert cache_breaker.is_open  # the next ones skip the cache a while
    assert any("throttle: the cache took" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_beat_sends_again_once_the_broker_dropped_its_connection(proxied_broker):
    """Beat kept the connection and producer of its first send: once the broker had dropped
    them (restarted, or its connections closed), every later send failed on them, so the
    dispatcher, expiry and rescue sweeps went out no more until beat was restarted."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from backend.celery import app
    from backend.schedules.beat import Scheduler

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="a sweep", task="backend.tasks.jobs.dispatch_tasks", interval=every
    )
    scheduler = Scheduler(app=app, lazy=True)
    entry = scheduler.all_as_schedule()["a sweep"]

    def send():
        queue.breaker.reset()  # as it is BROKER_BREAKER_SECONDS after a failed send
        try:
            scheduler.apply_async(entry, producer=scheduler.producer, advance=False)
        except Exception:
            return False
        return True

    assert send()
    proxied_broker.cut()
    # The broker is back at once: a send may fail on the dropped connection, the next not.
    assert send() or send()
    assert send()


@pytest.mark.django_db(transaction=True)
def test_a_queue_rabbitmq_refuses_holds_back_only_its_own_messages(user, monkeypatch, settings):
    """A queue declared with other arguments (an older version's) is refused at every send
    to it (PRECONDITION_FAILED). The sends stopped at the first failure and tripped the
    breaker: one such task first in line (an urgent countdown) held back every other
    queue's tasks for as long as the queue stayed."""
    import dataclasses

    from kombu import Queue

    from backend.celery import app
    from backend.tasks import types
    from backend.tasks.tests.factories import TaskFactory
    from backend.tasks.types import base as types_base

    if urlsplit(app.conf.broker_url).scheme not in ("amqp", "pyamqp"):
        pytest.skip("a queue refused by its arguments is RabbitMQ's")
    name = "atm-test-refused"
    older = {"x-max-priority": 3, "x-queue-type": "classic"}  # the service's is 10
    with app.connection_for_write() as connection:
        Queue(name, durable=True, queue_arguments=older)(connection.default_channel).declare()
    ours = Queue(
        name, routing_key=name, durable=True, queue_arguments=settings.AMQP_QUEUE_ARGUMENTS
    )
    monkeypatch.setitem(app.amqp.queues, name, ours)
    long_kind = dataclasses.replace(types.get("countdown"), queue=name)
    monkeypatch.setitem(types_base._REGISTRY, "countdown", long_kind)
    try:
        urgent = TaskFactory(owner=user, task_type="countdown", input_data={"seconds": 1})
        short = TaskFactory.create_batch(2, owner=user, input_data={"numbers": [1]})
        jobs = [queue.job_of(task) for task in (urgent, *short)]
        assert queue.publish(jobs) == [task.pk for task in short]
        assert queue.accepting()  # the broker is up: the breaker stays closed
        assert queue.publish(jobs[1:]) == [task.pk for task in short]
    finally:
        queue._discard_pool()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(name)
