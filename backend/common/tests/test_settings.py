"""Start-up refuses bad configuration with a message naming the variable (CONVENTIONS)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def start_django(tmp_path: Path, **overrides: str | None) -> subprocess.CompletedProcess:
    """Run ``django.setup()`` in a fresh interpreter with a minimal, valid environment."""
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
        [sys.executable, "-c", "import django; django.setup()"],
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


def test_valid_environment_starts(tmp_path):
    result = start_django(tmp_path)

    assert result.returncode == 0, result.stderr


def test_debug_may_run_without_a_secret_key(tmp_path):
    result = start_django(tmp_path, DEBUG="true", DJANGO_SECRET_KEY=None, ALLOWED_HOSTS=None)

    assert result.returncode == 0, result.stderr


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
    ({"PORT": "0"}, "PORT"),
    ({"PORT": "eighty"}, "PORT"),
]


@pytest.mark.parametrize(
    ("overrides", "named"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in overrides.items()) for overrides, _ in BAD_VALUES],
)
def test_bad_value_stops_start_up_naming_the_variable(tmp_path, overrides, named):
    result = start_django(tmp_path, **overrides)

    assert result.returncode != 0
    assert named in start_up_error(result), result.stderr
