"""EMAIL_URL and the other email and schedule settings, read at start-up, and the plain
account of a failed send."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.common import email
from backend.common.email import EmailDeliveryError, describe_failure, send_email

from .smtpd import SMTPServer

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


@pytest.mark.own_stores
def test_defaults(tmp_path):
    values = settings_of(start(tmp_path))
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert values["EMAIL_TIMEOUT"] == 10 and values["EMAIL_TASK_MAX_RECIPIENTS"] == 10
    assert values["DEFAULT_FROM_EMAIL"] == "Async Task Manager <noreply@localhost>"
    assert values["SCHEDULE_MIN_INTERVAL"] == 60 and values["MAX_SCHEDULES_PER_USER"] == 20


@pytest.mark.own_stores
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
    assert values["EMAIL_BACKEND"] == "backend.common.email.SMTPBackend"
    assert (values["EMAIL_HOST"], values["EMAIL_PORT"]) == ("127.0.0.1", 2587)
    assert values["EMAIL_HOST_USER"] == "mailer@example.com"
    assert values["EMAIL_HOST_PASSWORD"] == SECRET
    assert values["EMAIL_USE_TLS"] is True and values["EMAIL_USE_SSL"] is False
    assert values["DEFAULT_FROM_EMAIL"] == "Tasks <tasks@example.com>"
    assert (values["EMAIL_TIMEOUT"], values["EMAIL_TASK_MAX_RECIPIENTS"]) == (3, 4)
    assert (values["SCHEDULE_MIN_INTERVAL"], values["MAX_SCHEDULES_PER_USER"]) == (5, 3)


@pytest.mark.own_stores
def test_smtp_without_port_or_login_keeps_djangos_defaults(tmp_path):
    values = settings_of(start(tmp_path, EMAIL_URL="smtp://127.0.0.1"))
    assert (values["EMAIL_PORT"], values["EMAIL_HOST_USER"], values["EMAIL_HOST_PASSWORD"]) == (
        25,
        "",
        "",
    )
    values = settings_of(start(tmp_path, EMAIL_URL="smtp+ssl://127.0.0.1:2465"))
    assert values["EMAIL_USE_SSL"] is True and values["EMAIL_USE_TLS"] is False


@pytest.mark.own_stores
def test_filemail_writes_where_the_url_says(tmp_path):
    values = settings_of(start(tmp_path, EMAIL_URL=f"filemail://{tmp_path}/outbox"))
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert values["EMAIL_FILE_PATH"] == str(tmp_path / "outbox")
    values = settings_of(start(tmp_path, EMAIL_URL="filemail://"))
    assert values["EMAIL_FILE_PATH"] == str(tmp_path.resolve() / "mail")


@pytest.mark.own_stores
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
    settings.EMAIL_BACKEND = "backend.common.email.SMTPBackend"
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


@pytest.mark.parametrize(
    ("error", "may_pass"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (socket.gaierror(-3, "Temporary failure in name resolution"), True),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPConnectError(421, BANNER), True),
        (smtplib.SMTPSenderRefused(451, BANNER, "me@x.org"), True),
        (smtplib.SMTPDataError(452, BANNER), True),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (450, b"busy"), "b@x.org": (451, b"")}), True),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (450, b"busy"), "b@x.org": (550, b"")}), False),
        (smtplib.SMTPDataError(554, BANNER), False),
        (smtplib.SMTPAuthenticationError(535, BANNER), False),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), False),
        (smtplib.SMTPException("No suitable authentication method found."), False),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
    ],
)  # fmt: skip
def test_which_send_failures_may_pass(error, may_pass):
    assert email.passing(error) is may_pass


def test_a_backend_that_is_not_smtp_is_named(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_URL = "filemail:///nowhere"
    described = describe_failure(PermissionError(13, "Permission denied"))
    assert described == "the email backend (filemail) failed: Permission denied"


# --- the whole send is bounded ----------------------------------------------------------


class Dribbler:
    """A mail server on loopback that answers promptly up to a point, then sends its reply
    a few bytes at a time, each well within EMAIL_TIMEOUT, for as long as ``lasts``."""

    def __init__(
        self,
        *,
        prompt: bytes,
        dribble: bytes,
        after: bytes = b"",
        lasts: float = 20,
        tls: ssl.SSLContext | None = None,
    ):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.prompt, self.dribble, self.after, self.lasts = prompt, dribble, after, lasts
        self.tls = tls
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        if self.tls:
            conn = self.tls.wrap_socket(conn, server_side=True)
        with conn:
            conn.sendall(self.prompt)
            if self.after:
                conn.recv(1024)  # the client's EHLO
            conn.sendall(self.after)
            until = time.monotonic() + self.lasts
            try:
                while time.monotonic() < until:
                    conn.sendall(self.dribble)
                    time.sleep(0.2)
            except OSError:
                pass  # the client gave up

    def __enter__(self) -> Dribbler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()
        self.thread.join(timeout=30)


@pytest.fixture
def bounded(settings, monkeypatch):
    """SMTP to 127.0.0.1 with EMAIL_TIMEOUT 1 s and the whole send bounded at 2 s."""
    settings.EMAIL_BACKEND = "backend.common.email.SMTPBackend"
    settings.EMAIL_HOST, settings.EMAIL_TIMEOUT = "127.0.0.1", 1
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    monkeypatch.setattr(email, "SMTP_WAITS", 2)
    return settings


def send_to(settings, server: Dribbler) -> str:
    settings.EMAIL_PORT = server.port
    with pytest.raises(EmailDeliveryError) as failed:
        send_email(to=["ann@example.com"], subject="Hello", body="Body")
    return str(failed.value)


@pytest.mark.parametrize(
    "server",
    [
        # a greeting of continuation lines that never ends
        {"prompt": b"220-relay\r\n", "dribble": b"220-still here\r\n"},
        # a greeting, then an EHLO reply a byte at a time
        {"prompt": b"220 relay ESMTP\r\n", "after": b"250-relay", "dribble": b"x"},
    ],
    ids=["greeting", "ehlo"],
)
def test_a_server_dribbling_its_replies_is_cut_off_at_the_sends_budget(bounded, server):
    with Dribbler(**server) as dribbler:
        started = time.monotonic()
        error = send_to(bounded, dribbler)
        took = time.monotonic() - started
    assert error == (
        f"the mail server at 127.0.0.1:{dribbler.port} did not finish within 2 s "
        "(2 x EMAIL_TIMEOUT)"
    )
    assert took < 10  # it dribbles for 20 s: unbounded, the send would have lasted that long


def test_replies_dribbled_over_smtps_are_cut_off_too(bounded, tmp_path, monkeypatch):
    """Each TLS record comes at once, so only the send's budget ends this."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this server alone
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    bounded.EMAIL_USE_SSL = True
    with Dribbler(prompt=b"220-relay\r\n", dribble=b"220-still here\r\n", tls=server_side) as d:
        error = send_to(bounded, d)
    assert (
        error
        == f"the mail server at 127.0.0.1:{d.port} did not finish within 2 s (2 x EMAIL_TIMEOUT)"
    )


def test_a_send_within_its_budget_is_untouched_and_the_budget_does_not_linger(bounded):
    with SMTPServer() as smtp:
        bounded.EMAIL_PORT = smtp.port
        assert send_email(to=["ann@example.com"], subject="Hello", body="Body") == (1, {})
    assert [m.recipients for m in smtp.messages] == [["ann@example.com"]]
    assert email._deadline.get() is None  # no socket outside send_email keeps to it


def test_an_address_with_a_control_character_stored_before_is_not_sent(bounded):
    """An account's email taken before such addresses were refused: the send failed with
    HeaderParseError, outside what a failed send raises (a traceback in the worker, as a
    bug), or went out with its To: split in two lines."""
    with SMTPServer() as smtp:
        bounded.EMAIL_PORT = smtp.port
        for address in (
            '"a\x0bX-Injected:1"@example.com',
            '"a\x0cb"@example.com',
            '"a\x01b"@x.org',
        ):
            with pytest.raises(EmailDeliveryError, match="cannot be written in a mail"):
                send_email(to=["ann@example.com", address], subject="Hello", body="Body")
    assert smtp.messages == []


@pytest.mark.parametrize(
    "address", ['"a\x0bb"@example.com', '"a\x01b"@example.com', "a@b\u2028c.example.com"]
)
def test_address_refusal_names_control_characters_and_line_breaks(address):
    assert email.address_refusal(address) == email.CONTROL_CHARACTERS
    assert email.address_refusal("ann@example.com") is None


@pytest.mark.parametrize(
    ("code", "text", "for_good"),
    [
        (550, b"5.1.1 The email account that you tried to reach does not exist.", True),
        (550, b"5.1.1 <x@example.com>: Recipient address rejected\n5.1.1 User unknown", True),
        (550, b"#5.1.0 Address rejected.", True),
        (511, b"sorry, no mailbox here by that name (#5.1.1)", True),  # qmail
        (550, b"5.2.1 The email account that you tried to reach is disabled.", True),
        (553, b"sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", False),
        (554, b"5.7.1 <x@example.com>: Relay access denied", False),
        (550, b"relay not permitted", False),  # Exim: no enhanced status
        (550, b"relay not permitted for <x5.1.1@example.com>", False),
        (554, b"blocked; see https://bl.example/q?r=5.1.1", False),
        (550, b"Rejected by policy filter v5.1.1 (relaying denied)", False),
        (552, b"5.2.2 Mailbox full", False),
        (550, b"5.4.1 Recipient address rejected: Access denied", False),
        (450, b"4.1.1 Try again later", False),
    ],
)
def test_a_refusal_is_the_addresss_only_when_its_enhanced_status_says_so(code, text, for_good):
    """Status-like numbers elsewhere in a reply (an address, a link, a version) were read as
    its status: a relay's refusal failed every notification at once."""
    assert email._address_refused(code, text) is for_good
