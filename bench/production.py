"""Benchmark the production stack: PostgreSQL + Redis, gunicorn, Celery workers and beat.

Starts PostgreSQL and Redis on free loopback ports in a temporary folder (installing them and
wrk with apt-get when missing), then the service with ``DEBUG=false``: gunicorn with 2 sync
workers, a worker for the short queues (``-Q tasks,maintenance --concurrency=2``), one for the
long queue (``-Q long``) and beat. It measures creates and lists with wrk at 8 connections,
a drain of queued tasks by one worker next to a bare Celery no-op app (``bench/bare_celery.py``)
with the same broker and worker settings, the expiry of overdue tasks and two head-of-line
cases; prints a table and writes ``bench/RESULTS-production.md``. It reports numbers and
asserts no speed; exit code 1 when the stack does not start or a part fails.

Usage (from the repository root, as root or a user who can run PostgreSQL's initdb):
``.venv/bin/python bench/production.py [--quick] [--port N] [--only PART]``
(``--only`` runs one part and prints it, leaving the results file alone).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from stack import (
    BIN,
    HERE,
    ROOT,
    WEB_WORKERS,
    WORKER_CONCURRENCY,
    WRK_CONNECTIONS,
    Account,
    BenchError,
    Stack,
    WrkResult,
    api,
    cpu_model,
    expect,
    free_port,
    register,
    run_wrk,
    running_stack,
    version,
    wait_for,
    worker,
)

RESULTS = HERE / "RESULTS-production.md"
PARTS = ("create", "list", "reference", "drain", "expiry", "hol", "before")
SUM = {"task_type": "sum", "input_data": {"numbers": [1, 2, 3, 4, 5]}}
LIST_PATH = "/api/tasks/?page_size=10"
ACTIVE = ("scheduled", "pending", "running")
BARE_DB = 2  # the bare app's Redis database: same server, its own keys
REFERENCE_DATABASE = "reference"  # the reference service's, on the same PostgreSQL server
REFERENCE_REDIS_DB = 3  # and on the same Redis server
SERVICE = ("web", "short", "long", "beat")
REFERENCE = ("ref-web", "ref-worker")
# The list part's users, for the reference part's runs of the same lists.
LIST_TOKENS: dict[str, str] = {}


@dataclass
class Config:
    quick: bool
    port: int | None
    only: str | None
    seconds: float  # each wrk run
    warm: float  # a wrk run before each one, not counted
    list_small: int
    list_big: int
    drain: int
    expiry: int
    countdown: int
    low: int
    backlog: int  # normal tasks a worker is busy with when the low and urgent ones come
    deadline: float  # longest wait for the workers
    rounds: int  # turns of the product and the reference service
    drain_rounds: int  # turns of the product and the bare app (a drain is about a second)


@dataclass
class Row:
    name: str
    result: str
    p50: str = ""
    p99: str = ""
    details: str = ""


# --- reading the database ------------------------------------------------------------------
def status_counts(stack: Stack, owner: str) -> dict[str, int]:
    rows = stack.sql(
        "SELECT status, count(*) FROM tasks_task WHERE owner_id = %s GROUP BY status", (owner,)
    )
    return dict(rows)


def wait_settled(stack: Stack, owner: str, total: int, deadline: float) -> dict[str, int]:
    """Until the user has at least ``total`` tasks and none of them is still active."""

    def settled() -> dict[str, int] | None:
        stack.procs.check()
        counts = status_counts(stack, owner)
        busy = any(status in ACTIVE for status in counts)
        return counts if sum(counts.values()) >= total and not busy else None

    return wait_for(settled, deadline, f"{total} tasks to finish", 0.2)


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items()))


def insert_tasks(stack: Stack, account: Account, count: int, kind: str) -> None:
    began = time.perf_counter()
    stack.django(INSERT_TASKS, account.id, str(count), kind)
    stack.sql("VACUUM ANALYZE tasks_task")  # what autovacuum does to a table that grew
    print(f"  inserted {count:,} {kind} tasks in {time.perf_counter() - began:.1f} s", flush=True)


# Rows as the service leaves them, written in batches (not through the API). The timestamps
# are given, so ``auto_now`` is turned off for this process; fields a newer model lacks are
# left out.
INSERT_TASKS = r"""
import sys
from datetime import timedelta

from django.utils import timezone

from backend.tasks.models import Task

owner, count, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fields = {f.name for f in Task._meta.concrete_fields}
for name in ("created_at", "updated_at"):
    Task._meta.get_field(name).auto_now = Task._meta.get_field(name).auto_now_add = False
now = timezone.now()


def completed(i):
    created = now - timedelta(seconds=30 * (count - i))
    started = created + timedelta(milliseconds=40)
    done = started + timedelta(milliseconds=3)
    return dict(status="completed", result={"result": 3 * i + 3}, progress=100, attempts=1,
                created_at=created, updated_at=done, enqueued_at=created, started_at=started,
                heartbeat_at=started, completed_at=done)


def overdue(i):
    # Pending (sent a moment ago, so the dispatcher leaves them) or running; past deadline.
    created = now - timedelta(hours=2) + timedelta(milliseconds=i)
    row = dict(status="pending", created_at=created, updated_at=created, enqueued_at=now,
               deadline=now - timedelta(minutes=1))
    if i % 2:
        row.update(status="running", attempts=1, started_at=now, heartbeat_at=now, updated_at=now)
    return row


make = {"completed": completed, "overdue": overdue}[kind]
for start in range(0, count, 5000):
    Task.objects.bulk_create(
        Task(owner_id=owner, assignee_id=owner, name="sum", task_type="sum",
             input_data={"numbers": [i, i + 1, i + 2]},
             **{k: v for k, v in make(i).items() if k in fields})
        for i in range(start, min(count, start + 5000))
    )
"""


# --- create --------------------------------------------------------------------------------
def wrk_row(name: str, result: WrkResult, details: str) -> Row:
    errors = f"{result.non2xx} not 2xx, {result.socket_errors} socket errors"
    return Row(
        name,
        f"{result.rate:,.0f} req/s",
        f"{result.p50_ms:.1f} ms",
        f"{result.p99_ms:.1f} ms",
        f"{result.requests:,} responses in {result.duration:.1f} s ({errors}); {details}",
    )


def cpu_per(before: dict[str, float], after: dict[str, float], count: int, unit: str) -> str:
    used = ", ".join(f"{k} {(after[k] - before[k]) / count * 1000:.2f}" for k in after)
    return f"CPU ms per {unit}: {used}"


def wrk(
    stack: Stack,
    config: Config,
    path: str,
    token: str,
    body: dict | None = None,
    processes: tuple[str, ...] = SERVICE,
):
    """A short warm-up run, not counted (first requests of each web worker), then the run;
    returns its result and what it cost each of ``processes`` in CPU time."""
    run_wrk(stack.folder, stack.base + path, token, config.warm, body)
    before = stack.cpu(*processes)
    result = run_wrk(stack.folder, stack.base + path, token, config.seconds, body)
    return result, cpu_per(before, stack.cpu(*processes), max(result.requests, 1), "request")


def part_create(stack: Stack, config: Config) -> list[Row]:
    account = register(stack.port, "create")
    result, cpu = wrk(stack, config, "/api/tasks/", account.token, SUM)
    ended = time.perf_counter()
    counts = wait_settled(stack, account.id, result.requests - result.non2xx, config.deadline)
    details = (
        f"{describe(counts)} rows (warm-up included); the workers finished them "
        f"{time.perf_counter() - ended:.1f} s after the load ended; {cpu}"
    )
    rows = [wrk_row("POST /api/tasks/ (sum of 5 numbers), workers running", result, details)]
    # The web tier alone, as a service whose workers run elsewhere: the same load with the
    # workers and beat stopped (the tasks wait on the queue), then drained.
    alone = register(stack.port, "create_alone")
    with stack.paused("beat", "short", "long"):
        result, cpu = wrk(stack, config, "/api/tasks/", alone.token, SUM, ("web",))
    counts = wait_settled(stack, alone.id, result.requests - result.non2xx, config.deadline)
    details = f"{describe(counts)} rows once the workers ran again; {cpu}"
    rows.append(wrk_row("POST /api/tasks/ (sum of 5 numbers), workers stopped", result, details))
    return rows


# --- list ----------------------------------------------------------------------------------
def part_list(stack: Stack, config: Config) -> list[Row]:
    small, big, other = (register(stack.port, f"list{i}") for i in range(3))
    insert_tasks(stack, small, config.list_small, "completed")
    insert_tasks(stack, big, config.list_big, "completed")
    insert_tasks(stack, other, config.list_big, "completed")
    rows = []
    for account, count in ((small, config.list_small), (big, config.list_big)):
        shown = expect(stack.port, "GET", LIST_PATH, 200, account.token)["count"]
        result, cpu = wrk(stack, config, LIST_PATH, account.token)
        LIST_TOKENS[f"list {count}"] = account.token
        name = f"GET {LIST_PATH}, a user with {count:,} tasks"
        rows.append(wrk_row(name, result, f"count {shown:,}; {cpu}"))
    return rows


# --- the reference service ----------------------------------------------------------------
# A plain DRF + Celery service (bench/reference/) on the same PostgreSQL server (a database of
# its own) and Redis (its own database number), with the same gunicorn and worker flags:
# what the usual way of writing such a service costs on this machine, in this run.
REFERENCE_SETUP = r"""
import json
import sys

import django

django.setup()
from django.contrib.auth.models import User
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

tokens = {}
for name, count in (("create", 0), *((f"list{n}", int(n)) for n in sys.argv[1:]), ("other", int(sys.argv[-1]))):
    user = User.objects.create_user(name)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO reference_task (owner_id, name, description, task_type, input_data, "
            "priority, status, result, error, created_at, updated_at, started_at, completed_at) "
            "SELECT %s, 'sum', '', 'sum', jsonb_build_object('numbers', jsonb_build_array(g, g + 1)), "
            "'normal', "
            "'completed', jsonb_build_object('result', 3 * g + 3), '', "
            "now() - g * interval '30 seconds', now(), now(), now() "
            "FROM generate_series(1, %s) AS g",
            [user.pk, count],
        )
    tokens[name] = str(AccessToken.for_user(user))
print(json.dumps(tokens))
"""


def reference_active(stack: Stack) -> int:
    with psycopg.connect(stack.servers.dsn_of(REFERENCE_DATABASE)) as conn:
        query = "SELECT count(*) FROM reference_task WHERE status IN ('pending', 'running')"
        return conn.execute(query).fetchone()[0]


def reference_setup(stack: Stack, config: Config) -> tuple[dict[str, str], dict[str, str]]:
    """The reference service's database (its users, and the list users' completed tasks) and
    environment; returns the environment and a token per user."""
    env = {
        **stack.env,
        "REFERENCE_DATABASE_URL": stack.servers.database_url(REFERENCE_DATABASE),
        "REFERENCE_BROKER_URL": stack.servers.redis_url(REFERENCE_REDIS_DB),
        "DJANGO_SETTINGS_MODULE": "reference.settings",
        "PYTHONPATH": str(HERE),
    }
    stack.sql(f"DROP DATABASE IF EXISTS {REFERENCE_DATABASE}")
    stack.sql(f"CREATE DATABASE {REFERENCE_DATABASE}")
    python = [str(BIN / "python")]
    migrate = [*python, "-m", "django", "migrate", "--noinput"]
    subprocess.run(migrate, cwd=HERE, env=env, check=True, capture_output=True, timeout=300)
    sizes = [str(config.list_small), str(config.list_big)]
    setup = [*python, "-c", REFERENCE_SETUP, *sizes]
    done = subprocess.run(setup, cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise BenchError(f"reference set-up failed:\n{done.stderr[-2000:]}")
    stack.sql("VACUUM ANALYZE")
    return env, json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def other_service(
    stack: Stack,
    label: str,
    web: tuple[str, str],
    workers: dict[str, list[str]],
    env: dict[str, str],
    token: str,
    cwd: Path = ROOT,
) -> Iterator[str]:
    """Another service on the same servers, with the product's processes stopped: its
    gunicorn web (``web``: the process's name and its WSGI application, the product's flags)
    and ``workers`` (name -> command), run from ``cwd``; yields its base URL once its task
    list answers ``token``."""
    name, application = web
    port = free_port()
    argv = [str(BIN / "gunicorn"), application, "--bind", f"127.0.0.1:{port}"]
    with stack.paused(*SERVICE):
        stack.procs.start(name, [*argv, "--workers", str(WEB_WORKERS)], env, cwd=cwd)
        for worker_name, command in workers.items():
            stack.procs.start(worker_name, command, env, cwd=cwd)
        try:

            def answers() -> bool:
                stack.procs.check()
                try:
                    return api(port, "GET", "/api/tasks/", token)[0] == 200
                except OSError:
                    return False

            wait_for(answers, 60, label, 0.25)
            yield f"http://127.0.0.1:{port}"
        finally:
            stack.procs.stop(name, *workers)
    wait_for(stack.healthy, 60, "GET /health/ 200 again", 0.25)


def reference_running(stack: Stack, env: dict[str, str], token: str) -> AbstractContextManager[str]:
    """The reference service's web and worker; yields its base URL (``other_service``)."""
    workers = {"ref-worker": worker("celery", "reference", app="reference")}
    web = ("ref-web", "reference.wsgi:application")
    return other_service(stack, "the reference service", web, workers, env, token)


def median_run(runs: list, rate: Callable) -> Any:
    """The run of median ``rate`` (the upper middle one of an even count), with its details."""
    return sorted(runs, key=rate)[len(runs) // 2]


def wrk_in_turn(runs: dict[str, list], labels: dict[str, str], what: str):
    """wrk runs of ``ours`` and one other side, taken in turn: a row per side (``labels``, in
    the order printed) with its median run, the ratio ours / other of the medians, and the
    ratio of each round as text."""
    rows, medians = [], {}
    for side, label in labels.items():
        result, cpu = median_run(runs[side], lambda run: run[0].rate)
        medians[side] = result.rate
        rates = ", ".join(f"{run[0].rate:,.0f}" for run in runs[side])
        rows.append(wrk_row(f"{label}: {what}", result, f"median of {rates} req/s; {cpu}"))
    other = next(side for side in labels if side != "ours")
    each = ", ".join(
        f"{a[0].rate / b[0].rate:.2f}" for a, b in zip(runs["ours"], runs[other], strict=True)
    )
    return rows, medians["ours"] / medians[other], each


def part_reference(stack: Stack, config: Config) -> list[Row]:
    """The same runs on the product and on the reference service, in turn, ``rounds`` times
    (the machine's speed moves between minutes; interleaving shares that out): medians, and
    the ratio of the medians."""
    env, tokens = reference_setup(stack, config)
    ours_create = register(stack.port, "ref-create")
    runs = [("create", "/api/tasks/", SUM, ours_create.token, tokens["create"])]
    for count in (config.list_small, config.list_big):
        if f"list {count}" in LIST_TOKENS:  # the list part ran: its users are there
            token = LIST_TOKENS[f"list {count}"]
            runs.append((f"list {count}", LIST_PATH, None, token, tokens[f"list{count}"]))
    results: dict[str, dict[str, list]] = {key: {"ours": [], "ref": []} for key, *_ in runs}
    for _ in range(config.rounds):
        for key, path, body, token, _ in runs:
            results[key]["ours"].append(wrk(stack, config, path, token, body))
        wait_settled(stack, ours_create.id, 1, config.deadline)
        with reference_running(stack, env, tokens["create"]) as base:
            for key, path, body, _, token in runs:
                run_wrk(stack.folder, base + path, token, config.warm, body)
                before = stack.cpu(*REFERENCE)
                result = run_wrk(stack.folder, base + path, token, config.seconds, body)
                cpu = cpu_per(before, stack.cpu(*REFERENCE), max(result.requests, 1), "request")
                results[key]["ref"].append((result, cpu))
                if body:  # its worker finishes the tasks before the lists are measured
                    wait_for(lambda: not reference_active(stack), config.deadline, "its tasks")
    rows = []
    for key, path, body, *_ in runs:
        what = f"POST {path} (workers running)" if body else f"GET {path}"
        if not body:
            what += f", a user with {int(key.split()[1]):,} tasks"
        labels = {"ours": "This service", "ref": "Reference service"}
        side_rows, ratio, each = wrk_in_turn(results[key], labels, what)
        rows += side_rows
        rows.append(
            Row(
                f"Ratio, this service / reference: {key}",
                f"{ratio:.2f}x",
                details=f"of the medians; round by round: {each}",
            )
        )
    return rows


# --- drain ---------------------------------------------------------------------------------
def queue_keys(broker: redis.Redis, queue: str) -> list[bytes]:
    """The lists holding a queue's messages (one per priority step on Redis)."""
    keys = broker.scan_iter(match=f"{queue}*")
    return [key for key in keys if broker.type(key) == b"list"]


def queued(broker: redis.Redis, queue: str) -> tuple[list[bytes], int]:
    keys = queue_keys(broker, queue)
    return keys, sum(broker.llen(key) for key in keys)


def wait_queued(broker: redis.Redis, queue: str, count: int) -> list[bytes]:
    """Until exactly ``count`` messages wait in ``queue``; returns its lists."""
    keys, waiting = wait_for(
        lambda: (found := queued(broker, queue))[1] >= count and found, 30, "messages", 0.2
    )
    if waiting != count:
        raise BenchError(f"{waiting} messages in queue {queue!r}, expected {count}")
    return keys


def broker_window(
    broker: redis.Redis,
    keys: list[bytes],
    total: int,
    stack: Stack,
    deadline: float,
    on_first: Callable[[], object],
) -> float:
    """Seconds from the first message taken from the queue to the last one done.

    Polls the queue's lists and the transport's ``unacked`` hash every 5 ms: taken when the
    lists hold fewer than ``total`` (``on_first`` is called then), done when both are empty
    and stay so 0.1 s. With kombu's emulated acknowledgements a message stays in the hash
    until its task returned (acks late). Without them (the product's setting) the hash stays
    empty: the last few messages a worker holds (at most prefetch x concurrency, 4 here, a
    few milliseconds of work) are not waited for.
    """
    first = last = None
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pipe = broker.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        pipe.hlen("unacked")
        *lengths, unacked = pipe.execute()
        now = time.perf_counter()
        waiting = sum(lengths)
        if first is None and waiting < total:
            first = now
            on_first()
        idle = first is not None and waiting == 0 and unacked == 0
        last = (last or now) if idle else None
        if last is not None and now - last > 0.1:
            return last - first
        stack.procs.check()
        time.sleep(0.005)
    raise BenchError(f"the queue was not drained within {deadline:g} s")


def create(stack: Stack, token: str, body: dict) -> str:
    return expect(stack.port, "POST", "/api/tasks/", 201, token, body)["id"]


def submit(stack: Stack, token: str, bodies: list[dict], threads: int = 8) -> list[str]:
    """Create the tasks through the API from ``threads`` connections at once."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda body: create(stack, token, body), bodies))


@dataclass
class Drained:
    rate: float  # tasks/s from the first message taken to the last done
    cpu: str  # what each process spent per task meanwhile


def drained(stack: Stack, app: str, queue: str, env: dict[str, str], deadline: float) -> Drained:
    """Start one worker of ``app`` on ``queue`` and time how it drains what waits there."""
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    keys, total = queued(broker, queue)
    cpu: dict[str, dict[str, float]] = {}
    stack.procs.start("worker", worker(queue, queue, app=app), env)
    try:
        window = broker_window(
            broker, keys, total, stack, deadline, lambda: cpu.update(before=stack.cpu("worker"))
        )
        after = stack.cpu("worker")
    finally:
        stack.procs.stop("worker")
    return Drained(total / window, cpu_per(cpu["before"], after, total, "task"))


def drain_ours(stack: Stack, config: Config, turn: int) -> tuple[float, Drained, dict[str, int]]:
    """Returns tasks/s from the rows, the broker's view, and the status counts."""
    account = register(stack.port, f"drain{turn}")
    submit(stack, account.token, [SUM] * config.drain)
    wait_queued(stack.broker, "tasks", config.drain)
    ours = drained(stack, "backend", "tasks", stack.env, config.deadline)
    done, first, last = stack.sql(
        "SELECT count(*) FILTER (WHERE status = 'completed'), min(started_at), max(completed_at)"
        " FROM tasks_task WHERE owner_id = %s",
        (account.id,),
    )[0]
    if not done:
        raise BenchError(f"no task completed: {describe(status_counts(stack, account.id))}")
    rows_rate = done / (last - first).total_seconds()
    return rows_rate, ours, status_counts(stack, account.id)


# Every setting of the product's Celery app that shapes how a worker takes, runs and
# acknowledges messages, where it differs from Celery's default: the bare app gets the same.
WORKER_SETTINGS = r"""
import json

from celery.app.defaults import DEFAULTS

from backend.celery import app

SHAPING = ("worker_", "task_acks", "task_reject", "task_serializer", "accept_content",
           "broker_transport_options", "broker_pool_limit", "broker_heartbeat",
           "broker_connection", "task_ignore_result")
conf = app.conf
names = [n for n in DEFAULTS if n.startswith(SHAPING) and conf.get(n, DEFAULTS[n]) != DEFAULTS[n]]
print(json.dumps({n: conf[n] for n in names}, default=list))
"""


def drain_bare(stack: Stack, config: Config, settings: str) -> Drained:
    """tasks/s of the bare no-op app draining as many messages on the same Redis."""
    env = {
        **stack.env,
        "CELERY_BROKER_URL": stack.servers.redis_url(BARE_DB),
        "BARE_CELERY_SETTINGS": settings,
        "PYTHONPATH": str(HERE),
    }
    publish = [str(BIN / "python"), str(HERE / "bare_celery.py"), "publish", str(config.drain)]
    subprocess.run(publish, cwd=ROOT, env=env, check=True, timeout=300)
    broker = redis.Redis(port=stack.servers.redis_port, db=BARE_DB)
    wait_queued(broker, "bare", config.drain)
    return drained(stack, "bare_celery", "bare", env, config.deadline)


def emulated_acks(settings: str) -> str:
    """The product's worker settings with kombu's default acknowledgements on Redis (emulated,
    in a hash and a sorted set) instead of the product's in-memory ones."""
    shaped = json.loads(settings)
    options = {**shaped.get("broker_transport_options", {})}
    options.pop("ack_emulation", None)
    return json.dumps({**shaped, "broker_transport_options": options})


def part_drain(stack: Stack, config: Config) -> list[Row]:
    """Ours, then the bare app three times (the product's settings, the same with kombu's
    default acknowledgements, then Celery's defaults with the same worker flags), in turn, ``rounds`` times (as the reference runs are): the
    medians, and the ratios of the medians."""
    settings = stack.django(WORKER_SETTINGS).strip()
    variants = {  # name: (title, settings)
        "same": ("same broker, worker flags and settings", settings),
        "emulated": (
            "the same with kombu's default (emulated) acknowledgements on Redis",
            emulated_acks(settings),
        ),
        "defaults": ("Celery's and kombu's default settings, the same worker flags", "{}"),
    }
    rounds = []
    with stack.paused("short", "long"):
        for turn in range(config.drain_rounds):
            rows_rate, ours, counts = drain_ours(stack, config, turn)
            bares = {
                name: drain_bare(stack, config, shaped) for name, (_, shaped) in variants.items()
            }
            rounds.append((rows_rate, ours, counts, bares))
    rows_rate, ours, counts, _ = median_run(rounds, lambda run: run[1].rate)
    ours_rates = ", ".join(f"{run[1].rate:,.0f}" for run in rounds)
    flags = f"1 worker, prefork --concurrency={WORKER_CONCURRENCY}"
    rows = [
        Row(
            f"Drain of {config.drain:,} queued `sum` tasks ({flags}, -Q tasks)",
            f"{rows_rate:,.0f} tasks/s",
            details=f"first started_at → last completed_at; {describe(counts)}; "
            f"first message taken → last done: {ours.rate:,.0f} tasks/s "
            f"(median of {ours_rates}); {ours.cpu}",
        ),
    ]
    for name, (title, shaped) in variants.items():
        bare = median_run([run[3][name] for run in rounds], lambda run: run.rate)
        bare_rates = ", ".join(f"{run[3][name].rate:,.0f}" for run in rounds)
        each = ", ".join(f"{run[1].rate / run[3][name].rate:.2f}" for run in rounds)
        rows += [
            Row(
                f"Bare Celery no-op app, {config.drain:,} messages, {title}",
                f"{bare.rate:,.0f} tasks/s",
                details=f"first message taken → last done (median of {bare_rates}); "
                f"{bare.cpu}; settings {shaped}",
            ),
            Row(
                f"Drain ratio, ours / bare ({title})",
                f"{ours.rate / bare.rate:.2f}x",
                details="the broker window of both, of the medians; "
                f"round by round: {each}; from our rows: {rows_rate / bare.rate:.2f}x",
            ),
        ]
    return rows


# --- expiry --------------------------------------------------------------------------------
# The service itself is timed, in a process already started and connected: its statements,
# and the delivery messages of the notifications it wrote, which it sends after commit.
TIME_EXPIRY = r"""
import json
import time

from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.tasks import queue, services

sending = {"messages": 0, "seconds": 0.0}
send_messages = queue.send_messages


def timed_send(name, arguments, **options):
    began = time.perf_counter()
    sent = send_messages(name, arguments, **options)
    sending["messages"] += sent
    sending["seconds"] += time.perf_counter() - began
    return sent


queue.send_messages = timed_send
connection.ensure_connection()
with CaptureQueriesContext(connection) as queries:
    began = time.perf_counter()
    rows = services.tasks_expire()
    seconds = time.perf_counter() - began
statements = [q["sql"].split(None, 1)[0].upper() for q in queries.captured_queries]
in_statements = sum(float(q["time"]) for q in queries.captured_queries)
print(json.dumps({"rows": rows, "seconds": seconds, "statements": statements,
                  "in_statements": in_statements, "sending": sending}))
"""
DELIVERY_QUEUE = "long"  # backend.notifications.services.DELIVERY_QUEUE


def expiry_row(stack: Stack, name: str, owners: list[Account], count: int) -> Row:
    """``count`` overdue tasks shared among ``owners``, then one ``tasks_expire()``."""
    for account in owners:
        insert_tasks(stack, account, count // len(owners), "overdue")
    timed = json.loads(stack.django(TIME_EXPIRY))
    counts: dict[str, int] = {}
    for account in owners:
        for status, n in status_counts(stack, account.id).items():
            counts[status] = counts.get(status, 0) + n
    written = stack.sql(
        "SELECT count(*) FROM notifications_notification WHERE user_id = ANY(%s::uuid[])",
        ([account.id for account in owners],),
    )[0][0]
    statements, sending = timed["statements"], timed["sending"]
    summary = ", ".join(f"{statements.count(s)} {s}" for s in dict.fromkeys(statements))
    return Row(
        name,
        f"{timed['seconds']:.2f} s",
        # The statements of the calling connection: a split expiry's other part runs on a
        # connection of its own, and is in the time but not in this list.
        details=f"returned {timed['rows']}; {len(statements)} statement(s) on the calling "
        f"connection: {summary}, "
        f"{timed['in_statements']:.2f} s; {written:,} notification(s) written, "
        f"{sending['messages']:,} delivery message(s) sent after commit in "
        f"{sending['seconds']:.2f} s; "
        f"the rows now: {describe(counts)}",
    )


def part_expiry(stack: Stack, config: Config) -> list[Row]:
    # Beat and the workers stopped: nothing else expires, claims or rescues these rows.
    with stack.paused("beat", "short", "long"):
        quiet = register(stack.port, "expiry")  # no address: nothing to notify
        rows = [
            expiry_row(
                stack,
                f"Expiry of {config.expiry:,} overdue active tasks (`tasks_expire()`)",
                [quiet],
                config.expiry,
            )
        ]
        # The same, half of the tasks owned by a user with an address, mailed task.failed
        # (the default): the sweep writes their notifications in its transaction (outbox)
        # and sends them after commit.
        mailed, other = register(stack.port, "expiry_mailed"), register(stack.port, "expiry")
        body = {"email": f"{mailed.username}@example.com"}
        expect(stack.port, "PATCH", "/api/users/me/", 200, mailed.token, body)
        rows.append(
            expiry_row(
                stack,
                f"Expiry of {config.expiry:,} overdue active tasks, half of them of an owner "
                "mailed on task.failed",
                [mailed, other],
                config.expiry,
            )
        )
        # Those deliveries are not part of what is measured next: none left to the workers.
        stack.sql("DELETE FROM notifications_notification WHERE user_id = %s", (mailed.id,))
        for key in queue_keys(stack.broker, DELIVERY_QUEUE):
            stack.broker.delete(key)
    return rows


# --- head-of-line --------------------------------------------------------------------------
def finished_at(stack: Stack, task_id: str) -> tuple | None:
    row = stack.sql(
        "SELECT status, created_at, started_at, completed_at FROM tasks_task WHERE id = %s",
        (task_id,),
    )[0]
    return row if row[0] not in ACTIVE else None


def hol_countdowns(stack: Stack, config: Config) -> Row:
    """A sum created while two countdowns hold the long-queue worker's two slots."""
    account = register(stack.port, "hol")
    countdown = {"task_type": "countdown", "input_data": {"seconds": config.countdown}}
    ids = submit(stack, account.token, [countdown] * 2)
    running = "SELECT count(*) FROM tasks_task WHERE id = ANY(%s) AND status = 'running'"
    wait_for(lambda: stack.sql(running, (ids,))[0][0] == 2, 60, "both countdowns to run")
    task_id = create(stack, account.token, SUM)
    deadline = config.countdown + config.deadline
    status, created, _, completed = wait_for(
        lambda: finished_at(stack, task_id), deadline, "the sum"
    )
    still = stack.sql(running, (ids,))[0][0]
    for countdown_id in ids:  # free the long worker (409 when a countdown already ended)
        api(stack.port, "POST", f"/api/tasks/{countdown_id}/cancel/", account.token)
    return Row(
        f"Head-of-line: a `sum` created while two {config.countdown} s countdowns run",
        f"{(completed - created).total_seconds():.3f} s",
        details=f"created_at → completed_at; {status}; countdowns still running then: {still}",
    )


def hol_priority(stack: Stack, config: Config) -> Row:
    """``low`` tasks sent while the short-queue worker is busy with a backlog of ``normal``
    ones, then one ``urgent``: how many ``low`` ones started before it. The worker is busy
    for real: it drains a backlog queued while it was stopped, and the ``low`` and
    ``urgent`` ones are sent once it has started on it."""
    holder, account = register(stack.port, "holder"), register(stack.port, "priority")
    low, urgent = {**SUM, "priority": "low"}, {**SUM, "priority": "urgent"}
    with stack.paused("short"):
        backlog = submit(stack, holder.token, [SUM] * config.backlog)
        wait_queued(stack.broker, "tasks", config.backlog)
        stack.start("short")
        begun = "SELECT count(*) FROM tasks_task WHERE owner_id = %s AND started_at IS NOT NULL"
        wait_for(lambda: stack.sql(begun, (holder.id,))[0][0] > 0, 60, "the backlog to start")
        lows = [create(stack, account.token, low) for _ in range(config.low)]
        last = create(stack, account.token, urgent)
    counts = wait_settled(stack, account.id, config.low + 1, config.deadline)
    wait_settled(stack, holder.id, len(backlog), config.deadline)
    query = "SELECT id::text, started_at FROM tasks_task WHERE owner_id = %s"
    started = dict(stack.sql(query, (account.id,)))
    if any(started[i] is None for i in [*lows, last]):
        raise BenchError(f"some of the tasks never started: {describe(counts)}")
    behind = stack.sql(
        "SELECT count(*) FROM tasks_task WHERE owner_id = %s AND started_at > %s",
        (holder.id, started[last]),
    )[0][0]
    if not behind:
        raise BenchError("the backlog was drained before the urgent task was sent")
    before = sum(started[i] < started[last] for i in lows)
    return Row(
        f"Priority: {config.low} `low` sent while a worker drains a backlog, then 1 `urgent`",
        f"{before} of {config.low} low started before it",
        details=(
            f"from started_at; {describe(counts)}; {behind:,} of the {config.backlog:,}"
            " `normal` backlog started after the urgent one"
        ),
    )


def part_hol(stack: Stack, config: Config) -> list[Row]:
    return [hol_countdowns(stack, config), hol_priority(stack, config)]


# --- the product before the speed work ----------------------------------------------------
# The product as it was when its speed targets were set (BEFORE_COMMIT), taken from the git
# history into the temporary folder and run on the same servers (a database and a Redis
# number of its own), with the same gunicorn and worker flags and this run's interpreter and
# libraries. The machine's pace moves by a quarter between hours, so a figure taken then
# compares with one taken now only through a version measured at both times. When the
# targets were set, this version created BEFORE_THEN["create"] tasks/s against the best
# comparable service's BEFORE_THEN["best create"], and expired 100,000 overdue tasks in
# BEFORE_THEN["expiry"] s: the ratios measured here carry those figures over to this run.
BEFORE_COMMIT = "21add1bd414f180b3f7156c9c8daa88d5e42b391"
BEFORE_DATABASE = "before"
BEFORE_REDIS_DB = 4
BEFORE = ("before-web", "before-worker")
BEFORE_THEN = {"create": 210.0, "best create": 289.0, "expiry": 2.11}
BEFORE_USER = r"""
import sys

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

user = get_user_model().objects.create_user(
    username=sys.argv[1], email=f"{sys.argv[1]}@example.com", password="bench-Password-1"
)
print(user.pk, AccessToken.for_user(user))
"""
# The same timing for both versions (the older one's queue module has no send_messages).
TIME_EXPIRY_ALONE = r"""
import json
import time

from django.db import connection

from backend.tasks import services

connection.ensure_connection()
began = time.perf_counter()
rows = services.tasks_expire()
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - began}))
"""


class Skipped(Exception):
    """A part that cannot run here (not a failure of the service): reported, not failed."""


@dataclass
class Before:
    folder: Path  # its code
    env: dict[str, str]

    def django(self, stack: Stack, script: str, *args: str) -> str:
        return stack.django(script, *args, env=self.env, cwd=self.folder)

    def sql(self, stack: Stack, query: str) -> list[tuple]:
        with psycopg.connect(stack.servers.dsn_of(BEFORE_DATABASE), autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []


def before_setup(stack: Stack) -> Before:
    """The older version's code (from git), its migrated database and environment."""
    folder = stack.folder / "before"
    folder.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE_COMMIT],
            capture_output=True,
            timeout=120,
        )
    except FileNotFoundError as exc:
        raise Skipped(f"git is not installed: {exc}") from exc
    if archive.returncode:
        raise Skipped(
            f"commit {BEFORE_COMMIT[:7]} is not in this clone's history (a shallow clone?): "
            f"{archive.stderr.decode(errors='replace').strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    env = stack.env | {
        "DATABASE_URL": stack.servers.database_url(BEFORE_DATABASE),
        "CELERY_BROKER_URL": stack.servers.redis_url(BEFORE_REDIS_DB),
        "CACHE_URL": f"rediscache://127.0.0.1:{stack.servers.redis_port}/{BEFORE_REDIS_DB + 1}",
        "PYTHONPATH": str(folder),
    }
    stack.sql(f"DROP DATABASE IF EXISTS {BEFORE_DATABASE}")
    stack.sql(f"CREATE DATABASE {BEFORE_DATABASE}")
    migrate = [str(BIN / "python"), "manage.py", "migrate", "--noinput"]
    done = subprocess.run(migrate, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise BenchError(f"migrating {BEFORE_COMMIT[:7]} failed:\n{done.stderr[-2000:]}")
    return Before(folder, env)


def before_active(stack: Stack, before: Before) -> int:
    query = "SELECT count(*) FROM tasks_task WHERE status IN ('pending', 'running')"
    return before.sql(stack, query)[0][0]


def before_creates(stack: Stack, config: Config, before: Before, token: str, workers: bool):
    """wrk's creates on the older version, with its short-queue worker when ``workers``
    (which then runs every task before the version stops)."""
    commands = {"before-worker": worker("tasks,maintenance", "before")} if workers else {}
    label = f"the product at {BEFORE_COMMIT[:7]}"
    web = ("before-web", "backend.wsgi:application")
    with other_service(stack, label, web, commands, before.env, token, before.folder) as base:
        url = base + "/api/tasks/"
        run_wrk(stack.folder, url, token, config.warm, SUM)
        names = BEFORE if workers else BEFORE[:1]
        began = stack.cpu(*names)
        result = run_wrk(stack.folder, url, token, config.seconds, SUM)
        cpu = cpu_per(began, stack.cpu(*names), max(result.requests, 1), "request")
        if workers:
            wait_for(lambda: not before_active(stack, before), 300, "its tasks", 0.25)
    return result, cpu


def before_drain(stack: Stack, before: Before) -> None:
    """The older version's worker runs what its web queued with the workers stopped."""
    argv = worker("tasks,maintenance", "before")
    stack.procs.start("before-worker", argv, before.env, cwd=before.folder)
    try:
        wait_for(lambda: not before_active(stack, before), 300, "its queued tasks", 0.25)
    finally:
        stack.procs.stop("before-worker")


def expiry_seconds(stack: Stack, count: int, before: Before | None, owner: str) -> float:
    """``count`` overdue tasks of ``owner`` inserted, then one timed ``tasks_expire()``, on
    the product (``before`` None, its workers and beat stopped) or on the older version."""
    if before is None:
        with stack.paused("beat", "short", "long"):
            stack.django(INSERT_TASKS, owner, str(count), "overdue")
            stack.sql("VACUUM ANALYZE tasks_task")
            timed = json.loads(stack.django(TIME_EXPIRY_ALONE))
    else:
        before.django(stack, INSERT_TASKS, owner, str(count), "overdue")
        before.sql(stack, "VACUUM ANALYZE tasks_task")
        timed = json.loads(before.django(stack, TIME_EXPIRY_ALONE))
    if timed["rows"] != count:
        raise BenchError(f"the expiry changed {timed['rows']} tasks, expected {count}")
    return timed["seconds"]


def part_before(stack: Stack, config: Config) -> list[Row]:
    """Creates (workers running, then stopped) and the expiry on the product and on the
    version of BEFORE_COMMIT, in turn, ``rounds`` times: medians, ratios, and what they make
    of the figures measured when the targets were set."""
    before = before_setup(stack)
    user, token = before.django(stack, BEFORE_USER, "before").split()
    ours, ours_alone = register(stack.port, "before-ours"), register(stack.port, "before-alone")
    expiring = register(stack.port, "before-expiry")
    keys = ("running", "stopped")
    runs: dict[str, dict[str, list]] = {key: {"ours": [], "before": []} for key in keys}
    expiry: dict[str, list[float]] = {"ours": [], "before": []}
    total = 0
    for _ in range(config.rounds):
        result, cpu = wrk(stack, config, "/api/tasks/", ours.token, SUM)
        runs["running"]["ours"].append((result, cpu))
        total += result.requests - result.non2xx
        wait_settled(stack, ours.id, total, config.deadline)
        with stack.paused("beat", "short", "long"):
            result, cpu = wrk(stack, config, "/api/tasks/", ours_alone.token, SUM, ("web",))
        runs["stopped"]["ours"].append((result, cpu))
        wait_settled(stack, ours_alone.id, 1, config.deadline)
        runs["running"]["before"].append(before_creates(stack, config, before, token, True))
        runs["stopped"]["before"].append(before_creates(stack, config, before, token, False))
        before_drain(stack, before)
        expiry["ours"].append(expiry_seconds(stack, config.expiry, None, expiring.id))
        expiry["before"].append(expiry_seconds(stack, config.expiry, before, user))
    rows = []
    then = BEFORE_THEN["create"] / BEFORE_THEN["best create"]
    for key in keys:
        labels = {"before": f"At {BEFORE_COMMIT[:7]}", "ours": "This service"}
        side_rows, ratio, each = wrk_in_turn(runs[key], labels, f"POST /api/tasks/ (workers {key})")
        rows += side_rows
        rows.append(
            Row(
                f"Ratio, this service / {BEFORE_COMMIT[:7]}: create, workers {key}",
                f"{ratio:.2f}x",
                details=f"of the medians; round by round: {each}. Against the best comparable "
                f"service, measured at {BEFORE_THEN['best create']:.0f} req/s when "
                f"{BEFORE_COMMIT[:7]} made {BEFORE_THEN['create']:.0f}: "
                f"{ratio:.2f} x {then:.3f} = **{ratio * then:.2f}x**",
            )
        )
    medians = {side: sorted(times)[len(times) // 2] for side, times in expiry.items()}
    for side, label in (("before", f"At {BEFORE_COMMIT[:7]}"), ("ours", "This service")):
        each = ", ".join(f"{t:.2f}" for t in expiry[side])
        rows.append(
            Row(
                f"{label}: expiry of {config.expiry:,} overdue active tasks",
                f"{medians[side]:.2f} s",
                details=f"median of {each} s",
            )
        )
    ratio = medians["before"] / medians["ours"]
    each = ", ".join(f"{b / o:.2f}" for o, b in zip(expiry["ours"], expiry["before"], strict=True))
    then = f"at the pace of the machine when {BEFORE_COMMIT[:7]} took {BEFORE_THEN['expiry']} s"
    then = (
        f"{then}: **{BEFORE_THEN['expiry'] / ratio:.2f} s**"
        if config.expiry == 100_000
        else f"{then} for 100,000: only at that count"
    )
    rows.append(
        Row(
            f"Ratio, {BEFORE_COMMIT[:7]} / this service: expiry time",
            f"{ratio:.2f}x",
            details=f"of the medians; round by round: {each}; {then}",
        )
    )
    return rows


# --- the run -------------------------------------------------------------------------------
MEASURE: dict[str, Callable[[Stack, Config], list[Row]]] = {
    "create": part_create,
    "list": part_list,
    "reference": part_reference,
    "drain": part_drain,
    "expiry": part_expiry,
    "hol": part_hol,
    "before": part_before,
}


def warm_up(stack: Stack, config: Config) -> None:
    """One task through the whole pipeline: the short worker consumes before we measure."""
    account = register(stack.port, "warmup")
    submit(stack, account.token, [SUM])
    wait_settled(stack, account.id, 1, config.deadline)


def failure(part: str, exc: Exception) -> Row:
    """The row of a part that failed: the last line of the message (a traceback's error)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return Row(f"{part}: FAILED", "—", details=lines[-1][:500])


def measure(config: Config) -> tuple[list[Row], dict[str, str], bool]:
    """Run the parts; a part that fails is reported as such and the next one runs."""
    rows, failed = [], False
    with running_stack(config.port) as stack:
        print(f"stack up on {stack.base} (temp folder {stack.folder})", flush=True)
        warm_up(stack, config)
        for part in PARTS if config.only is None else (config.only,):
            began = time.perf_counter()
            try:
                rows += MEASURE[part](stack, config)
            except Skipped as exc:
                rows.append(Row(f"{part}: skipped", "—", details=str(exc)[:500]))
            except (BenchError, subprocess.SubprocessError) as exc:
                failed = True
                rows.append(failure(part, exc))
                print(stack.procs.log_tails(), file=sys.stderr)
            print(f"{part} done in {time.perf_counter() - began:.0f} s", flush=True)
        tools = {
            "PostgreSQL": version([str(stack.servers.pg / "postgres"), "--version"]),
            "Redis": version(["redis-server", "--version"]),
            "wrk": version(["wrk", "-v"]),
        }
    return rows, tools, failed


def table(rows: list[Row]) -> str:
    lines = ["| Measurement | result | p50 | p99 | details |", "|---|--:|--:|--:|---|"]
    lines += [f"| {r.name} | {r.result} | {r.p50} | {r.p99} | {r.details} |" for r in rows]
    return "\n".join(lines)


def loads(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def report(rows: list[Row], config: Config, tools: dict[str, str], run: dict) -> str:
    quick = " --quick" if config.quick else ""
    return f"""# Benchmark results: the production stack (PostgreSQL + Redis)

Generated by `.venv/bin/python bench/production.py{quick}` ({run["seconds"]:.0f} s in total) on
{datetime.now(UTC):%Y-%m-%d %H:%M UTC}. The embedded default is measured by `bench/run.py`
(`bench/RESULTS.md`); `make bench` runs both.

## Machine

- CPUs (`nproc`): {len(os.sched_getaffinity(0))} ({cpu_model()})
- Python {platform.python_version()} (`{Path(sys.executable).resolve()}`); {platform.platform()}
- {tools["PostgreSQL"]}; {tools["Redis"]}; {tools["wrk"]}
- Load average (1 / 5 / 15 min): {loads(run["load_before"])} before, {loads(run["load_after"])} after

## Configuration

- PostgreSQL with its default settings (fsync on) and Redis (no persistence), on free loopback
  ports, in a fresh temporary folder; `DEBUG=false`, `LOG_LEVEL=WARNING`, settings from the
  environment (`DATABASE_URL`, `CELERY_BROKER_URL`, `CACHE_URL=rediscache://`).
- Web: gunicorn, {WEB_WORKERS} sync workers. Celery: a worker for the short queues
  (`-Q tasks,maintenance --concurrency={WORKER_CONCURRENCY}`), one for the long queue
  (`-Q long --concurrency={WORKER_CONCURRENCY}`), beat with the database scheduler.
- `MAX_ACTIVE_TASKS` and `THROTTLE_AUTH_RATE` raised so the load is never refused.
- wrk with {WRK_CONNECTIONS} connections (2 threads) for {config.seconds:g} s after a
  {config.warm:g} s warm-up run that is not counted, on the same machine.

## What is measured

- Create: wrk `POST /api/tasks/` (a `sum` of 5 numbers, JWT bearer) while the workers run the
  tasks, as a deployment does; then the time the workers needed to finish them. Then the same
  load with the workers and beat stopped, as when they run on other machines: the web tier
  alone on the two cores (the tasks wait on the queue and are drained afterwards).
- List: wrk `GET {LIST_PATH}` for a user with {config.list_small:,} tasks and one with
  {config.list_big:,}, while a third user holds {config.list_big:,} (completed `sum` rows
  inserted in batches, then `VACUUM ANALYZE` as autovacuum would).
- Reference: a plain DRF + Celery task service (`bench/reference/`: a `ModelViewSet` with a
  `ModelSerializer`, simplejwt, DRF pagination and django-filter, the active-task count
  checked before the INSERT, `delay()` on commit, a worker that reads the task and saves it
  twice) on the same PostgreSQL server and Redis, with the same gunicorn and worker flags,
  the product's processes stopped meanwhile. The same create and list runs on this service
  and on the reference in turn, {config.rounds} time(s) each (the machine's speed moves
  from minute to minute; taking turns shares that out): the medians and their ratio.
- Drain: {config.drain:,} `sum` tasks created through the API while the workers are stopped,
  then one worker (`-Q tasks`, prefork, `--concurrency={WORKER_CONCURRENCY}`) drains them:
  tasks/s from the first `started_at` to the last `completed_at`, and from the first message
  taken off the queue to the last one done (Redis polled every 5 ms; without emulated
  acknowledgements the few a worker still holds at the end, at most prefetch x
  concurrency, are not waited for). Then the bare Celery no-op app (`bench/bare_celery.py`)
  drains as many messages on the same Redis server with the same worker flags and the
  product's worker settings (acks late, prefetch multiplier, serializer, transport options):
  tasks/s over the same broker window; then once more with kombu's default acknowledgements
  on Redis (emulated in a hash and a sorted set, as before the product turned them off);
  then with Celery's and kombu's default settings and only the worker flags the same.
  Ours and the bare app in turn, {config.drain_rounds} time(s) each: the medians; each ratio
  compares the broker windows.
- Expiry: {config.expiry:,} overdue active tasks (half pending, half running) inserted with
  beat and the workers stopped, then one call of `tasks_expire()` timed inside a process
  already connected, with the statements it ran. Then again with half of the tasks owned by
  a user who has an address and is mailed `task.failed` (the default): the notifications the
  sweep writes in its transaction, and the delivery messages it sends after commit (timed
  apart; removed afterwards, not delivered).
- Head-of-line: two {config.countdown} s countdowns running on the long-queue worker, then a
  `sum` is created: its `created_at` → `completed_at`. And {config.backlog:,} `normal` `sum`
  tasks queued while the short-queue worker is stopped; once it has started on them,
  {config.low} `low` ones created, then one `urgent`: how many of the `low` ones started
  before the `urgent` one (and how much of the backlog after it).
- Before: the product as it was when its speed targets were set (commit
  `{BEFORE_COMMIT[:7]}`, from the git history), on the same servers (a database and Redis
  number of its own) with the same gunicorn and worker flags, the product's processes stopped
  meanwhile. Creates with its short-queue worker running and stopped, and the expiry of
  {config.expiry:,} overdue tasks, on this service and on that version in turn,
  {config.rounds} time(s) each: medians and ratios. The machine's pace moves from hour to
  hour, so the figures measured when the targets were set (that version: {BEFORE_THEN["create"]:.0f}
  creates/s against the best comparable service's {BEFORE_THEN["best create"]:.0f}, and
  {BEFORE_THEN["expiry"]} s for 100,000 expiries) are carried over to this run through the
  ratios: an estimate that holds as far as both services slow down or speed up alike.
- CPU: around each measured wrk run and each drain, the CPU time used by every process group
  of the stack (from `/proc`, children included), per request or per task. The machine may
  be shared: rates move with whatever else runs (see the load average), the CPU time a
  request or a task costs much less.

## Results

{table(rows)}

Benchmarks report numbers; nothing here is asserted.
"""


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, a smoke run")
    parser.add_argument("--port", type=int, help="the web port (default: a free one)")
    parser.add_argument("--only", choices=PARTS, help="run one part; the results file stays")
    parser.add_argument("--deadline", type=float, default=300, help="longest wait, seconds")
    args = parser.parse_args(argv)
    quick = args.quick
    return Config(
        quick=quick,
        port=args.port,
        only=args.only,
        seconds=3 if quick else 10,
        warm=1 if quick else 2,
        list_small=1_000 if not quick else 100,
        list_big=100_000 if not quick else 5_000,
        drain=2_000 if not quick else 300,
        expiry=100_000 if not quick else 5_000,
        countdown=60 if not quick else 10,
        low=50,
        backlog=4_000 if not quick else 1_000,
        deadline=args.deadline,
        rounds=1 if quick else 3,
        drain_rounds=1 if quick else 5,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so everything started is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = {"load_before": os.getloadavg()}
    began = time.perf_counter()
    try:
        rows, tools, failed = measure(config)
    except (BenchError, subprocess.SubprocessError, psycopg.Error, redis.RedisError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    run.update(seconds=time.perf_counter() - began, load_after=os.getloadavg())
    print()
    print(table(rows))
    print(f"\ntotal runtime {run['seconds']:.1f} s; load average {loads(run['load_after'])}")
    if not config.only:
        RESULTS.write_text(report(rows, config, tools, run))
        print(f"written {RESULTS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
