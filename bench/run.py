"""Benchmark the real stack on the embedded default (SQLite WAL + filesystem broker).

Starts gunicorn, a Celery worker and beat in a fresh temporary folder, measures API latency,
end-to-end task throughput, list latency and countdown overhead over HTTP, then files (upload
throughput and the cost of hashing, ``data_processing`` of 10 and 100 MB CSVs, a 100,000-task
export), prints a table and writes ``bench/RESULTS.md``. It reports numbers; it asserts no speed. Exit code 1 when the
stack does not start or the tasks do not finish before the deadline.

Usage (from the repository root): ``.venv/bin/python bench/run.py [--quick] [--only tasks|files]``
(``--only`` runs one part and prints it, leaving ``bench/RESULTS.md`` alone).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stack import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
GUNICORN_WORKERS = 2
CELERY_CONCURRENCY = 2
MAX_ACTIVE_TASKS = 1000
TERMINAL = "completed,failed,cancelled"


class BenchError(Exception):
    """The stack failed to start, or the tasks did not finish in time."""


@dataclass
class Config:
    requests: int
    e2e_tasks: int
    list_requests: int
    submit_threads: int
    deadline: float
    quick: bool
    only: str | None = None


@dataclass
class Row:
    name: str
    n: int
    median: str
    p95: str
    maximum: str
    throughput: str = ""


@dataclass
class Stack:
    folder: Path
    port: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- statistics ------------------------------------------------------------------------------
def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def ms_row(name: str, seconds: list[float], elapsed: float | None = None) -> Row:
    """A row of latencies in milliseconds; throughput from the phase's wall time."""
    values = [s * 1000 for s in seconds]
    rate = f"{len(values) / elapsed:.1f} req/s" if elapsed else ""
    return Row(
        name,
        len(values),
        f"{statistics.median(values):.1f} ms",
        f"{percentile(values, 95):.1f} ms",
        f"{max(values):.1f} ms",
        rate,
    )


def s_row(name: str, seconds: list[float], throughput: str = "") -> Row:
    """A row of durations in seconds."""
    return Row(
        name,
        len(seconds),
        f"{statistics.median(seconds):.3f} s",
        f"{percentile(seconds, 95):.3f} s",
        f"{max(seconds):.3f} s",
        throughput,
    )


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def between(task: dict[str, Any], first: str, last: str) -> float:
    """Seconds from one timestamp of a task to another."""
    return (parse_time(task[last]) - parse_time(task[first])).total_seconds()


# --- HTTP ------------------------------------------------------------------------------------
class Client:
    """One HTTP/1.1 connection (reopened by http.client when the server closes it)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return response.status, json.loads(raw) if raw else None

    def expect(self, method: str, path: str, status: int, body: Any = None) -> Any:
        code, data = self.call(method, path, body)
        if code != status:
            raise BenchError(f"{method} {path}: expected {status}, got {code}: {data}")
        return data

    def timed(self, method: str, path: str, status: int, body: Any = None) -> tuple[float, Any]:
        start = time.perf_counter()
        data = self.expect(method, path, status, body)
        return time.perf_counter() - start, data

    def close(self) -> None:
        self.conn.close()


def register(port: int, label: str) -> str:
    """A new user; returns its bearer token."""
    name = f"bench_{label}_{secrets.token_hex(4)}"
    password = f"Bench-{secrets.token_urlsafe(16)}!9"
    client = Client(port)
    try:
        data = client.expect(
            "POST", "/api/register/", 201, {"username": name, "password": password}
        )
    finally:
        client.close()
    return data["access"]


def sum_task(count: int) -> dict[str, Any]:
    return {"task_type": "sum", "input_data": {"numbers": list(range(1, count + 1))}}


def wait_for(check: Callable[[], bool], deadline: float, what: str, interval: float) -> None:
    """Call ``check`` until it returns True; BenchError once ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise BenchError(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(interval)


def wait_task(client: Client, task_id: str, deadline: float) -> dict[str, Any]:
    """Poll one task until it reaches a terminal status; it must be completed."""
    task: dict[str, Any] = {}

    def done() -> bool:
        task.update(client.expect("GET", f"/api/tasks/{task_id}/", 200))
        return task["status"] in TERMINAL.split(",")

    wait_for(done, deadline, f"task {task_id}", 0.1)
    if task["status"] != "completed":
        raise BenchError(f"task {task_id} ended {task['status']}: {task.get('error')}")
    return task


# --- the stack -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("BROKER_FOLDER", "CACHE_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    env.update(
        VAR_DIR=str(folder),
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
        ALLOWED_HOSTS="127.0.0.1",
        THROTTLE_AUTH_RATE="10000/min",
        MAX_ACTIVE_TASKS=str(MAX_ACTIVE_TASKS),
        MAX_UPLOAD_SIZE=str(BENCH_MAX_UPLOAD),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def commands(port: int) -> dict[str, list[str]]:
    return {
        "web": [
            str(BIN / "gunicorn"),
            "backend.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(GUNICORN_WORKERS),
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "backend",
            "worker",
            "--loglevel=warning",
            "--queues=tasks,long,maintenance",
            f"--concurrency={CELERY_CONCURRENCY}",
        ],
        "beat": [str(BIN / "celery"), "-A", "backend", "beat", "--loglevel=warning"],
    }


def start(stack: Stack, env: dict[str, str]) -> None:
    migrate = subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if migrate.returncode:
        raise BenchError(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
    for name, argv in commands(stack.port).items():
        log = open(stack.folder / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        stack.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()


def check_alive(stack: Stack) -> None:
    for name, proc in stack.procs.items():
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}")


def healthy(stack: Stack) -> bool:
    check_alive(stack)
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    try:
        conn.request("GET", "/health/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(stack: Stack) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left."""
    for proc in stack.procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in stack.procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_tails(stack: Stack, lines: int = 20) -> str:
    parts = []
    for name in stack.procs:
        path = stack.folder / f"{name}.log"
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {name}.log ---\n" + "\n".join(tail))
    return "\n".join(parts)


@contextmanager
def running_stack(deadline: float) -> Iterator[Stack]:
    stack = Stack(Path(tempfile.mkdtemp(prefix="atm-bench-")), free_port())
    try:
        start(stack, stack_env(stack.folder))
        wait_for(lambda: healthy(stack), 60, "GET /health/ 200", 0.25)
        warm_up(stack.port, deadline)
        yield stack
    except BenchError:
        print(log_tails(stack), file=sys.stderr)
        raise
    finally:
        stop(stack)
        shutil.rmtree(stack.folder, ignore_errors=True)


def warm_up(port: int, deadline: float) -> None:
    """One task through the whole pipeline: the worker is consuming before we measure."""
    client = Client(port, register(port, "warmup"))
    task = client.expect("POST", "/api/tasks/", 201, sum_task(3))
    wait_task(client, task["id"], deadline)
    client.close()


# --- measurements ----------------------------------------------------------------------------
def api_latency(port: int, n: int, deadline: float) -> list[Row]:
    """N sequential creates spread over users, then a GET of each."""
    clients = [Client(port, register(port, f"api{i}")) for i in range(5)]
    created: list[tuple[Client, str]] = []
    posts: list[float] = []
    began = time.perf_counter()
    for i in range(n):
        client = clients[i % len(clients)]
        took, task = client.timed("POST", "/api/tasks/", 201, sum_task(10))
        posts.append(took)
        created.append((client, task["id"]))
    post_elapsed = time.perf_counter() - began
    gets: list[float] = []
    began = time.perf_counter()
    for client, task_id in created:
        gets.append(client.timed("GET", f"/api/tasks/{task_id}/", 200)[0])
    get_elapsed = time.perf_counter() - began
    for client in clients:  # let the worker drain, so the next phase starts from an empty queue
        wait_all_completed(client, sum(c is client for c, _ in created), deadline)
        client.close()
    return [
        ms_row("POST /api/tasks/ (sum, sequential)", posts, post_elapsed),
        ms_row("GET /api/tasks/{id}/ (sequential)", gets, get_elapsed),
    ]


def submit_all(port: int, token: str, m: int, threads: int) -> tuple[list[float], float]:
    """Submit M sum tasks of 1,000 numbers from ``threads`` connections at once."""
    body = sum_task(1000)
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def submit(_: int) -> float:
        if not hasattr(local, "client"):
            local.client = Client(port, token)
            with lock:
                clients.append(local.client)
        return local.client.timed("POST", "/api/tasks/", 201, body)[0]

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        latencies = list(pool.map(submit, range(m)))
    elapsed = time.perf_counter() - began
    for client in clients:
        client.close()
    return latencies, elapsed


def count(client: Client, status: str) -> int:
    return client.expect("GET", f"/api/tasks/?status={status}&page_size=1", 200)["count"]


def wait_all_completed(client: Client, m: int, deadline: float) -> None:
    polls = 0

    def done() -> bool:
        nonlocal polls
        polls += 1
        if polls % 20 == 0 and count(client, "failed,cancelled"):
            raise BenchError("some benchmark tasks failed or were cancelled")
        return count(client, "completed") >= m

    wait_for(done, deadline, f"{m} tasks to complete", 0.25)


def fetch_all(client: Client) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    page = 1
    while True:
        data = client.expect("GET", f"/api/tasks/?page_size=100&page={page}", 200)
        tasks.extend(data["results"])
        if not data["next"]:
            return tasks
        page += 1


def end_to_end(port: int, token: str, config: Config) -> list[Row]:
    """Submit M tasks as fast as possible, wait for all, derive rates from the timestamps."""
    first_submit = datetime.now(UTC)
    posts, submit_elapsed = submit_all(port, token, config.e2e_tasks, config.submit_threads)
    client = Client(port, token)
    wait_all_completed(client, config.e2e_tasks, config.deadline)
    tasks = fetch_all(client)
    client.close()
    last_done = max(parse_time(t["completed_at"]) for t in tasks)
    span = (last_done - first_submit).total_seconds()
    latencies = [between(t, "created_at", "completed_at") for t in tasks]
    runs = [between(t, "started_at", "completed_at") for t in tasks]
    return [
        ms_row(
            f"POST /api/tasks/ (sum of 1,000, {config.submit_threads} connections)",
            posts,
            submit_elapsed,
        ),
        s_row(
            "End-to-end: created_at → completed_at",
            latencies,
            f"{len(tasks) / span:.1f} tasks/s ({len(tasks)} in {span:.1f} s)",
        ),
        s_row("End-to-end: started_at → completed_at (in the worker)", runs),
    ]


def list_latency(port: int, token: str, n: int) -> list[Row]:
    client = Client(port, token)
    total = client.expect("GET", "/api/tasks/?page_size=1", 200)["count"]
    rows = []
    for size in (10, 100):
        timings = []
        began = time.perf_counter()
        for _ in range(n):
            timings.append(client.timed("GET", f"/api/tasks/?page_size={size}", 200)[0])
        elapsed = time.perf_counter() - began
        rows.append(ms_row(f"GET /api/tasks/?page_size={size} ({total} tasks)", timings, elapsed))
    client.close()
    return rows


def countdown(port: int, deadline: float) -> list[Row]:
    client = Client(port, register(port, "countdown"))
    body = {"task_type": "countdown", "input_data": {"seconds": 3}}
    task = client.expect("POST", "/api/tasks/", 201, body)
    task = wait_task(client, task["id"], deadline)
    client.close()
    queued = between(task, "created_at", "started_at")
    ran = between(task, "started_at", "completed_at")
    return [
        s_row("countdown 3 s: started_at → completed_at", [ran], f"overhead {ran - 3:+.3f} s"),
        s_row("countdown 3 s: created_at → started_at", [queued]),
    ]


# --- files -----------------------------------------------------------------------------------
MIB = 1024 * 1024
UPLOAD_MIB = 50
CSV_MIB = (10, 100)
EXPORT_TASKS = 100_000
# The benchmark's own upload limit, so the 100 MB CSV can be uploaded (default 50 MB).
BENCH_MAX_UPLOAD = 256 * MIB


def children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (gunicorn's workers, Celery's pool processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for process {pid}")


class PeakRss:
    """Peak RSS growth of some processes over a phase: RSS at the start, the kernel's
    high-water mark (VmHWM, reset through /proc/PID/clear_refs) at the end."""

    def __init__(self, pids: list[int]) -> None:
        self.start = {pid: memory_kb(pid, "VmRSS") for pid in pids}
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def growth_mb(self) -> float:
        return max(memory_kb(pid, "VmHWM") - rss for pid, rss in self.start.items()) / 1024


def multipart_file(
    folder: Path, name: str, write_content: Callable[[Any], None]
) -> tuple[Path, str, int]:
    """A multipart/form-data body on disk with one ``file`` part; ``(path, boundary,
    content size)``. Streamed to the server later, never loaded whole."""
    boundary = secrets.token_hex(16)
    path = folder / f"{name}.multipart"
    with path.open("wb") as out:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        )
        start = out.tell()
        write_content(out)
        size = out.tell() - start
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return path, boundary, size


def random_content(mib: int) -> Callable[[Any], None]:
    def write(out) -> None:
        for _ in range(mib):
            out.write(os.urandom(MIB))

    return write


def csv_content(mib: int) -> Callable[[Any], None]:
    """Sales-like rows: an integer id, a text name, a price with cents, a quantity, a
    category; a few empty quantities."""

    def write(out) -> None:
        categories = ("alpha", "beta", "gamma", "delta")
        target, written, i = mib * MIB, 0, 0
        out.write(b"id,customer,price,quantity,category\r\n")
        while written < target:
            lines = []
            for _ in range(10_000):
                i += 1
                quantity = "" if i % 50 == 0 else str((i * 7) % 500 - 50)
                lines.append(
                    f"{i},customer {i % 997},{(i * 37) % 100_000 / 100:.2f},"
                    f"{quantity},{categories[i % 4]}\r\n"
                )
            chunk = "".join(lines).encode()
            out.write(chunk)
            written += len(chunk)

    return write


def upload(port: int, token: str, body: Path, boundary: str) -> tuple[float, dict[str, Any]]:
    """POST /api/files/ streaming the body from disk; ``(seconds, file metadata)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(body.stat().st_size),
        "Accept": "application/json",
    }
    try:
        with body.open("rb") as stream:
            began = time.perf_counter()
            conn.request(
                "POST", "/api/files/", body=iter(lambda: stream.read(MIB), b""), headers=headers
            )
            response = conn.getresponse()
            raw = response.read()
            took = time.perf_counter() - began
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(
            f"upload of {body.name}: expected 201, got {response.status}: {raw[:300]!r}"
        )
    return took, json.loads(raw)


# Run in the stack's environment: the same multipart body parsed and stored with Django's
# stock temporary-file handler, then with the hashing handler, alternately.
HASHING_OVERHEAD = r"""
import json, sys, time
import django
django.setup()
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http.multipartparser import MultiPartParser
from backend.files.uploads import HashingUploadHandler

path, boundary, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "rb") as body:
    length = body.seek(0, 2)
meta = {"CONTENT_TYPE": "multipart/form-data; boundary=" + boundary, "CONTENT_LENGTH": str(length)}

def once(handler):
    with open(path, "rb") as body:
        began = time.perf_counter()
        _, files = MultiPartParser(meta, body, [handler], "utf-8").parse()
        upload = files["file"]
        name = default_storage.save("bench/upload", upload)
        took = time.perf_counter() - began
    upload.close()
    default_storage.delete(name)
    return took

timings = {"plain": [], "hashed": []}
for _ in range(rounds):
    timings["plain"].append(once(TemporaryFileUploadHandler()))
    timings["hashed"].append(once(HashingUploadHandler()))
print(json.dumps(timings))
"""

# Run in the stack's environment: EXPORT_TASKS finished tasks for one user, inserted in
# bulk (only the export is measured, not how the tasks were made).
INSERT_TASKS = r"""
import sys
from datetime import timedelta
import django
django.setup()
from django.utils import timezone
from backend.tasks.models import Task, TaskStatus
from backend.users.models import User

owner = User.objects.get(username=sys.argv[1])
count = int(sys.argv[2])
now = timezone.now()
batch = []
for i in range(count):
    started = now - timedelta(seconds=count - i + 5)
    batch.append(Task(owner=owner, assignee=owner, name=f"bench task {i}", task_type="sum",
                      input_data={"numbers": [i]}, status=TaskStatus.COMPLETED,
                      result={"result": i}, progress=100, attempts=1, started_at=started,
                      completed_at=started + timedelta(milliseconds=i % 900)))
    if len(batch) == 5000:
        Task.objects.bulk_create(batch)
        batch = []
Task.objects.bulk_create(batch)
"""


def run_django(stack: Stack, script: str, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "python"), "-c", script, *args],
        cwd=ROOT,
        env={**stack_env(stack.folder), "DJANGO_SETTINGS_MODULE": "backend.settings"},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise BenchError(f"bench script failed:\n{done.stderr[-2000:]}")
    return done.stdout


def run_task_timed(client: Client, body: dict[str, Any], deadline: float) -> dict[str, Any]:
    task = client.expect("POST", "/api/tasks/", 201, body)
    return wait_task(client, task["id"], deadline)


def file_uploads(stack: Stack, token: str, rounds: int) -> list[Row]:
    body, boundary, size = multipart_file(stack.folder, "random.bin", random_content(UPLOAD_MIB))
    workers = children(stack.procs["web"].pid)
    times, growth = [], 0.0
    for _ in range(rounds):
        peak = PeakRss(workers)
        took, meta = upload(stack.port, token, body, boundary)
        growth = max(growth, peak.growth_mb())
        if meta["size"] != size:
            raise BenchError(f"uploaded {meta['size']} bytes, sent {size}")
        times.append(took)
    ab = json.loads(run_django(stack, HASHING_OVERHEAD, str(body), boundary, "5"))
    body.unlink()
    plain, hashed = statistics.median(ab["plain"]), statistics.median(ab["hashed"])
    upload_time = statistics.median(times)
    # What hashing costs, measured in-process (same parse and store, with and without it),
    # against the HTTP upload that would remain without it.
    cost = hashed - plain
    mib = size / MIB
    return [
        s_row(
            f"POST /api/files/ {UPLOAD_MIB} MB (gunicorn, streamed from disk)",
            times,
            f"{mib / upload_time:.0f} MB/s; web peak RSS +{growth:.1f} MB",
        ),
        s_row(
            f"{UPLOAD_MIB} MB parse + store in one process, stock handler (no hash)",
            ab["plain"],
            f"{mib / plain:.0f} MB/s",
        ),
        s_row(
            f"{UPLOAD_MIB} MB parse + store in one process, hashing handler",
            ab["hashed"],
            f"{mib / hashed:.0f} MB/s; hashing costs {cost * 1000:.0f} ms: "
            f"{cost / (upload_time - cost) * 100:+.1f} % on the HTTP upload "
            f"({(hashed / plain - 1) * 100:+.0f} % in-process)",
        ),
    ]


def data_processing(stack: Stack, token: str, deadline: float) -> list[Row]:
    client = Client(stack.port, token)
    pool = children(stack.procs["worker"].pid)
    # Warm-up, not measured: two small files at once, so each pool process has run the
    # code once and its first-use allocations are not counted as growth.
    body, boundary, _ = multipart_file(stack.folder, "warm-up.csv", csv_content(1))
    _, meta = upload(stack.port, token, body, boundary)
    body.unlink()
    warm = {"task_type": "data_processing", "input_data": {"file_id": meta["id"]}}
    started = [client.expect("POST", "/api/tasks/", 201, warm)["id"] for _ in pool]
    for task_id in started:
        wait_task(client, task_id, deadline)
    rows = []
    for mib in CSV_MIB:
        body, boundary, size = multipart_file(stack.folder, f"sales-{mib}.csv", csv_content(mib))
        _, meta = upload(stack.port, token, body, boundary)
        body.unlink()
        peak = PeakRss(pool)
        task = run_task_timed(
            client,
            {"task_type": "data_processing", "input_data": {"file_id": meta["id"]}},
            deadline,
        )
        ran = between(task, "started_at", "completed_at")
        rows.append(
            s_row(
                f"data_processing of a {size / MIB:.0f} MB CSV ({task['result']['rows']:,} rows)",
                [ran],
                f"{size / MIB / ran:.1f} MB/s; worker peak RSS +{peak.growth_mb():.1f} MB",
            )
        )
    client.close()
    return rows


def tasks_export(stack: Stack, deadline: float) -> list[Row]:
    client = Client(stack.port, register(stack.port, "export"))
    name = client.expect("GET", "/api/users/me/", 200)["username"]
    run_django(stack, INSERT_TASKS, name, str(EXPORT_TASKS))
    pool = children(stack.procs["worker"].pid)
    rows = []
    for fmt in ("csv", "json"):
        peak = PeakRss(pool)
        task = run_task_timed(
            client,
            {
                "task_type": "report_generation",
                "input_data": {"report": "tasks_export", "format": fmt},
            },
            deadline,
        )
        ran = between(task, "started_at", "completed_at")
        meta = client.expect("GET", f"/api/files/{task['result']['file_id']}/", 200)
        rows.append(
            s_row(
                f"report_generation tasks_export of {task['result']['rows']:,} tasks ({fmt}, "
                f"{meta['size'] / MIB:.0f} MB)",
                [ran],
                f"{task['result']['rows'] / ran:,.0f} rows/s; worker peak RSS +{peak.growth_mb():.1f} MB",
            )
        )
    client.close()
    return rows


def files(stack: Stack, config: Config) -> list[Row]:
    token = register(stack.port, "files")
    rows = file_uploads(stack, token, 2 if config.quick else 3)
    print("file uploads done", flush=True)
    rows += data_processing(stack, token, config.deadline)
    print("data_processing done", flush=True)
    rows += tasks_export(stack, config.deadline)
    return rows


# --- report ----------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    lines = [
        "| Measurement | n | median | p95 | max | throughput |",
        "|---|--:|--:|--:|--:|---|",
    ]
    lines += [
        f"| {r.name} | {r.n} | {r.median} | {r.p95} | {r.maximum} | {r.throughput} |" for r in rows
    ]
    return "\n".join(lines)


def report(rows: list[Row], config: Config, runtime: float) -> str:
    mode = "--quick" if config.quick else "full"
    return f"""# Benchmark results

Generated by `.venv/bin/python bench/run.py{" --quick" if config.quick else ""}` ({mode} run,
{runtime:.0f} s in total) on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.

## Machine

- CPUs (`nproc`): {len(os.sched_getaffinity(0))} ({cpu_model()})
- Python {platform.python_version()}
- {platform.platform()}

## Configuration

- Embedded default: SQLite in WAL mode (one file in a fresh temporary `VAR_DIR`) and the
  Celery filesystem broker (`filesystem://`, polling every 0.1 s); `DEBUG=true`.
- Web: gunicorn, {GUNICORN_WORKERS} sync workers (they close the connection after each
  response, so every request includes a loopback TCP connect).
- Celery: one worker, `--concurrency={CELERY_CONCURRENCY}`, queues `tasks,maintenance`; beat
  with the database scheduler. `LOG_LEVEL=WARNING`.
- `MAX_ACTIVE_TASKS={MAX_ACTIVE_TASKS}` (default 5) so that a benchmark user can hold many
  queued tasks; `THROTTLE_AUTH_RATE=10000/min` so registering the users is not throttled;
  `MAX_UPLOAD_SIZE={BENCH_MAX_UPLOAD // MIB} MB` (default 50 MB) so the 100 MB CSV fits.
- The client runs on the same machine, over 127.0.0.1.

## What is measured

- API latency: {config.requests} sequential `POST /api/tasks/` (`sum` of 10 numbers) over 5
  users, then a `GET /api/tasks/{{id}}/` of each; the worker runs the tasks meanwhile.
- End-to-end: {config.e2e_tasks} `sum` tasks of 1,000 numbers submitted by one user from
  {config.submit_threads} connections at once, then the list endpoint is polled until all are
  completed. Throughput is tasks / (last `completed_at` - first submit); the latency is each
  task's `completed_at - created_at`.
- List latency: {config.list_requests} requests per page size, over that same user's tasks.
- Countdown: one `countdown` of 3 s; `completed_at - started_at` should be about 3 s.
- Upload: a {UPLOAD_MIB} MB file of random bytes `POST`ed to `/api/files/` (multipart, streamed
  from disk) {2 if config.quick else 3} times; web peak RSS growth is the largest rise of a
  gunicorn worker's high-water mark (VmHWM, reset before each upload) over its RSS before.
  The cost of hashing: the same body parsed and stored in one process with Django's stock
  temporary-file upload handler, then with the hashing handler, alternately.
- `data_processing` of {" and ".join(f"{m} MB" for m in CSV_MIB)} CSVs (id, text, price,
  quantity with a few empty cells, category): MB/s from `started_at` to `completed_at`;
  worker peak RSS growth as above, over the Celery pool processes (after a warm-up task in
  each of them).
- `report_generation` `tasks_export` of {EXPORT_TASKS:,} tasks (inserted in bulk first), as
  csv and as json: rows per second in the worker, and its peak RSS growth.

## Results

{table(rows)}

Benchmarks report numbers; nothing here is asserted.
"""


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer requests)")
    parser.add_argument("--requests", type=int, help="API latency requests (300; quick 60)")
    parser.add_argument("--e2e-tasks", type=int, help="end-to-end tasks (200; quick 40)")
    parser.add_argument("--list-requests", type=int, help="list requests per size (50; quick 20)")
    parser.add_argument("--submit-threads", type=int, default=4, help="end-to-end connections")
    parser.add_argument("--deadline", type=float, default=300, help="seconds to wait for tasks")
    parser.add_argument(
        "--only",
        choices=("tasks", "files"),
        help="run one part only; the table is printed and bench/RESULTS.md left alone",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    return Config(
        requests=args.requests or (60 if quick else 300),
        e2e_tasks=args.e2e_tasks or (40 if quick else 200),
        list_requests=args.list_requests or (20 if quick else 50),
        submit_threads=args.submit_threads,
        deadline=args.deadline,
        quick=quick,
        only=args.only,
    )


def run(config: Config) -> list[Row]:
    with running_stack(config.deadline) as stack:
        print(f"stack up on {stack.base} (temp folder {stack.folder})", flush=True)
        rows: list[Row] = []
        if config.only in (None, "tasks"):
            rows += api_latency(stack.port, config.requests, config.deadline)
            print("api latency done", flush=True)
            token = register(stack.port, "e2e")
            rows += end_to_end(stack.port, token, config)
            print("end-to-end done", flush=True)
            rows += list_latency(stack.port, token, config.list_requests)
            rows += countdown(stack.port, config.deadline)
        if config.only in (None, "files"):
            rows += files(stack, config)
            print("files done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the stack is still stopped and the folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    try:
        rows = run(config)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    runtime = time.perf_counter() - began
    print()
    print(table(rows))
    print(f"\ntotal runtime {runtime:.1f} s")
    if config.only:
        return 0
    # The production stack's section (bench/production.py, run first by `make bench`) leads.
    production = RESULTS.with_name("RESULTS-production.md")
    lead = production.read_text() + "\n" if production.exists() else ""
    RESULTS.write_text(lead + report(rows, config, runtime))
    print(f"written {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
