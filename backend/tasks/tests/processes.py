"""Real worker and beat processes for end-to-end tests, on the test database and the
configured broker (the filesystem folder of the test run, or Redis in CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(settings.BASE_DIR)

# Short intervals so a test sees expiry, dispatch and rescue within seconds.
FAST_SWEEPS = {
    "TASK_EXPIRY_INTERVAL": "1",
    "TASK_DISPATCH_INTERVAL": "1",
    "TASK_RESCUE_INTERVAL": "1",
    "TASK_HEARTBEAT_TIMEOUT": "3",
    "TASK_REDISPATCH_AFTER": "30",
}


def test_database_url() -> str:
    """A DATABASE_URL for the database this test run created."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


def wait_for(
    predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = ""
):
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def purge_filesystem_broker() -> None:
    """Drop messages left by earlier tests, whose rows no longer exist."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for sub in ("data", "processed"):
            folder = settings.BROKER_FOLDER / sub
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
    else:
        from backend.celery import app

        with app.connection_for_write() as conn:
            for name in settings.TASK_QUEUES:
                with contextlib.suppress(Exception):  # the queue may not exist yet
                    conn.default_channel.queue_purge(name)


class CeleryProcess:
    """A ``celery`` command in its own process group, logging to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "backend", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.log()[-3000:]}")
            return text in self.log()

        wait_for(seen, timeout=timeout, what=f"{text!r} in {self.log_path.name}")

    def children(self) -> list[int]:
        """The pids of the process's children (a worker's pool processes)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                found.append(int(entry.name))
        return sorted(found)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """Ask for a warm shutdown; ``stop`` waits for it."""
        if self.proc.poll() is None:
            # The main process only: it stops its pool children itself.
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, deadline: float | None = None) -> None:
        """Stop the process, killing it if it is still up at ``deadline`` (monotonic)."""
        self.terminate()
        if deadline is None:
            deadline = time.monotonic() + 4
        try:
            # The test is over: a worker still finishing a long task is not waited for.
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        self._log.close()


class Cluster:
    """Worker and beat processes sharing the test database; stopped at teardown."""

    def __init__(self, log_dir: Path, extra_env: dict[str, str] | None = None):
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            **FAST_SWEEPS,
            **(extra_env or {}),
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: list[CeleryProcess] = []

    def start_worker(
        self, queues: tuple[str, ...] = settings.TASK_QUEUES, *options: str
    ) -> CeleryProcess:
        """A worker on ``queues`` (all by default); ``options`` replace the default
        ``--concurrency=2`` when they give one."""
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        if not any(option.startswith("--concurrency") for option in options):
            options = ("--concurrency=2", *options)
        worker = CeleryProcess(
            [
                "worker",
                "--loglevel=info",
                "--queues=" + ",".join(queues),
                *options,
                f"--hostname={name}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            self.log_dir / f"{name}.log",
            self.env,
        )
        self.processes.append(worker)
        worker.wait_for_log("ready.")
        return worker

    def start_beat(self, name: str = "beat") -> CeleryProcess:
        # At debug, its log keeps every sweep it sends (at info, those that did nothing are
        # left out: backend.common.logfilters.QuietSweeps): tests count its ticks by them.
        beat = CeleryProcess(
            ["beat", "--loglevel=debug", f"--pidfile={self.log_dir / f'{name}.pid'}"],
            self.log_dir / f"{name}.log",
            self.env,
        )
        self.processes.append(beat)
        beat.wait_for_log("beat: Starting...")
        return beat

    def stop(self) -> None:
        """Every process is asked at once and given the same short moment, then killed: the
        test is over (what it checks is in the database already), and an idle worker's warm
        shutdown alone takes Celery about 3 s."""
        for process in reversed(self.processes):
            process.terminate()
        deadline = time.monotonic() + 0.3
        for process in reversed(self.processes):
            process.stop(deadline)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-4000:]}" for p in self.processes)
