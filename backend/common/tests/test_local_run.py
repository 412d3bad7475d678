"""The local-run experience: `make run` stops cleanly on Ctrl-C, make writes a .env that lets
manage.py work outside make, a configuration error is one line, and the embedded default's
system checks stay quiet."""

import contextlib
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core import checks
from django.db import connection

from backend.common.pytest_env import STORES

PROJECT_ROOT = Path(__file__).resolve().parents[3]
VENV = Path(sys.prefix)
PROCFILE_NAMES = [
    line.split(":", 1)[0]
    for line in (PROJECT_ROOT / "Procfile").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    """make in the project, with the virtualenv this test runs in (never reinstalled), on a
    developer's machine: no DJANGO_SECRET_KEY, DEBUG or ALLOWED_HOSTS in the environment
    unless given."""
    unset = ("DJANGO_SECRET_KEY", "DEBUG", "ALLOWED_HOSTS")  # (the test run's own)
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        ["make", f"VENV={VENV}", "-o", f"{VENV}/.installed", *args],
        cwd=PROJECT_ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def python(tmp_path: Path, *args: str, **overrides: str | None) -> subprocess.CompletedProcess:
    """The project's Python in a minimal environment (no DEBUG, no secret), as on a
    developer's machine outside make."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "VAR_DIR": str(tmp_path / "var"),
        **overrides,
    }
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


SHOW_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DEBUG, settings.SECRET_KEY)"
)


# --- .env ------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@needs_make
def test_make_writes_a_env_file_once(tmp_path):
    env_file = tmp_path / ".env"

    first = make(f"ENV_FILE={env_file}", str(env_file))

    assert first.returncode == 0, first.stdout + first.stderr
    values = read_env_file(env_file)
    assert values["DEBUG"] == "true"
    assert len(values["DJANGO_SECRET_KEY"]) >= 50
    assert env_file.stat().st_mode & 0o077 == 0  # the secret is readable by its owner only

    again = make(f"ENV_FILE={env_file}", str(env_file))

    assert again.returncode == 0, again.stdout + again.stderr
    assert read_env_file(env_file) == values  # never overwritten


@needs_make
def test_another_make_writes_a_different_secret(tmp_path):
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    for env_file in (first, second):
        assert make(f"ENV_FILE={env_file}", str(env_file)).returncode == 0

    assert read_env_file(first)["DJANGO_SECRET_KEY"] != read_env_file(second)["DJANGO_SECRET_KEY"]


@needs_make
@pytest.mark.parametrize("target", ["migrate", "superuser", "run"])
def test_the_first_make_targets_write_the_env_file_before_manage_py(tmp_path, target):
    env_file = tmp_path / ".env"

    planned = make("-n", f"ENV_FILE={env_file}", target)

    assert planned.returncode == 0, planned.stderr
    writes = planned.stdout.find(f"> {env_file}.tmp")
    assert writes != -1, planned.stdout
    assert writes < planned.stdout.find("manage.py")
    assert not env_file.exists()  # -n: planned only


@needs_make
def test_no_env_file_when_env_file_is_empty(tmp_path):
    planned = make("-n", "ENV_FILE=", "migrate")

    assert planned.returncode == 0, planned.stderr
    assert "token_urlsafe" not in planned.stdout  # no key is made, no file written


def test_env_file_is_git_ignored():
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.own_stores
def test_manage_py_runs_outside_make_with_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=true\nDJANGO_SECRET_KEY=from-the-env-file\n")

    checked = python(tmp_path, "manage.py", "check", ENV_FILE=str(env_file))
    shown = python(tmp_path, "-c", SHOW_SETTINGS, ENV_FILE=str(env_file))

    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    assert shown.stdout.split() == ["True", "from-the-env-file"], shown.stderr


@pytest.mark.own_stores
def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=true\nDJANGO_SECRET_KEY=from-the-env-file\n")

    shown = python(
        tmp_path,
        "-c",
        SHOW_SETTINGS,
        ENV_FILE=str(env_file),
        DEBUG="false",
        DJANGO_SECRET_KEY="from-the-environment",
        ALLOWED_HOSTS="localhost",
    )

    assert shown.stdout.split() == ["False", "from-the-environment"], shown.stderr


def test_the_test_suite_reads_no_env_file():
    # backend/common/pytest_env.py: a developer's .env (DEBUG=true) would change results.
    assert os.environ["ENV_FILE"] == ""
    assert settings.ENV_FILE is None


# --- one line for a configuration error ----------------------------------------------

BAD_ENVIRONMENTS = [
    ({}, "DJANGO_SECRET_KEY"),  # DEBUG unset: production, which needs a secret
    ({"DEBUG": "true", "DATABASE_URL": "postgres://u:p@db:notaport/tasks"}, "DATABASE_URL"),
    ({"DEBUG": "true", "DATABASE_URL": "garbage"}, "DATABASE_URL"),
    ({"DEBUG": "true", "MAX_ACTIVE_TASKS": "many"}, "MAX_ACTIVE_TASKS"),
    ({"DEBUG": "maybe"}, "DEBUG"),
]


@pytest.mark.own_stores
@pytest.mark.parametrize(
    ("overrides", "named"),
    BAD_ENVIRONMENTS,
    ids=[",".join(f"{k}={v}" for k, v in o.items()) or "nothing" for o, _ in BAD_ENVIRONMENTS],
)
def test_a_configuration_error_is_one_line(tmp_path, overrides, named):
    result = python(tmp_path, "manage.py", "check", ENV_FILE="", **overrides)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Configuration error: ")
    assert named in lines[0]


@pytest.mark.own_stores
def test_the_missing_secret_message_says_how_to_run_locally(tmp_path):
    result = python(tmp_path, "manage.py", "check", ENV_FILE="")

    assert "DEBUG=true" in result.stderr and ".env" in result.stderr


# --- system checks on the embedded default -------------------------------------------


@pytest.mark.django_db
def test_covering_index_warning_silenced_on_sqlite_only():
    silenced = "models.W040" in settings.SILENCED_SYSTEM_CHECKS
    assert silenced == (connection.vendor == "sqlite")
    if connection.vendor == "sqlite":
        # Not silenced for nothing: Django does raise it there (and commands then hide it).
        found = [m for m in checks.run_checks(databases=["default"]) if m.id == "models.W040"]
        assert found and all(message.is_silenced() for message in found)


@pytest.mark.own_stores
def test_manage_py_says_nothing_about_indexes_on_the_embedded_default(tmp_path):
    result = python(
        tmp_path, "manage.py", "check", "--database", "default", ENV_FILE="", DEBUG="true"
    )

    assert result.returncode == 0, result.stderr
    assert "W040" not in result.stdout + result.stderr
    assert "identified no issues" in result.stdout


@pytest.mark.own_stores
@pytest.mark.parametrize("command", [["migrate", "--noinput"], ["showmigrations"]])
def test_djangos_own_commands_say_a_database_is_down_in_one_line(tmp_path, command):
    """`migrate` (so `make migrate`, `make run`) printed 89 lines of traceback when
    PostgreSQL was down, where the service's commands say it in one line."""
    done = python(
        tmp_path,
        "manage.py",
        *command,
        ENV_FILE="",
        DEBUG="true",
        DATABASE_URL="postgres://tasks@127.0.0.1:9/tasks",  # nothing listens on port 9
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("CommandError: The database (tasks) is unavailable: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- the long queue's worker ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Procfile", "docker-compose.yml"])
def test_the_long_worker_runs_more_tasks_at_once_than_one_user_may_hold(name):
    """One user's long tasks (at most MAX_ACTIVE_TASKS active) never take every process of
    the long queue's worker: another user's email or report starts at once beside them."""
    (line,) = [
        line
        for line in (PROJECT_ROOT / name).read_text().splitlines()
        if re.search(r"(-Q |--queues=)long\b", line)
    ]
    autoscale = re.search(r"--autoscale=(\d+),(\d+)", line)
    most = int(autoscale[1]) if autoscale else int(re.search(r"--concurrency=(\d+)", line)[1])

    assert most > settings.MAX_ACTIVE_TASKS
    assert "--prefetch-multiplier=1" in line


def test_every_compose_worker_has_the_procfiles_node_name_and_pings_it():
    """compose's short-task worker ran as celery@<host> (the stats API and `celery inspect`
    showed that name, the README and the Procfile worker@<host>)."""
    import yaml

    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    procfile = (PROJECT_ROOT / "Procfile").read_text()
    for service in ("worker", "worker-long", "maintenance"):
        command, health = services[service]["command"], services[service]["healthcheck"]
        name = re.search(r"-n (\w+)@%h", command)[1]
        assert f"--hostname={name}@%h" in procfile, service
        assert f"inspect ping -d {name}@$$HOSTNAME" in health["test"][1], service
        # As the tests' workers run: Celery's gossip step failed with a long traceback each
        # time the broker connection was lost, and nothing uses it nor the start-up exchange.
        assert "--without-gossip --without-mingle" in command, service
        line = next(line for line in procfile.splitlines() if f"--hostname={name}@%h" in line)
        assert "--without-gossip --without-mingle" in line, name


@pytest.mark.own_stores
@pytest.mark.parametrize(("proxies", "redirect"), [("0", "False"), ("1", "True")])
def test_compose_redirects_to_https_behind_a_proxy_as_the_settings_do(tmp_path, proxies, redirect):
    """compose pinned SECURE_SSL_REDIRECT to false, so with NUM_PROXIES=1 plain HTTP was not
    redirected (check --deploy: W008), unlike the same settings outside compose. Its value,
    as compose hands it over when the shell and .env set none, leaves the settings' rule."""
    import yaml

    env = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["x-app-env"]
    given = re.fullmatch(r"\$\{SECURE_SSL_REDIRECT:-(.*)\}", env["SECURE_SSL_REDIRECT"])[1]
    done = python(
        tmp_path,
        "-c",
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECURE_SSL_REDIRECT)",
        ENV_FILE="",
        DEBUG="false",
        DJANGO_SECRET_KEY="k" * 50,
        ALLOWED_HOSTS="localhost",
        NUM_PROXIES=proxies,
        SECURE_SSL_REDIRECT=given,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == redirect


@pytest.mark.own_stores
def test_make_run_gives_every_process_the_web_servers_port(tmp_path):
    """Honcho gave each process 100 more than the one before: with web on 65500 beat had
    65900, which the settings refuse ("PORT must be an integer from 1 to 65535"), and every
    Celery process stopped at once."""
    import importlib.util

    import honcho.environ
    from honcho.environ import parse_procfile

    spec = importlib.util.spec_from_file_location("run_script", PROJECT_ROOT / "scripts/run.py")
    run_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_script)
    procfile = parse_procfile((PROJECT_ROOT / "Procfile").read_text())

    expand = run_script.one_port(honcho.environ.expand_processes)
    processes = expand(procfile.processes, env={}, port=65500)
    assert [p.name.split(".")[0] for p in processes] == list(procfile.processes)
    assert {p.env["PORT"] for p in processes} == {"65500"}
    # What honcho alone gives, and what the settings say of it.
    beat = honcho.environ.expand_processes(procfile.processes, env={}, port=65500)[-1]
    done = python(
        tmp_path,
        "-c",
        "import django; django.setup()",
        ENV_FILE="",
        DEBUG="true",
        PORT=beat.env["PORT"],
    )
    assert done.returncode != 0 and "PORT" in done.stderr
    done = python(
        tmp_path, "-c", "import django; django.setup()", ENV_FILE="", DEBUG="true", PORT="65500"
    )
    assert done.returncode == 0, done.stderr


def _web_commands() -> dict[str, str]:
    """The shell command the Docker image and compose's web service start gunicorn with."""
    import json

    import yaml

    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.M)
    web = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]["web"]
    compose = web["command"][2].replace("$$", "$")  # compose's escape for a literal $
    compose = compose.split("&&", 1)[1]  # after the migrations
    return {"Dockerfile": json.loads(cmd)[2], "docker-compose.yml": compose}


@pytest.mark.own_stores
@pytest.mark.parametrize("name", ["Dockerfile", "docker-compose.yml"])
@pytest.mark.parametrize(("given", "workers"), [(None, "3"), ("", "3"), ("5", "5")])
def test_the_images_gunicorn_starts_with_web_concurrency_set_empty(tmp_path, name, given, workers):
    """gunicorn reads WEB_CONCURRENCY itself when it is imported, and failed on it set empty
    (`ValueError: invalid literal for int()`), though an empty setting counts as unset: with
    `WEB_CONCURRENCY=` in compose's .env, web never started, nor anything waiting for it."""
    command = _web_commands()[name].replace("exec gunicorn", "exec gunicorn --print-config", 1)
    env = {
        "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": "",
        "DEBUG": "true",
    }
    if given is not None:
        env["WEB_CONCURRENCY"] = given
    done = subprocess.run(
        ["sh", "-c", command], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"^workers\s+= {workers}$", done.stdout, flags=re.M), done.stdout


def test_compose_hands_every_setting_of_env_example_on():
    """TASK_OUTCOME_LINGER and WEBHOOK_SECRET_OVERLAP were in .env.example and not in
    compose's list: set in .env, they reached no container, and nothing said so."""
    import yaml

    example = (PROJECT_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^# ?([A-Z][A-Z0-9_]*)=", example, flags=re.M))
    handed = set(yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["x-app-env"])
    # The embedded default's own, make's own, and those compose's file says go elsewhere.
    not_for_compose = {"BROKER_FOLDER", "SQLITE_BUSY_TIMEOUT", "ENV_FILE", "PORT"}
    not_for_compose |= {name for name in documented if name.startswith("DJANGO_SUPERUSER_")}
    assert documented - not_for_compose <= handed, sorted(documented - not_for_compose - handed)


def test_compose_gives_rabbitmq_the_consumer_timeout_the_service_checks_tasks_against():
    """RabbitMQ's consumer_timeout was fixed at 2 h while BROKER_CONSUMER_TIMEOUT could be
    raised: the service then accepted tasks RabbitMQ would cut in the middle."""
    import yaml

    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    given = compose["x-app-env"]["BROKER_CONSUMER_TIMEOUT"]
    default = re.fullmatch(r"\$\{BROKER_CONSUMER_TIMEOUT:-(\d+)\}", given)[1]
    erl_args = compose["services"]["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    assert f"-rabbit consumer_timeout ${{BROKER_CONSUMER_TIMEOUT:-{default}}}000" in erl_args


# --- Ctrl-C on make run ---------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on, below the range the kernel gives outgoing connections
    their ports from. One from bind(0) is in that range, and make run binds it seconds
    later: a connection opened meanwhile by another test took it once ("That port is
    already in use")."""
    outgoing = Path("/proc/sys/net/ipv4/ip_local_port_range")
    lowest = int(outgoing.read_text().split()[0]) if outgoing.exists() else 0
    for _ in range(200):
        port = random.randint(10000, lowest - 1) if lowest > 11000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


class MakeRun:
    """`make run` in a session of its own with a pseudo-terminal as its controlling
    terminal, as in a developer's shell; its output is collected as it comes."""

    def __init__(self, tmp_path: Path, *, background: bool = False):
        """``background``: as ``make run &`` typed in a shell (with job control), which is
        then left running at the shell's end."""
        self.env_file = tmp_path / ".env"
        env = {
            name: value
            for name, value in os.environ.items()
            # The embedded default in a private folder, as `make run` is meant to run.
            # The secret comes from the .env make writes. Python's output unbuffered only if
            # make sees to it (the web server's "Quit the server" line waited in a buffer).
            if name
            not in {*STORES, "BROKER_FOLDER", "DEBUG", "DJANGO_SECRET_KEY", "PYTHONUNBUFFERED"}
        }
        env.update(
            PORT=str(free_port()), VAR_DIR=str(tmp_path / "var"), ENV_FILE=str(self.env_file)
        )
        self.master, slave = os.openpty()
        make = ["make", f"VENV={VENV}", "-o", f"{VENV}/.installed", "run"]
        if background:
            make = ["bash", "-c", f"set -m; {shlex.join(make)} & wait"]
        self.proc = subprocess.Popen(
            make,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=self._take_terminal,
        )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @staticmethod
    def _take_terminal() -> None:
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # A shell starts a command with SIGINT and SIGQUIT at their defaults, even when the
        # tests themselves run as a background job of a script (which ignores both).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)

    def _read(self) -> None:
        master = self.master
        while not self._closing.is_set():
            # Never blocked in read(): a close() from another thread does not end a read
            # under way on Linux, and the terminal was not hung up until output came.
            if not select.select([master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has gone (or it closed)
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def output(self) -> str:
        text = b"".join(self._chunks).decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;]*m", "", text)  # honcho's colours

    def wait_until_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output
            workers = all(re.search(rf"{name}@\S+ ready\.", out) for name in PROCFILE_WORKERS)
            # Beat is up once its scheduler, set up in the database, has taken the schedules'
            # lock on its first tick, as a person would see it before pressing Ctrl-C.
            beat = "this beat holds the schedules' lock" in out
            if workers and beat and "Quit the server" in out:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"make run did not get ready:\n{self.output[-5000:]}")

    def ctrl_c(self) -> None:
        # What a terminal does on Ctrl-C: SIGINT to its whole foreground process group.
        os.write(self.master, b"\x03")

    def stop_everything(self) -> None:
        """Whatever is still running after the test (a failure) is killed."""
        pids = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", self.output)]
        for pgid in [*pids, self.proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for member in _session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.close_terminal()

    def close_terminal(self) -> None:
        """What closing the terminal's window does: the kernel hangs the terminal up."""
        if self.master is not None:
            self._closing.set()
            self._reader.join(timeout=5)
            os.close(self.master)
            self.master = None


PROCFILE_WORKERS = [name for name in PROCFILE_NAMES if name in {"worker", "long", "maintenance"}]


def _session_members(sid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # pid (comm) state ppid pgrp session
                members.append(int(stat.parent.name))
    return members


@pytest.fixture
def make_run(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run = MakeRun(tmp_path)
    yield run
    run.stop_everything()


def assert_stopped_cleanly(run: MakeRun) -> None:
    out = run.output
    for name in PROCFILE_NAMES:
        assert re.search(rf"{name}\.1 +stopped", out), f"{name} did not stop:\n{out[-5000:]}"
    assert "ERROR" not in out, out[-5000:]
    assert "Traceback" not in out, out[-5000:]
    assert "SIGKILL" not in out, out[-5000:]  # every process stopped within the grace period
    assert "make: ***" not in out, out[-5000:]  # e.g. "make: *** [Makefile:..: run] Error 130"


@pytest.mark.e2e
@pytest.mark.own_stores  # MakeRun leaves the stores out
def test_ctrl_c_stops_make_run_cleanly(make_run):
    make_run.wait_until_ready()

    # The banner names every process of the Procfile.
    banner = next(line for line in make_run.output.splitlines() if "Processes:" in line)
    assert all(re.search(rf"\b{name}\b", banner) for name in PROCFILE_NAMES), banner
    # First run: make wrote the .env manage.py reads outside make.
    assert read_env_file(make_run.env_file)["DEBUG"] == "true"

    make_run.ctrl_c()

    assert make_run.proc.wait(timeout=15) == 0, make_run.output[-5000:]
    assert_stopped_cleanly(make_run)


@pytest.mark.e2e
@pytest.mark.own_stores  # MakeRun leaves the stores out
def test_closing_the_terminal_stops_everything(make_run):
    """Honcho, the terminal's foreground job, died of the hang-up and left the web server,
    the workers and beat running; the next `make run` found its port taken."""
    make_run.wait_until_ready()
    started = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", make_run.output)]
    assert len(started) == len(PROCFILE_NAMES), make_run.output[-5000:]

    make_run.close_terminal()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(started):
        time.sleep(0.2)
    assert not _alive(started), f"still running after the hang-up: {_alive(started)}"
    make_run.proc.wait(timeout=15)


@pytest.mark.e2e
@pytest.mark.own_stores  # MakeRun leaves the stores out
def test_a_run_sent_to_the_background_outlives_its_terminal(tmp_path):
    run = MakeRun(tmp_path, background=True)
    try:
        run.wait_until_ready()
        started = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", run.output)]

        run.close_terminal()  # the shell that started it ends

        time.sleep(5)
        assert _alive(started) == started
    finally:
        run.stop_everything()


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":  # a zombie has ended; its parent has not reaped it yet
                alive.append(pid)
    return alive


@pytest.mark.e2e
@pytest.mark.own_stores  # MakeRun leaves the stores out
def test_sigint_to_makes_process_group_stops_everything(make_run):
    # A SIGINT sent to make's own process group (not through the terminal) reaches make and
    # scripts/run.py, which passes it on to honcho. GNU make then ends itself with the same
    # signal (it always does after an interrupt), silently: no "Error" line.
    make_run.wait_until_ready()

    os.killpg(make_run.proc.pid, signal.SIGINT)

    assert make_run.proc.wait(timeout=15) == -signal.SIGINT, make_run.output[-5000:]
    assert_stopped_cleanly(make_run)


def test_make_runs_web_server_lets_many_connections_wait():
    """Django's development server lets 10 connections wait to be accepted: 50 requests at
    once against ``make run`` had some reset. ``runserver`` is the product's (before
    staticfiles' in INSTALLED_APPS), with a longer queue, serving static files as before."""
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as StaticFilesRunserver,
    )
    from django.core.management import get_commands, load_command_class

    command = load_command_class(get_commands()["runserver"], "runserver")
    assert isinstance(command, StaticFilesRunserver)
    assert command.server_cls.request_queue_size >= 100


@pytest.mark.django_db
def test_make_runs_web_server_closes_each_requests_database_connection():
    """Each request runs in a thread of its own, and its connection was left open for
    CONN_MAX_AGE by a thread that had ended: on PostgreSQL a few bursts of concurrent
    requests held every connection allowed, and the service answered 503 from then on."""
    import socketserver
    import urllib.request

    from django.core.management import get_commands, load_command_class
    from django.core.servers.basehttp import WSGIRequestHandler
    from django.db import connections

    command = load_command_class(get_commands()["runserver"], "runserver")
    # As django.core.servers.basehttp.run builds it for a threaded server.
    server_class = type("WSGIServer", (socketserver.ThreadingMixIn, command.server_cls), {})
    opened, together = [], threading.Barrier(4, timeout=10)

    def app(environ, start_response):
        connections["default"].ensure_connection()
        opened.append(connections["default"])
        together.wait()  # four requests at once, each in its own thread
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = server_class(("127.0.0.1", 0), WSGIRequestHandler, ipv6=False)
    server.set_app(app)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        answers = []
        clients = [
            threading.Thread(target=lambda: answers.append(urllib.request.urlopen(url).read()))
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=15)
        assert answers == [b"ok"] * 4
        assert len({id(wrapper) for wrapper in opened}) == 4
        deadline = time.monotonic() + 5  # closed once each answer is sent
        while any(wrapper.connection is not None for wrapper in opened):
            assert time.monotonic() < deadline, "a request's connection was left open"
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db(transaction=True)  # the user is seen by the server's threads
def test_make_runs_web_server_closes_a_keep_alive_clients_connection_per_request():
    """A client that kept its connection open (HTTP/1.1 keep-alive, most libraries'
    default) kept its thread's database connection for as long: a hundred such clients
    held every connection PostgreSQL allows."""
    import http.client
    import socketserver

    from django.core.management import get_commands, load_command_class
    from django.core.servers.basehttp import WSGIRequestHandler
    from django.db import connections
    from django.db.backends.signals import connection_created
    from rest_framework_simplejwt.tokens import AccessToken

    from backend.users.tests.factories import UserFactory

    token = AccessToken.for_user(UserFactory())
    headers = {"Host": "localhost", "Authorization": f"Bearer {token}"}
    command = load_command_class(get_commands()["runserver"], "runserver")
    kept = {alias: connections.settings[alias].get("CONN_MAX_AGE") for alias in connections}
    opened = []

    def note(sender, connection, **kwargs):
        opened.append(connection)

    server_class = type("WSGIServer", (socketserver.ThreadingMixIn, command.server_cls), {})
    server = server_class(("127.0.0.1", 0), WSGIRequestHandler, ipv6=False)
    client = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=15)
    connection_created.connect(note)
    try:
        server.set_app(command.get_handler(use_static_handler=False, insecure_serving=False))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for _ in range(2):  # two requests on one connection, which stays open
            client.request("GET", "/api/users/me/", headers=headers)
            response = client.getresponse()
            assert response.status == 200 and response.read()
            served = [wrapper for wrapper in opened if wrapper is not connection]
            assert served, "the request opened no database connection"
            deadline = time.monotonic() + 5
            while any(wrapper.connection is not None for wrapper in served):
                assert time.monotonic() < deadline, "the request's connection was kept"
                time.sleep(0.05)
    finally:
        client.close()  # the server's thread ends, and closes what it kept (the old way)
        connection_created.disconnect(note)
        for alias, value in kept.items():
            connections.settings[alias]["CONN_MAX_AGE"] = value
        server.shutdown()
        server.server_close()


def _stub_python(tmp_path: Path) -> Path:
    """A virtualenv whose python only says what DEBUG and ENV_FILE it was given, then its
    arguments."""
    venv = tmp_path / "stub-venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"
    stub.write_text(
        '#!/bin/sh\necho "DEBUG=${DEBUG-unset} ENV_FILE=${ENV_FILE-unset}"\necho "ARGS=$*"\n'
    )
    stub.chmod(0o755)
    (venv / ".installed").touch()
    return venv


@needs_make
def test_make_writes_no_env_file_on_a_deployment(tmp_path):
    """On a server whose environment holds the settings (DJANGO_SECRET_KEY and
    ALLOWED_HOSTS, no DEBUG), ``make superuser`` or ``make migrate`` wrote a .env with
    DEBUG=true, which switched every process started later to debug mode. Their commands
    follow the environment's DEBUG, else the .env's; with neither, a developer's machine
    (a key exported for compose, say) gets DEBUG=true and its .env."""
    env_file = tmp_path / ".env"
    server = {"DJANGO_SECRET_KEY": "from-the-server", "ALLOWED_HOSTS": "tasks.example.com"}

    done = make(f"ENV_FILE={env_file}", str(env_file), **server)
    assert done.returncode == 0, done.stderr
    assert "Not writing" in done.stdout and not env_file.exists()

    stub = _stub_python(tmp_path)

    def ran(*targets, **env) -> str:
        result = make(f"VENV={stub}", f"ENV_FILE={env_file}", *targets, **env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # A deployment: the environment's DEBUG (none: the default, off), and no .env read.
    for target in ("migrate", "superuser"):
        assert "DEBUG=unset ENV_FILE=\n" in ran(target, **server), target
    assert "DEBUG=false ENV_FILE=\n" in ran("migrate", DEBUG="false", **server)
    # make run is a developer's: its migrate runs with DEBUG=true, as its processes do.
    assert ran("run", **server).count("DEBUG=true ENV_FILE=\n") == 2  # migrate, then run
    # A developer without a .env (ENV_FILE= reads none): DEBUG=true.
    assert "DEBUG=true ENV_FILE=\n" in make(f"VENV={stub}", "ENV_FILE=", "migrate").stdout
    # A .env decides when the environment does not, even with a key exported.
    env_file.write_text("DEBUG=false\n")
    assert f"DEBUG=unset ENV_FILE={env_file}" in ran("migrate", DJANGO_SECRET_KEY="dev")
    assert f"DEBUG=true ENV_FILE={env_file}" in ran("migrate", DEBUG="true")
    env_file.write_text("# a comment\n  export DEBUG='off'\n")
    assert f"DEBUG=unset ENV_FILE={env_file}" in ran("migrate")
    # A .env that sets no DEBUG (the README's Docker step writes only a key, and make never
    # writes over it) left DEBUG off, so make migrate refused to run without ALLOWED_HOSTS.
    for content in ("DJANGO_SECRET_KEY=abc\n", "DJANGO_SECRET_KEY=abc\nDEBUG=\n# DEBUG=false\n"):
        env_file.write_text(content)
        for target in ("migrate", "superuser"):
            assert f"DEBUG=true ENV_FILE={env_file}" in ran(target), (content, target)

    # A developer who exported a key only: make writes its .env (DEBUG=true) as ever.
    env_file.unlink()
    developer = make(f"ENV_FILE={env_file}", str(env_file), DJANGO_SECRET_KEY="dev")
    assert developer.returncode == 0, developer.stderr
    assert "DEBUG=true" in env_file.read_text()


@needs_make
def test_make_superuser_runs_without_prompts_when_the_env_file_holds_the_password(tmp_path):
    """.env.example says the DJANGO_SUPERUSER_* variables may be put in the .env; make only
    looked at the environment, so without a terminal createsuperuser skipped the user and
    exited 0, and a script saw success."""
    env_file = tmp_path / ".env"
    stub = _stub_python(tmp_path)

    def superuser(**env) -> str:
        done = make(f"VENV={stub}", f"ENV_FILE={env_file}", "superuser", **env)
        assert done.returncode == 0, done.stderr
        # (Under another make, as in `make test`, make also says which folder it left.)
        return [line for line in done.stdout.splitlines() if line.startswith("ARGS=")][-1]

    env_file.write_text("DEBUG=true\n")
    assert superuser() == "ARGS=manage.py createsuperuser"
    assert superuser(DJANGO_SUPERUSER_PASSWORD="x") == "ARGS=manage.py createsuperuser --noinput"
    env_file.write_text(
        "DEBUG=true\nDJANGO_SUPERUSER_USERNAME=ops\nDJANGO_SUPERUSER_PASSWORD='p w'\n"
    )
    assert superuser() == "ARGS=manage.py createsuperuser --noinput"
    env_file.write_text(
        "DEBUG=true\n# DJANGO_SUPERUSER_PASSWORD=commented\nDJANGO_SUPERUSER_PASSWORD=\n"
    )
    assert superuser() == "ARGS=manage.py createsuperuser"
