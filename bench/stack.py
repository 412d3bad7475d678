"""The production stack on loopback, for ``bench/production.py``.

PostgreSQL and Redis in a temporary folder (as ``.ci/run`` starts them), the service's
processes (gunicorn, the short- and long-queue workers, beat) with ``DEBUG=false``, and the
tools the bench drives them with: a small HTTP client, ``wrk`` and Django scripts. Every
process is started here and stopped here, by PID (process group); nothing listens beyond
127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import psycopg
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
DATABASE = "tasks"
WEB_WORKERS = 2
WORKER_CONCURRENCY = 2
WRK_CONNECTIONS = 8
WRK_THREADS = 2


class BenchError(Exception):
    """Something the bench needs did not start, answer or finish in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], deadline: float, what: str, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy; BenchError after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not (value := check()):
        if time.monotonic() > end:
            raise BenchError(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(interval)
    return value


def run_logged(argv: list[str], log: Path, what: str, **kwargs: Any) -> None:
    """Run a set-up command, its output appended to ``log`` (shown when it fails)."""
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=600, **kwargs)
    if done.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{tail}")


# --- tools ---------------------------------------------------------------------------------
def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed from Debian's packages."""
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def ensure_tools(log: Path) -> Path:
    """PostgreSQL, redis-server and wrk, installed with apt-get when missing (as root)."""
    missing = [
        package
        for package, present in (
            ("postgresql", pg_bin() is not None),
            ("redis-server", shutil.which("redis-server") is not None),
            ("wrk", shutil.which("wrk") is not None),
        )
        if not present
    ]
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise BenchError(
                f"missing {', '.join(missing)}: apt-get install -y {' '.join(missing)}"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run_logged(["apt-get", "update", "-qq"], log, "apt-get update", env=env)
        run_logged(["apt-get", "install", "-y", "-qq", *missing], log, "apt-get install", env=env)
    found = pg_bin()
    if found is None:
        raise BenchError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
    return found


def version(argv: list[str]) -> str:
    """Name and version a tool prints (wrk -v exits 1, so no check): its first three words."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return " ".join((done.stdout + done.stderr).split()[:3]) or "unknown"


# --- PostgreSQL and Redis ------------------------------------------------------------------
@dataclass
class Servers:
    folder: Path
    pg: Path
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    redis: subprocess.Popen | None = None
    pg_running: bool = False

    @property
    def pg_data(self) -> Path:
        return self.folder / "pgdata"

    @property
    def dsn(self) -> str:
        return self.dsn_of(DATABASE)

    def dsn_of(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname={database}"

    def database_url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/{database}"

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"


def as_postgres(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(servers: Servers) -> None:
    log, data = servers.folder / "setup.log", servers.pg_data
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    initdb = [str(servers.pg / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    run_logged(as_postgres([*initdb, "-E", "UTF8"]), log, "initdb")
    options = f"-c listen_addresses=127.0.0.1 -p {servers.pg_port} -k {data}"
    pg_ctl = [str(servers.pg / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    start = [*pg_ctl, "-l", str(data / "server.log"), "-o", options, "start"]
    run_logged(as_postgres(start), log, "pg_ctl start")
    servers.pg_running = True
    createdb = [str(servers.pg / "createdb"), "-h", "127.0.0.1", "-p", str(servers.pg_port)]
    run_logged(as_postgres([*createdb, "-U", "postgres", DATABASE]), log, "createdb")


def stop_postgres(servers: Servers) -> None:
    if servers.pg_running:
        stop = [str(servers.pg / "pg_ctl"), "-D", str(servers.pg_data), "-m", "fast", "-w", "stop"]
        run_logged(as_postgres(stop), servers.folder / "setup.log", "pg_ctl stop")
        servers.pg_running = False


def start_redis(servers: Servers) -> None:
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(servers.redis_port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(servers.folder)]
    argv += ["--logfile", str(servers.folder / "redis.log")]
    servers.redis = subprocess.Popen(argv, start_new_session=True)
    client = redis.Redis(port=servers.redis_port)

    def pong() -> bool:
        if servers.redis.poll() is not None:
            raise BenchError(f"redis-server exited with code {servers.redis.returncode}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(pong, 30, "redis-server to answer PING")


def stop_redis(servers: Servers) -> None:
    if servers.redis is not None and servers.redis.poll() is None:
        servers.redis.terminate()
        servers.redis.wait(timeout=30)


# --- the service's processes ---------------------------------------------------------------
def service_env(servers: Servers, folder: Path) -> dict[str, str]:
    """Settings from the environment, as in production; only what the bench sets."""
    inherited = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    return inherited | {
        "DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Plain HTTP on loopback, no TLS proxy in front.
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": servers.database_url(DATABASE),
        "CELERY_BROKER_URL": servers.redis_url(0),
        "CACHE_URL": f"rediscache://127.0.0.1:{servers.redis_port}/1",
        "VAR_DIR": str(folder / "var"),
        "LOG_LEVEL": "WARNING",
        "MAX_ACTIVE_TASKS": "10000000",
        "THROTTLE_AUTH_RATE": "100000/min",
        "JWT_ACCESS_MINUTES": "240",
        "PYTHONUNBUFFERED": "1",
    }


def worker(queues: str, name: str, app: str = "backend") -> list[str]:
    """A prefork worker with the flags every worker of the bench shares."""
    argv = [str(BIN / "celery"), "-A", app, "worker", "--loglevel=warning", "-Q", queues]
    return [*argv, f"--concurrency={WORKER_CONCURRENCY}", f"--hostname={name}@%h"]


def service_commands(port: int) -> dict[str, list[str]]:
    web = [str(BIN / "gunicorn"), "backend.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    return {
        "web": [*web, "--workers", str(WEB_WORKERS)],
        "short": worker("tasks,maintenance", "short"),
        "long": [*worker("long", "long"), "--prefetch-multiplier=1"],
        "beat": [str(BIN / "celery"), "-A", "backend", "beat", "--loglevel=warning"],
    }


@dataclass
class Processes:
    """Long-lived processes by name, each in its own process group, logs in ``folder``."""

    folder: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        with (self.folder / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, *names: str) -> None:
        """SIGTERM (a worker finishes its current tasks), SIGKILL after 30 s."""
        procs = [self.running.pop(name) for name in names if name in self.running]
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def check(self) -> None:
        for name, proc in self.running.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with code {proc.returncode}")

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.folder.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


# --- HTTP ----------------------------------------------------------------------------------
@dataclass
class Account:
    id: str
    username: str
    token: str


def api(port: int, method: str, path: str, token: str = "", body: Any = None) -> tuple[int, Any]:
    """One request on a fresh connection (gunicorn's sync workers close it anyway)."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else None


def expect(port: int, method: str, path: str, status: int, token: str = "", body: Any = None):
    code, data = api(port, method, path, token, body)
    if code != status:
        raise BenchError(f"{method} {path}: expected {status}, got {code}: {str(data)[:300]}")
    return data


def register(port: int, label: str) -> Account:
    name = f"bench_{label}_{secrets.token_hex(3)}"
    password = f"Bench-{secrets.token_urlsafe(12)}!9"
    data = expect(
        port, "POST", "/api/register/", 201, body={"username": name, "password": password}
    )
    return Account(str(data["id"]), name, data["access"])


# --- wrk -----------------------------------------------------------------------------------
WRK_SCRIPT = Template("""\
wrk.method = "$method"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Accept"] = "application/json"
wrk.headers["Content-Type"] = "application/json"
wrk.body = $body

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
""")
WRK_FIELDS = ("requests", "duration", "non2xx", "connect", "read", "write", "timeout")
WRK_FIELDS += ("p50", "p99", "max")  # latencies in microseconds


@dataclass
class WrkResult:
    requests: int
    duration: float  # seconds
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.duration


def run_wrk(folder: Path, url: str, token: str, seconds: float, body: Any = None) -> WrkResult:
    """wrk at 8 connections for ``seconds``: GET, or POST of ``body`` as JSON."""
    script = folder / f"wrk-{secrets.token_hex(3)}.lua"
    lua_body = "nil" if body is None else f"[[{json.dumps(body)}]]"
    method = "GET" if body is None else "POST"
    script.write_text(WRK_SCRIPT.substitute(method=method, token=token, body=lua_body))
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d", f"{seconds:g}s"]
    argv += ["--timeout", "10s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    with (folder / "wrk.log").open("a") as log:
        log.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode or line is None:
        raise BenchError(f"wrk failed (exit {done.returncode}): {done.stderr.strip()[:500]}")
    v = dict(zip(WRK_FIELDS, (float(x) for x in line.split()[1:]), strict=True))
    errors = v["connect"] + v["read"] + v["write"] + v["timeout"]
    return WrkResult(
        int(v["requests"]),
        v["duration"] / 1e6,
        int(v["non2xx"]),
        int(errors),
        v["p50"] / 1000,
        v["p99"] / 1000,
        v["max"] / 1000,
    )


# --- CPU time ------------------------------------------------------------------------------
def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of its children it has reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the command name: state, ppid, ..., utime, stime, cutime, cstime (14th-17th).
        table[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    return table


def tree_cpu(table: dict[int, tuple[int, float]], root: int) -> float:
    """CPU seconds used so far by ``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


# --- the whole stack -----------------------------------------------------------------------
@dataclass
class Stack:
    folder: Path
    servers: Servers
    port: int
    env: dict[str, str]
    procs: Processes
    db: psycopg.Connection
    broker: redis.Redis

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *names: str) -> None:
        commands = service_commands(self.port)
        for name in names:
            self.procs.start(name, commands[name], self.env)

    def stop(self, *names: str) -> None:
        self.procs.stop(*names)

    @contextmanager
    def paused(self, *names: str) -> Iterator[None]:
        """These processes stopped for the block, running again after it (the block may
        start them itself)."""
        self.stop(*names)
        try:
            yield
        finally:
            self.start(*(name for name in names if name not in self.procs.running))

    def sql(self, query: str, params: Any = ()) -> list[tuple]:
        with self.db.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def django(
        self,
        script: str,
        *args: str,
        timeout: float = 900,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> str:
        """Run ``script`` with Django set up on the stack's settings (or ``env``'s) from the
        code in ``cwd``; returns its stdout."""
        code = "import django\ndjango.setup()\n" + script
        env = {**(env or self.env), "DJANGO_SETTINGS_MODULE": "backend.settings"}
        done = subprocess.run(
            [str(BIN / "python"), "-c", code, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise BenchError(f"Django script failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def cpu(self, *names: str) -> dict[str, float]:
        """CPU seconds used so far by these processes (with their children), PostgreSQL and
        Redis: differences between two calls say what a measurement cost each of them."""
        table = process_table()
        postmaster = int((self.servers.pg_data / "postmaster.pid").read_text().split()[0])
        used = {name: tree_cpu(table, self.procs.running[name].pid) for name in names}
        used["postgres"] = tree_cpu(table, postmaster)
        used["redis"] = tree_cpu(table, self.servers.redis.pid)
        return used

    def healthy(self) -> bool:
        self.procs.check()
        try:
            return api(self.port, "GET", "/health/")[0] == 200
        except OSError:
            return False


def migrate(env: dict[str, str], folder: Path) -> None:
    argv = [str(BIN / "python"), "manage.py", "migrate", "--noinput"]
    run_logged(argv, folder / "setup.log", "manage.py migrate", cwd=ROOT, env=env)


@contextmanager
def running_stack(port: int | None) -> Iterator[Stack]:
    """PostgreSQL, Redis and the service, up and healthy; all stopped and removed after."""
    folder = Path(tempfile.mkdtemp(prefix="atm-prod-bench-"))
    folder.chmod(0o755)  # the postgres user reaches its data folder inside
    try:
        servers = Servers(folder, ensure_tools(folder / "setup.log"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    procs = Processes(folder)
    try:
        start_postgres(servers)
        start_redis(servers)
        env = service_env(servers, folder)
        migrate(env, folder)
        with psycopg.connect(servers.dsn, autocommit=True) as db:
            stack = Stack(
                folder,
                servers,
                port or free_port(),
                env,
                procs,
                db,
                redis.Redis(port=servers.redis_port),
            )
            stack.start("web", "short", "long", "beat")
            wait_for(stack.healthy, 60, "GET /health/ 200", 0.25)
            yield stack
    except BaseException:
        print(procs.log_tails(), file=sys.stderr)
        raise
    finally:
        procs.stop(*list(procs.running))
        stop_redis(servers)
        stop_postgres(servers)
        shutil.rmtree(folder, ignore_errors=True)


def cpu_model() -> str:
    """The CPU's model name, for the results files."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
