"""The PostgreSQL backend's health check (backend/common/postgresql): a kept connection is
checked before each request's first query without a statement, and one the server has
ended is still found out and replaced."""

import time

import pytest
from django.db import connection, connections
from django.db.backends.postgresql import base as django_backend

pytestmark = [
    pytest.mark.django_db(transaction=True),  # autocommit: an idle connection, as between requests
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend"),
]


def check_before_next_request():
    """What Django does before a request's first query when CONN_HEALTH_CHECKS is on."""
    connection.health_check_done = False
    connection.close_if_health_check_failed()


def test_an_idle_connection_is_kept_without_asking_the_server(monkeypatch):
    connection.ensure_connection()
    kept = connection.connection

    def select_one(self):
        raise AssertionError("the server was asked")

    monkeypatch.setattr(django_backend.DatabaseWrapper, "is_usable", select_one)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    check_before_next_request()
    assert connection.connection is kept


def test_a_connection_gives_up_on_a_server_cut_off_by_the_network():
    """Its socket is probed after 10 s of silence (every 5 s, 3 times) and gives up on data
    unanswered for 30 s: libpq waited for an answer until the kernel gave up (minutes) when
    the server's host went away mid-statement. A lost network cannot be made on loopback
    here; the socket's own settings are read back."""
    import socket

    connection.ensure_connection()
    if connection.connection.info.host.startswith("/"):
        pytest.skip("a Unix socket: no network between the two")
    sock = socket.socket(fileno=connection.connection.fileno())
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
    finally:
        sock.detach()  # the connection's socket, not this object's to close


def end_the_connection_from_another() -> tuple[int, tuple]:
    """The server ends this thread's connection, as a restart would: its backend's pid and
    what ``pg_terminate_backend`` answered, once the server's message has arrived."""
    connection.ensure_connection()
    ended = connection.connection.info.backend_pid
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [ended])
            answer = cursor.fetchone()
    finally:
        other.close()
    deadline = time.monotonic() + 10
    while connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's message takes a moment to arrive
    return ended, answer


def test_a_connection_the_server_ended_is_replaced():
    ended, answer = end_the_connection_from_another()
    assert answer == (True,)
    assert not connection.is_usable()

    check_before_next_request()
    assert connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != ended


def test_a_worker_replaces_a_connection_the_server_ended_while_it_was_idle():
    """After a PostgreSQL restart, each idle worker process failed the first task it got
    (OperationalError: terminating connection) and the task waited for the dispatcher."""
    from celery.signals import task_prerun

    from backend.tasks import jobs

    ended, _ = end_the_connection_from_another()
    connection.health_check_done = True  # as after the last task's queries

    task_prerun.send(sender=jobs.run_task, task_id="t", task=jobs.run_task, args=(), kwargs={})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != ended


@pytest.fixture
def web_limits(settings, monkeypatch):
    """This process's connections opened as the web tier's are (backend/wsgi.py), with a
    1 s lock timeout; the options as they were afterwards."""
    from backend.common.postgresql.base import bound_web_statements

    options = connections.settings["default"].setdefault("OPTIONS", {})
    before = dict(options)
    options.pop("options", None)  # none given (a live server's start may have set some)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    settings.DATABASE_WEB_LOCK_TIMEOUT = 1
    settings.DATABASE_WEB_STATEMENT_TIMEOUT = 30
    connection.close()
    bound_web_statements()
    yield
    connection.close()
    options.clear()
    options.update(before)


def test_the_web_tiers_connections_carry_its_timeouts(web_limits):
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone() == ("1s",)
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("30s",)


def test_a_request_waiting_on_a_held_lock_is_answered_503_in_moments(web_limits):
    """A create waited on its user's row while a transaction held it (a migration, a psql
    session left open): the web worker was held until gunicorn killed it two minutes later,
    and the client got a 500. (Here the row is held 15 s: without the timeout, the create
    waits for it and succeeds.)"""
    import threading

    from rest_framework.test import APIClient

    from backend.tasks.models import Task
    from backend.users.tests.factories import UserFactory

    user = UserFactory()
    client = APIClient()
    client.force_authenticate(user)
    held, done = threading.Event(), threading.Event()

    def hold_the_row():
        holder = connections.create_connection("default")
        try:
            holder.set_autocommit(False)
            with holder.cursor() as cursor:
                cursor.execute("SELECT id FROM users_user WHERE id = %s FOR UPDATE", [user.pk])
            held.set()
            done.wait(15)
            holder.rollback()
        finally:
            holder.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert held.wait(10)
        body = {"task_type": "sum", "input_data": {"numbers": [1, 2]}}
        response = client.post("/api/tasks/", body, format="json")
        released = done.is_set()
    finally:
        done.set()
        holder.join()
    assert not released
    assert response.status_code == 503, response.content
    # Not "the database is unavailable": it is up, and the rows are busy.
    assert response.json()["code"] == "database_busy"
    assert response["Retry-After"] == "5"
    assert not Task.objects.filter(owner=user).exists()


def test_a_statement_past_the_web_tiers_time_is_answered_so(web_limits, settings, monkeypatch):
    """The statement timeout was answered "The database is unavailable" with Retry-After: a
    client obeying it ran the same 30 s of work every 5 s."""
    from django.db.models.signals import pre_init
    from rest_framework.test import APIClient

    from backend.tasks.models import Task
    from backend.tasks.tests.factories import TaskFactory
    from backend.users.tests.factories import UserFactory

    user = UserFactory()
    TaskFactory(owner=user, status="completed")
    client = APIClient()
    client.force_authenticate(user)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 200")  # this connection's, for this test

    def slow(sender, **kwargs):  # a statement past it, as the list reads its task
        if sender is Task:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(2)")

    pre_init.connect(slow)
    try:
        response = client.get("/api/tasks/?status=completed")
    finally:
        pre_init.disconnect(slow)
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "statement_timeout"
    assert not response.has_header("Retry-After")


@pytest.mark.parametrize(
    "given, expected",
    [
        ("", "-c lock_timeout=1000 -c statement_timeout=30000"),
        ("-c search_path=a", "-c search_path=a -c lock_timeout=1000 -c statement_timeout=30000"),
        ("-c statement_timeout=120000", "-c statement_timeout=120000 -c lock_timeout=1000"),
    ],
)
def test_the_web_limits_keep_the_options_given(settings, given, expected, monkeypatch):
    """A URL's ?options= (or PGOPTIONS, which libpq reads only when none are given) lost to
    the web tier's limits: a stricter or looser limit of the operator's replaced, a
    search_path set in PGOPTIONS dropped."""
    from backend.common.postgresql.base import bound_web_statements

    options = connections.settings["default"].setdefault("OPTIONS", {})
    before = dict(options)
    settings.DATABASE_WEB_LOCK_TIMEOUT = 1
    settings.DATABASE_WEB_STATEMENT_TIMEOUT = 30
    try:
        options.pop("options", None)
        monkeypatch.setenv("PGOPTIONS", given)
        bound_web_statements()
        assert options["options"] == expected
    finally:
        options.clear()
        options.update(before)


@pytest.mark.django_db
def test_a_statement_run_again_and_again_is_prepared():
    statement = "SELECT %s::int + 1 AS prepared_here"
    with connection.cursor() as cursor:
        for n in range(8):
            cursor.execute(statement, [n])
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%prepared_here%"],
        )
        assert cursor.fetchone()[0] == 1
