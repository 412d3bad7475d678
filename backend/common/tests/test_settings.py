"""Start-up refuses bad configuration with a message naming the variable (CONVENTIONS)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]

# Each starts a process with an environment of its own (start_django): the same whatever
# stores the suite is given.
pytestmark = pytest.mark.own_stores


def start_django(
    tmp_path: Path, *, code: str = "", **overrides: str | None
) -> subprocess.CompletedProcess:
    """Run ``django.setup()`` (then ``code``) in a fresh interpreter with a minimal, valid
    environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "ENV_FILE": "",  # a developer's .env is not read
        "VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "a-secret-for-this-test-only",
        "ALLOWED_HOSTS": "localhost",
    }
    env.update(overrides)
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup()\n{code}"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_up_error(result: subprocess.CompletedProcess) -> str:
    """The message of the ``ImproperlyConfigured`` that stopped start-up ("" if none).

    Only the message counts: the traceback quotes settings.py, which names every variable.
    """
    marker = "ImproperlyConfigured: "
    _, found, message = result.stderr.rpartition(marker)
    return message if found else ""


def test_an_env_file_that_is_not_there_is_named(tmp_path):
    """It was skipped without a word, and start-up then blamed the secret key."""
    result = start_django(tmp_path, ENV_FILE=str(tmp_path / "missing.env"))
    assert result.returncode != 0
    assert start_up_error(result).startswith("ENV_FILE names no file:")


def test_valid_environment_starts(tmp_path):
    result = start_django(tmp_path)

    assert result.returncode == 0, result.stderr


def test_the_web_process_loads_its_middleware_first(tmp_path):
    """A web process imports its middleware on its first request, before any view: a
    middleware importing the API's exception handler (which imports DRF's views, which
    import the parsers named in the settings, which import that handler's module) failed
    to load in a circle, so every request of that process was a 500."""
    result = start_django(
        tmp_path,
        code="from django.test import Client\n"
        "c = Client(HTTP_HOST='localhost')\n"
        "r = c.get('/health/?' + '&'.join(['a=1'] * 1001))\n"
        "print(r.status_code, r.json()['code'])\n"
        "print(c.options('/api/files/').status_code)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["400", "too_many_fields", "401"]


@pytest.mark.parametrize("debug", ["true", "false"])
def test_a_4xx_warning_is_logged_once(tmp_path, debug):
    """With DEBUG on, Django's own console handler printed each record of ``django.*`` a
    second time beside the project's handler (a 403's traceback twice)."""
    code = "import logging; logging.getLogger('django.request').warning('Not Found: /nope-xyz')"
    result = start_django(tmp_path, code=code, DEBUG=debug)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Not Found: /nope-xyz") == 1, result.stderr


def test_debug_may_run_without_a_secret_key(tmp_path):
    result = start_django(tmp_path, DEBUG="true", DJANGO_SECRET_KEY=None, ALLOWED_HOSTS=None)

    assert result.returncode == 0, result.stderr


# Never connected to: start-up only reads the URL.
POSTGRES = "postgres://tasks@127.0.0.1:9/tasks"

BAD_VALUES = [
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
    ({"DJANGO_SECRET_KEY": None, "DEBUG": "false"}, "DJANGO_SECRET_KEY"),
    ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
    ({"MAX_ACTIVE_TASKS": "abc"}, "MAX_ACTIVE_TASKS"),
    ({"MAX_ACTIVE_TASKS": "0"}, "MAX_ACTIVE_TASKS"),
    ({"THROTTLE_AUTH_RATE": "fast"}, "THROTTLE_AUTH_RATE"),
    ({"THROTTLE_AUTH_RATE": "0/min"}, "THROTTLE_AUTH_RATE"),
    ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
    ({"DATABASE_URL": "garbage"}, "DATABASE_URL"),
    ({"CELERY_BROKER_URL": "nonsense://x"}, "CELERY_BROKER_URL"),
    ({"DATABASE_URL": POSTGRES, "DATABASE_PREPARE_THRESHOLD": "-1"}, "DATABASE_PREPARE_THRESHOLD"),
    ({"PORT": "0"}, "PORT"),
    # Out of Python's range of times: a traceback at start-up, or at every cleanup.
    ({"FILE_RETENTION_DAYS": "1000000"}, "FILE_RETENTION_DAYS"),
    ({"FILE_CLEANUP_INTERVAL": "1000000000000000"}, "FILE_CLEANUP_INTERVAL"),
    ({"JWT_REFRESH_DAYS": "99999999999"}, "JWT_REFRESH_DAYS"),
    ({"PORT": "eighty"}, "PORT"),
    # Numbers of seconds were read after dropping what is not a digit, ",", "." or "-".
    ({"BROKER_PUBLISH_TIMEOUT": "1e1x"}, "BROKER_PUBLISH_TIMEOUT"),
    ({"BROKER_PUBLISH_TIMEOUT": "2 s"}, "BROKER_PUBLISH_TIMEOUT"),
    ({"BROKER_BREAKER_SECONDS": "1,000"}, "BROKER_BREAKER_SECONDS"),
    ({"CACHE_TIMEOUT": "abc"}, "CACHE_TIMEOUT"),
    ({"CACHE_TIMEOUT": "0"}, "CACHE_TIMEOUT"),
    ({"HEALTH_CHECK_TIMEOUT": "nan"}, "HEALTH_CHECK_TIMEOUT"),
    ({"OPS_WORKERS_CACHE_SECONDS": "-1"}, "OPS_WORKERS_CACHE_SECONDS"),
    ({"TASK_OUTCOME_LINGER": "-0.1"}, "TASK_OUTCOME_LINGER"),
    ({"TASK_OUTCOME_LINGER": "6"}, "TASK_OUTCOME_LINGER"),
    # Taken, and every webhook cut at 30 s (an outbound call's bound) all the same.
    ({"NOTIFY_WEBHOOK_TIMEOUT": "60"}, "NOTIFY_WEBHOOK_TIMEOUT must be an integer from 1 to 30"),
    # Each was taken as it was (or, VAR_DIR, stopped start-up with a traceback).
    ({"VAR_DIR": "/proc/no-folder-here"}, "VAR_DIR"),
    # Each stopped start-up (or the first use of the cache) with a traceback.
    ({"BROKER_FOLDER": "/proc/no-folder-here"}, "BROKER_FOLDER"),
    ({"BROKER_FOLDER": "/etc/hostname"}, "BROKER_FOLDER"),
    ({"MEDIA_ROOT": "/etc/hostname"}, "MEDIA_ROOT"),  # started, then every upload was a 500
    ({"MEDIA_ROOT": "/proc"}, "MEDIA_ROOT"),  # a folder, but not one this process writes to
    ({"VAR_DIR": "/proc"}, "VAR_DIR"),
    ({"CACHE_URL": "memcache://127.0.0.1:11211"}, "CACHE_URL"),
    ({"CACHE_URL": "pymemcache://127.0.0.1:11211"}, "CACHE_URL"),
    ({"DATABASE_URL": POSTGRES, "CONN_MAX_AGE": "-7"}, "CONN_MAX_AGE"),
    ({"PUBLIC_BASE_URL": "notaurl"}, "PUBLIC_BASE_URL"),
    ({"PUBLIC_BASE_URL": "ftp://tasks.example.com"}, "PUBLIC_BASE_URL"),
    ({"PUBLIC_BASE_URL": "https://tasks.example.com:99999"}, "PUBLIC_BASE_URL"),
    ({"DEFAULT_FROM_EMAIL": "bad"}, "DEFAULT_FROM_EMAIL"),
    ({"DEFAULT_FROM_EMAIL": "Tasks <no at sign>"}, "DEFAULT_FROM_EMAIL"),
    # Every send refused these ("only a@b.com could be parsed").
    ({"DEFAULT_FROM_EMAIL": "a@b.com, c@d.com"}, "DEFAULT_FROM_EMAIL"),
    ({"DEFAULT_FROM_EMAIL": "Tasks <a@b.com> trailing"}, "DEFAULT_FROM_EMAIL"),
]


def test_a_var_dir_nothing_writes_to_may_be_read_only(tmp_path):
    """With PostgreSQL, Redis and MEDIA_ROOT elsewhere nothing writes to VAR_DIR (a
    read-only container's): a check that wrote to it stopped every process. With SQLite,
    whose file is in VAR_DIR, it must be writable."""
    elsewhere = {"VAR_DIR": "/proc", "MEDIA_ROOT": str(tmp_path / "media")}  # /proc: no
    # process writes there, root's included
    served = start_django(
        tmp_path, DATABASE_URL=POSTGRES, CELERY_BROKER_URL="redis://127.0.0.1:9/0", **elsewhere
    )
    assert served.returncode == 0, served.stderr
    refused = start_django(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:9/0", **elsewhere)
    assert "VAR_DIR" in start_up_error(refused), refused.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        {"PUBLIC_BASE_URL": "https://tasks.example.com/base/"},
        {"PUBLIC_BASE_URL": "http://[::1]:8000"},
        {"DEFAULT_FROM_EMAIL": "noreply@example.com"},
        {"DEFAULT_FROM_EMAIL": '"Tasks, Inc." <noreply@example.com>'},
        {"DEFAULT_FROM_EMAIL": "tasks@mailhost"},  # an internal relay's single-label name
        {"DATABASE_URL": POSTGRES, "CONN_MAX_AGE": "0"},
        # Every cache the service runs with (none is connected to at start-up).
        {"CACHE_URL": "rediscache://127.0.0.1:9/1"},
        {"CACHE_URL": "redis://127.0.0.1:9/1"},
        {"CACHE_URL": "rediss://127.0.0.1:9/1"},
        {"CACHE_URL": "filecache:///tmp/atm-settings-test-cache"},
        {"CACHE_URL": "dummycache://"},
    ],
)
def test_good_values_of_the_checked_settings_start(tmp_path, overrides):
    result = start_django(tmp_path, **overrides)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "named"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in overrides.items()) for overrides, _ in BAD_VALUES],
)
def test_bad_value_stops_start_up_naming_the_variable(tmp_path, overrides, named):
    result = start_django(tmp_path, **overrides)

    assert result.returncode != 0
    assert named in start_up_error(result), result.stderr


DATABASE_OPTIONS = (
    "from django.conf import settings; "
    "options = settings.DATABASES['default']['OPTIONS']; "
    "print(options['server_side_binding'], options['prepare_threshold'])"
)


@pytest.mark.parametrize(
    ("overrides", "printed"),
    [
        ({}, "True 5"),
        ({"DATABASE_PREPARE_THRESHOLD": "0"}, "True 0"),
        # Behind a pooler that cannot keep prepared statements, none are prepared.
        (
            {"DATABASE_SERVER_SIDE_BINDING": "false", "DATABASE_PREPARE_THRESHOLD": "3"},
            "False None",
        ),
    ],
)
def test_postgresql_prepares_what_it_repeats_unless_binding_is_off(tmp_path, overrides, printed):
    result = start_django(tmp_path, code=DATABASE_OPTIONS, DATABASE_URL=POSTGRES, **overrides)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == printed.split()


def test_a_postgresql_that_never_answers_is_an_error_not_a_wait(tmp_path):
    """libpq waits for ever on a server that takes the connection and says nothing (a hung
    PostgreSQL): each request hung until gunicorn killed its worker (an empty reply)."""
    import socket

    code = (
        "from django.conf import settings\n"
        "from django.db import OperationalError, connection\n"
        "print(settings.DATABASES['default']['OPTIONS']['connect_timeout'])\n"
        "try:\n"
        "    connection.ensure_connection()\n"
        "except OperationalError as exc:\n"
        "    print('OperationalError', exc)\n"
    )
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # takes connections, never answers
        url = f"postgres://tasks@127.0.0.1:{hung.getsockname()[1]}/tasks"
        default = start_django(tmp_path, code=code.split("try:")[0], DATABASE_URL=url)
        given = start_django(tmp_path, code=code, DATABASE_URL=url + "?connect_timeout=1")
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == "10"
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines()[0] == "1"
    assert given.stdout.splitlines()[1].startswith("OperationalError")


def test_a_whole_number_that_is_not_one_is_said_so_plainly(tmp_path):
    """It was "has an invalid value: invalid literal for int() with base 10: '50MB'"."""
    result = start_django(tmp_path, MAX_UPLOAD_SIZE="50MB")
    assert start_up_error(result).rstrip() == (
        f"Environment variable MAX_UPLOAD_SIZE must be an integer from 1 to {2**63 - 1}, got '50MB'"
    ), result.stderr


def test_a_number_of_seconds_reads_as_python_writes_it(tmp_path):
    result = start_django(
        tmp_path,
        BROKER_PUBLISH_TIMEOUT="5e-1",
        OPS_QUEUE_DEPTH_CACHE_SECONDS="0",
        code="from django.conf import settings; "
        "print(settings.BROKER_PUBLISH_TIMEOUT, settings.OPS_QUEUE_DEPTH_CACHE_SECONDS)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.5", "0.0"]


def test_host_lists_are_trimmed_and_checked(tmp_path):
    """ "a, b" kept " b", which no Host or Origin ever matches, and a scheme or port in a
    host name passed unnoticed: a deployment refused its own requests with 400 or 403."""
    result = start_django(
        tmp_path,
        DEBUG="false",
        ALLOWED_HOSTS="tasks.example.com, api.example.com,,.example.org, [::1], 10.0.0.5",
        CSRF_TRUSTED_ORIGINS="https://tasks.example.com, https://*.example.org, http://[::1]:8000",
        code="from django.conf import settings\n"
        "print(settings.ALLOWED_HOSTS)\nprint(settings.CSRF_TRUSTED_ORIGINS)",
    )
    assert result.returncode == 0, result.stderr
    hosts, origins = result.stdout.splitlines()
    assert hosts == "['tasks.example.com', 'api.example.com', '.example.org', '[::1]', '10.0.0.5']"
    assert origins == "['https://tasks.example.com', 'https://*.example.org', 'http://[::1]:8000']"

    # In the form Django compares them in: a Host lower case without its trailing dot, an
    # Origin lower case (a mixed-case entry never matched a browser's Origin).
    result = start_django(
        tmp_path,
        DEBUG="false",
        ALLOWED_HOSTS="Web.Example.com.",
        CSRF_TRUSTED_ORIGINS="HTTPS://Admin.Example.com",
        DJANGO_SECRET_KEY_FALLBACKS="old-key-1, old-key-2",
        OUTBOUND_ALLOWED_NETWORKS="10.0.0.0/8, 192.168.0.0/16",
        code="from django.conf import settings\n"
        "print(settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS)\n"
        "print(settings.SECRET_KEY_FALLBACKS, settings.OUTBOUND_ALLOWED_NETWORKS)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['web.example.com'] ['https://admin.example.com']",
        "['old-key-1', 'old-key-2'] ['10.0.0.0/8', '192.168.0.0/16']",
    ]

    for name, value in [
        ("ALLOWED_HOSTS", "https://tasks.example.com"),
        ("ALLOWED_HOSTS", "tasks.example.com:443"),
        ("ALLOWED_HOSTS", "tasks.example.com/api"),
        ("ALLOWED_HOSTS", "a..b"),
        ("ALLOWED_HOSTS", "..."),
        ("CSRF_TRUSTED_ORIGINS", "tasks.example.com"),
        ("CSRF_TRUSTED_ORIGINS", "https://tasks.example.com/"),
    ]:
        result = start_django(tmp_path, DEBUG="false", **{name: value})
        assert result.returncode != 0, (name, value)
        assert start_up_error(result).startswith(
            f"Environment variable {name} has an invalid item {value.lower()!r}"
        ), result.stderr


def _without_a_secret_key(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The project's Python with ``args`` in an environment that lacks a required setting
    (DEBUG off, no DJANGO_SECRET_KEY)."""
    return subprocess.run(
        [sys.executable, *args],
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "ENV_FILE": "",
            "VAR_DIR": str(tmp_path),
            "DEBUG": "false",
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_web_application_refuses_a_bad_setting_in_one_line(tmp_path):
    """Under gunicorn a bad setting printed a long traceback, its message near the end."""
    result = _without_a_secret_key(tmp_path, "-c", "import backend.wsgi")
    assert result.returncode == 3  # gunicorn's "worker failed to boot": it stops
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Configuration error: DJANGO_SECRET_KEY is required")


def test_a_setting_set_but_empty_counts_as_unset(tmp_path):
    """``MAX_ACTIVE_TASKS=`` (an emptied line of a .env, which compose passes on) stopped
    every process, where an empty text, flag or number of seconds took its default."""
    result = start_django(
        tmp_path,
        MAX_ACTIVE_TASKS="",
        JWT_ACCESS_MINUTES=" ",
        DJANGO_SECRET_KEY_FALLBACKS="",
        code="from django.conf import settings\n"
        "print(settings.MAX_ACTIVE_TASKS, settings.SECRET_KEY_FALLBACKS)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "[]"]


@pytest.mark.parametrize("command", [["worker"], ["beat"]])
def test_celery_refuses_a_bad_setting_in_one_line(tmp_path, command):
    """The worker and beat printed a long traceback with the message on its last line."""
    result = _without_a_secret_key(tmp_path, "-m", "celery", "-A", "backend", *command)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "Configuration error: DJANGO_SECRET_KEY is required when DEBUG is off (for local "
        "development set DEBUG=true, e.g. in .env, which `make run` writes)."
    )


def test_a_variable_set_empty_leaves_the_env_files_value(tmp_path):
    """An exported empty variable hid the .env's value: ``DEBUG= make migrate`` ran without
    the .env's DEBUG=true, and an emptied MAX_ACTIVE_TASKS took the default over the file's."""
    env_file = tmp_path / "settings.env"
    env_file.write_text("DEBUG=true\nMAX_ACTIVE_TASKS=3\n")
    result = start_django(
        tmp_path,
        ENV_FILE=str(env_file),
        DEBUG="",
        MAX_ACTIVE_TASKS="",
        ALLOWED_HOSTS=None,
        DJANGO_SECRET_KEY=None,
        code="from django.conf import settings\nprint(settings.DEBUG, settings.MAX_ACTIVE_TASKS)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "3"]


def test_relative_folders_are_taken_from_the_top_level(tmp_path):
    """`VAR_DIR=./var` (as .env.example shows), a relative SQLite file or file cache were
    taken from the folder a process started in: `python /app/manage.py` run from elsewhere
    used another database and broker."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    top = PROJECT_ROOT.resolve()
    relative = os.path.relpath(tmp_path, top)
    result = subprocess.run(
        [
            sys.executable,
            str(top / "manage.py"),
            "shell",
            "--verbosity=0",
            "-c",
            "from django.conf import settings as s\n"
            "print(s.VAR_DIR, s.MEDIA_ROOT, s.BROKER_FOLDER, s.EMAIL_FILE_PATH, "
            "s.DATABASES['default']['NAME'], s.CACHES['default']['LOCATION'], sep='\\n')",
        ],
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "ENV_FILE": "",
            "DJANGO_SECRET_KEY": "a-secret-for-this-test-only",
            "ALLOWED_HOSTS": "localhost",
            "VAR_DIR": f"./{relative}/var",
            "MEDIA_ROOT": f"{relative}/media",
            "BROKER_FOLDER": f"{relative}/broker",
            "EMAIL_URL": f"filemail://{relative}/mail",
            "DATABASE_URL": f"sqlite:///{relative}/db.sqlite3",
            "CACHE_URL": f"filecache://{relative}/cache",
        },
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(tmp_path.resolve() / name)
        for name in ("var", "media", "broker", "mail", "db.sqlite3", "cache")
    ]
    assert not any(elsewhere.iterdir())
