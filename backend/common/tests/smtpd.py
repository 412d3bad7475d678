"""A real SMTP server on loopback for tests (aiosmtpd), recording what it receives.

Its banner and its refusals carry text that must never reach a task's ``error``.
"""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs every command at INFO; a test needs only its warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)

BANNER = "SecretMTA-9.9 build-1234 on relay.internal.example"
REFUSAL_TEXT = "internal-relay-7 policy violation"
AUTH_WARNING = "ignore:Requiring AUTH while not requiring TLS:UserWarning"


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    message: email.message.EmailMessage


@dataclass
class Recorder:
    """aiosmtpd handler: keeps every accepted message; refuses what a test asks it to."""

    messages: list[Received] = field(default_factory=list)
    refuse_recipients: set[str] = field(default_factory=set)
    refuse_code: int = 550  # a 4xx: refused for now
    # The enhanced status (RFC 3463) of a refusal: x.1.1 by default, None for none.
    refuse_status: str | None = ""
    refuse_data: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse_recipients:
            status = self.refuse_status
            if status == "":
                status = f"{self.refuse_code // 100}.1.1"
            return " ".join(str(part) for part in (self.refuse_code, status, REFUSAL_TEXT) if part)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data:
            return f"554 5.7.1 {REFUSAL_TEXT}"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        self.arrived.set()
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SMTPServer:
    """``with SMTPServer() as smtp:`` a server on 127.0.0.1:``smtp.port``.

    With ``password`` it requires a login (user ``mailer``) over plain text, as a test
    server may (aiosmtpd warns about that: tests using it filter ``AUTH_WARNING``).
    """

    def __init__(self, password: str | None = None):
        self.handler = Recorder()
        self.port = free_port()
        self.stopped = False
        kwargs = {"ident": BANNER}
        if password is not None:
            kwargs.update(
                auth_required=True,
                auth_require_tls=False,
                authenticator=_authenticator("mailer", password),
                # smtplib falls back to LOGIN after a refused PLAIN, which this server
                # answers differently; PLAIN alone gives a clean refusal.
                auth_exclude_mechanism=["LOGIN"],
            )
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def url(self, credentials: str = "") -> str:
        return f"smtp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening (again is harmless): from now on, connections are refused."""
        if not self.stopped:
            self.controller.stop()
            self.stopped = True

    def __exit__(self, *exc) -> None:
        self.stop()


def _authenticator(user: str, password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode() == user and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return check


def use_smtp(settings, server: SMTPServer, *, user: str = "", password: str = "") -> None:
    """Point this process's email settings at ``server`` (``settings``: pytest-django's)."""
    settings.EMAIL_BACKEND = "backend.common.email.SMTPBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_HOST_USER = user
    settings.EMAIL_HOST_PASSWORD = password
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
