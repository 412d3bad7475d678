"""EMAIL_URL and the other email and schedule settings, read at start-up, and the plain
account of a failed send."""

import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from backend.common.email import describe_failure

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHOWN = (
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD",
    "EMAIL_USE_TLS", "EMAIL_USE_SSL", "EMAIL_FILE_PATH", "EMAIL_TIMEOUT", "DEFAULT_FROM_EMAIL",
    "EMAIL_TASK_MAX_RECIPIENTS", "SCHEDULE_MIN_INTERVAL", "MAX_SCHEDULES_PER_USER",
)  # fmt: skip
SECRET = "s3cr3t-Pa55"


def start(tmp_path, **variables) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "ENV_FILE": "",  # a developer's .env is not read
        "VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "a-secret-for-this-test-only",
        "ALLOWED_HOSTS": "localhost",
        **variables,
    }
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name) for name in {SHOWN!r}}}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_up_error(result) -> str:
    assert result.returncode != 0
    _, found, message = result.stderr.rpartition("ImproperlyConfigured: ")
    assert found, result.stderr
    return message


def test_defaults(tmp_path):
    values = settings_of(start(tmp_path))
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert values["EMAIL_TIMEOUT"] == 10 and values["EMAIL_TASK_MAX_RECIPIENTS"] == 10
    assert values["DEFAULT_FROM_EMAIL"] == "Async Task Manager <noreply@localhost>"
    assert values["SCHEDULE_MIN_INTERVAL"] == 60 and values["MAX_SCHEDULES_PER_USER"] == 20


def test_an_smtp_url(tmp_path):
    values = settings_of(
        start(
            tmp_path,
            EMAIL_URL=f"smtp+tls://mailer%40example.com:{SECRET}@127.0.0.1:2587",
            DEFAULT_FROM_EMAIL="Tasks <tasks@example.com>",
            EMAIL_TIMEOUT="3",
            EMAIL_TASK_MAX_RECIPIENTS="4",
            SCHEDULE_MIN_INTERVAL="5",
            MAX_SCHEDULES_PER_USER="3",
        )
    )
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (values["EMAIL_HOST"], values["EMAIL_PORT"]) == ("127.0.0.1", 2587)
    assert values["EMAIL_HOST_USER"] == "mailer@example.com"
    assert values["EMAIL_HOST_PASSWORD"] == SECRET
    assert values["EMAIL_USE_TLS"] is True and values["EMAIL_USE_SSL"] is False
    assert values["DEFAULT_FROM_EMAIL"] == "Tasks <tasks@example.com>"
    assert (values["EMAIL_TIMEOUT"], values["EMAIL_TASK_MAX_RECIPIENTS"]) == (3, 4)
    assert (values["SCHEDULE_MIN_INTERVAL"], values["MAX_SCHEDULES_PER_USER"]) == (5, 3)


def test_smtp_without_port_or_login_keeps_djangos_defaults(tmp_path):
    values = settings_of(start(tmp_path, EMAIL_URL="smtp://127.0.0.1"))
    assert (values["EMAIL_PORT"], values["EMAIL_HOST_USER"], values["EMAIL_HOST_PASSWORD"]) == (
        25,
        "",
        "",
    )
    values = settings_of(start(tmp_path, EMAIL_URL="smtp+ssl://127.0.0.1:2465"))
    assert values["EMAIL_USE_SSL"] is True and values["EMAIL_USE_TLS"] is False


def test_filemail_writes_where_the_url_says(tmp_path):
    values = settings_of(start(tmp_path, EMAIL_URL=f"filemail://{tmp_path}/outbox"))
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert values["EMAIL_FILE_PATH"] == str(tmp_path / "outbox")
    values = settings_of(start(tmp_path, EMAIL_URL="filemail://"))
    assert values["EMAIL_FILE_PATH"] == str(tmp_path.resolve() / "mail")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"EMAIL_URL": f"smpt://user:{SECRET}@127.0.0.1:25"}, "EMAIL_URL"),
        ({"EMAIL_URL": f"user:{SECRET}@127.0.0.1"}, "EMAIL_URL"),
        ({"EMAIL_URL": f"smtp://user:{SECRET}@:25"}, "EMAIL_URL"),
        ({"EMAIL_URL": f"smtp://user:{SECRET}@127.0.0.1:port"}, "EMAIL_URL"),
        ({"EMAIL_TIMEOUT": "0"}, "EMAIL_TIMEOUT"),
        ({"EMAIL_TASK_MAX_RECIPIENTS": "many"}, "EMAIL_TASK_MAX_RECIPIENTS"),
        ({"SCHEDULE_MIN_INTERVAL": "0"}, "SCHEDULE_MIN_INTERVAL"),
        ({"MAX_SCHEDULES_PER_USER": "-1"}, "MAX_SCHEDULES_PER_USER"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(tmp_path, variables, named):
    message = start_up_error(start(tmp_path, **variables))
    assert named in message
    assert SECRET not in message


# --- describing failures ----------------------------------------------------------------


@pytest.fixture
def smtp_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "mx.example", 25, 7
    return settings


BANNER = "ESMTP Postfix 3.1.4 (internal-host-42)"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (smtplib.SMTPAuthenticationError(535, BANNER), "refused the login in EMAIL_URL (SMTP 535)"),
        (smtplib.SMTPConnectError(421, BANNER), "refused the connection (SMTP 421)"),
        (smtplib.SMTPSenderRefused(553, BANNER, "me@x.org"), "sender address me@x.org (SMTP 553)"),
        (smtplib.SMTPDataError(554, BANNER), "refused the message (SMTP 554)"),
        (smtplib.SMTPHeloError(501, BANNER), "answered with an error (SMTP 501)"),
        (smtplib.SMTPNotSupportedError(BANNER), "does not support what EMAIL_URL asks"),
        (smtplib.SMTPServerDisconnected(BANNER), "closed the connection unexpectedly"),
        (ssl.SSLError(1, BANNER), "TLS handshake"),
        (TimeoutError(BANNER), "did not answer within 7 s"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, BANNER), "could not resolve the mail server's host name 'mx.example'"),
        (smtplib.SMTPException(BANNER), "failed (SMTPException)"),
        (OSError(113, "No route to host"), "could not reach the mail server at mx.example:25: No route to host"),
    ],
)  # fmt: skip
def test_failures_are_described_without_the_servers_words(smtp_settings, error, expected):
    described = describe_failure(error)
    assert expected in described
    assert BANNER not in described


def test_a_backend_that_is_not_smtp_is_named(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_URL = "filemail:///nowhere"
    described = describe_failure(PermissionError(13, "Permission denied"))
    assert described == "the email backend (filemail) failed: Permission denied"
