"""Sending mail through Django's email backend (``EMAIL_URL``), with readable failures.

A failure raises ``EmailDeliveryError`` whose message says what went wrong in plain words:
it never carries the SMTP password nor the server's own reply text (banners and error lines
may name software versions or internal hosts); the SMTP status code is kept.

Over SMTP (``SMTPBackend``), ``EMAIL_TIMEOUT`` bounds connecting and every wait for a reply,
and ``send_email`` bounds the whole exchange as well: ``SMTP_WAITS`` times ``EMAIL_TIMEOUT``.
Without that, a server that sends its replies a few bytes at a time (or endless continuation
lines) would hold a send for as long as it liked, each read being quick.
"""

from __future__ import annotations

import contextvars
import re
import smtplib
import socket
import ssl
import time
from email import charset
from email.utils import parseaddr
from functools import cached_property
from typing import NamedTuple

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends import smtp
from django.utils.module_loading import import_string

# The waits of one mail's send, each bounded by EMAIL_TIMEOUT: connecting, the greeting,
# EHLO, STARTTLS and EHLO again, two for a login, MAIL, RCPT, DATA, the message's end, QUIT.
SMTP_WAITS = 12

# A mail's lines end at CR LF only, and SMTP takes none over 1,000 bytes with its CR LF (RFC
# 5321 §4.5.3.1.6). Django sends a text as quoted-printable, which shortens long lines, when
# a line is over 998 bytes, but finds its lines with ``str.splitlines``, which also ends
# one at U+2028, U+0085 and their kind: a text holding those went out as it was (8bit),
# its long line with it, and the server refused the mail.
MAIL_LINE_BYTES = 998
QUOTED_PRINTABLE = charset.Charset("utf-8")
QUOTED_PRINTABLE.body_encoding = charset.QP


def has_long_lines(*texts: str | None) -> bool:
    """Whether a text holds a line (as a mail's lines end) longer than SMTP takes."""
    return any(
        len(line.encode("utf-8", "surrogateescape")) > MAIL_LINE_BYTES
        for text in texts
        if text
        for line in re.split(r"\r\n|[\r\n]", text)
    )


def send_budget() -> int:
    """Seconds one ``send_email`` may take in all, over SMTP."""
    return settings.EMAIL_TIMEOUT * SMTP_WAITS


class SendTooLong(TimeoutError):
    """The exchange with the mail server outlasted ``send_budget()``."""


# When the send under way must be over (time.monotonic()), or None outside send_email.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "smtp_deadline", default=None
)


class _Bounded:
    """A socket whose every read, write and handshake waits at most its own timeout and
    at most until the deadline of the send under way (``_deadline``)."""

    _timeout: float | None = None

    def settimeout(self, value):
        self._timeout = value
        super().settimeout(value)

    def _bound(self) -> None:
        deadline = _deadline.get()
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise SendTooLong("the send's time is spent")
        super().settimeout(left if self._timeout is None else min(self._timeout, left))

    def _bounded(self, method, *args):
        self._bound()
        try:
            return method(*args)
        except TimeoutError as exc:
            deadline = _deadline.get()
            if deadline is not None and time.monotonic() >= deadline:
                raise SendTooLong("the send's time is spent") from exc
            raise

    def recv(self, *args):
        return self._bounded(super().recv, *args)

    def recv_into(self, *args):
        return self._bounded(super().recv_into, *args)

    def send(self, *args):
        return self._bounded(super().send, *args)

    def sendall(self, *args):
        return self._bounded(super().sendall, *args)


class _BoundedSocket(_Bounded, socket.socket):
    @classmethod
    def adopt(cls, sock: socket.socket) -> _BoundedSocket:
        timeout = sock.gettimeout()
        bounded = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        bounded.settimeout(timeout)
        return bounded


class _BoundedSSLSocket(_Bounded, ssl.SSLSocket):
    def do_handshake(self, *args):
        return self._bounded(super().do_handshake, *args)


class _SMTP(smtplib.SMTP):
    # The recipients the server refused in the last send that went to others (smtplib
    # returns them; Django's backend drops them): address → SMTP code.
    refused: dict[str, int] = {}

    def _get_socket(self, host, port, timeout):
        return _BoundedSocket.adopt(super()._get_socket(host, port, timeout))

    def sendmail(self, *args, **kwargs):
        refused = super().sendmail(*args, **kwargs)
        self.refused = {address: reply[0] for address, reply in refused.items()}
        return refused


class _SMTP_SSL(smtplib.SMTP_SSL, _SMTP):
    """SMTP_SSL wraps the socket ``_SMTP`` makes, with the backend's context's class."""


class SMTPBackend(smtp.EmailBackend):
    """Django's SMTP backend (``EMAIL_URL`` smtp://, smtp+tls://, smtps://), with sockets
    that keep to the deadline ``send_email`` sets."""

    @property
    def connection_class(self):
        return _SMTP_SSL if self.use_ssl else _SMTP

    @cached_property
    def ssl_context(self):
        context = super().ssl_context
        context.sslsocket_class = _BoundedSSLSocket  # STARTTLS and smtps:// alike
        return context


def at_domain_literal(address: str) -> bool:
    """Whether ``address`` is at a domain literal (``user@[10.0.0.1]``): the mail server
    delivers to that address, an internal one as readily as any, so the service refuses
    it wherever an address is given."""
    return address.strip().endswith("]")


AT_DOMAIN_LITERAL = "Give a domain name, not an address in brackets."
CONTROL_CHARACTERS = "An email address holds no control characters or line breaks."


def address_refusal(address: str) -> str | None:
    """Why the service refuses ``address`` (one Django's ``validate_email`` takes), or None.
    Refused wherever an address is given: a domain literal (``at_domain_literal``), and a
    control character or a line break, which Django takes in a quoted local part
    (``"a\x0bb"@example.com``) and a mail header does not: ``\x0b``, ``\x0c`` and
    ``\x1c``-``\x1e`` end its line, so such a mail failed, or went out with its ``To:``
    split in two (and the raw bytes in the SMTP envelope)."""
    if at_domain_literal(address):
        return AT_DOMAIN_LITERAL
    if any(ord(c) < 0x20 or c == "\x7f" for c in address) or len(address.splitlines()) > 1:
        return CONTROL_CHARACTERS
    return None


class EmailDeliveryError(Exception):
    """The mail could not be sent; the message is safe to show to the task's owner."""


class EmailUnavailable(EmailDeliveryError):
    """A failure that may pass: the mail server could not be reached, did not answer in
    time, closed the connection, or refused for now (an SMTP 4xx). Sending again later may
    work; a 5xx refusal, a refused login or a failed TLS check will not."""


class RecipientsRefused(EmailDeliveryError):
    """The mail server refused every recipient's address for good (``550 5.1.1`` no such
    mailbox, for each, its enhanced status saying so): the same mail to the same addresses
    will be refused again. Unlike a refused sender, login or relaying (the service's own
    settings, which its operator can mend), this is the address's own fault."""


def passing(exc: BaseException) -> bool:
    """Whether an SMTP send's failure ``exc`` may pass (``EmailUnavailable``)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= reply[0] < 500 for reply in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, ssl.SSLError | smtplib.SMTPException):
        # A certificate, a protocol, what the server supports (no login method that fits):
        # not a moment's trouble. (Both are kinds of OSError.)
        return False
    return isinstance(exc, OSError)  # unreachable, refused, timed out, a name not found


# A refusal of the address itself (RFC 3463): 5.1.x, an address that is no mailbox (no such
# user, bad domain, null MX); 5.2.1, a mailbox disabled. Not 5.7.x (relaying denied, a login
# required: the service's own settings, which its operator can mend) nor a refusal for now.
# Read where RFC 2034 puts it, at the start of a line of the reply's text, or where qmail
# does, "(#5.1.1)" (a status-like number elsewhere, in an address or a link, is not one); a
# reply with none says too little (Exim's bare "550 relay not permitted"), and is not taken
# as the address's refusal.
_STATUS = re.compile(rb"(?:^[ \t]*#?|\(#)([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])", re.MULTILINE)


def _address_refused(code: int, text: bytes) -> bool:
    """Whether an SMTP reply to RCPT refuses the address itself, for good: a 5xx whose
    enhanced status (5.1.x, 5.2.1) says so."""
    status = _STATUS.search(text or b"")
    if not 500 <= code < 600 or status is None or status[1] != b"5":
        return False
    return status[2] == b"1" or (status[2], status[3]) == (b"2", b"1")


class Sent(NamedTuple):
    count: int  # the recipients the message went to
    refused: dict[str, int]  # those the server refused while taking it for others: their code


def stable_message_id(key: str) -> str:
    """A Message-ID made from ``key`` (and the sender's domain), the same at every attempt:
    a mail sent again after an attempt whose outcome was lost (a server that took the
    message and then hung) is one message to the mailbox, which may drop the copy."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "localhost"
    return f"<{key}@{domain}>"


def send_email(
    *,
    to: list[str],
    subject: str,
    body: str,
    html: str | None = None,
    message_id: str | None = None,
) -> Sent:
    """Send one message to every address in ``to``. A server refusing every recipient fails
    the send; one refusing some of them takes it for the others (``Sent.refused``).
    ``message_id``: the message's Message-ID (a new one each send without it)."""
    for address in to:  # one stored before they were refused (an account's, a task's input)
        if refusal := address_refusal(address):
            raise EmailDeliveryError(f"{address!r} cannot be written in a mail: {refusal}")
    message = EmailMultiAlternatives(
        subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=list(to)
    )
    if message_id:
        message.extra_headers["Message-ID"] = message_id
    if html:
        message.attach_alternative(html, "text/html")
    if has_long_lines(body, html):
        message.encoding = QUOTED_PRINTABLE
    started = _deadline.set(time.monotonic() + send_budget())
    connection = get_connection(fail_silently=False)
    try:
        with connection:
            sent = connection.send_messages([message])
            refused = dict(getattr(getattr(connection, "connection", None), "refused", {}))
    except (OSError, smtplib.SMTPException) as exc:
        over_smtp = isinstance(connection, smtp.EmailBackend)
        error = EmailUnavailable if over_smtp and passing(exc) else EmailDeliveryError
        if isinstance(exc, smtplib.SMTPRecipientsRefused) and all(
            _address_refused(*reply) for reply in exc.recipients.values()
        ):
            error = RecipientsRefused
        raise error(describe_failure(exc)) from None
    finally:
        _deadline.reset(started)
    if not sent:
        return Sent(0, {})
    return Sent(len(message.recipients()) - len(refused), refused)


def _server() -> str:
    return f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"


def describe_failure(exc: BaseException) -> str:
    """A plain account of a send failure, without the server's reply text."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(
            f"{address} (SMTP {reply[0]})" for address, reply in sorted(exc.recipients.items())
        )
        return f"the mail server refused every recipient: {refused}"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"the mail server refused the sender address {exc.sender} (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (
            f"the mail server at {_server()} refused the login in EMAIL_URL (SMTP {exc.smtp_code})"
        )
    if isinstance(exc, smtplib.SMTPConnectError):
        return f"the mail server at {_server()} refused the connection (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPDataError):
        return f"the mail server at {_server()} refused the message (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the mail server at {_server()} answered with an error (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"the mail server at {_server()} does not support what EMAIL_URL asks (STARTTLS or login)"
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(
        exc.__context__, TimeoutError
    ):
        exc = exc.__context__  # smtplib reports a reply that never came as a disconnection
    if isinstance(exc, SendTooLong):
        return (
            f"the mail server at {_server()} did not finish within {send_budget()} s "
            f"({SMTP_WAITS} x EMAIL_TIMEOUT)"
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"the mail server at {_server()} closed the connection unexpectedly"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with the mail server at {_server()} failed"
    if isinstance(exc, TimeoutError):
        return (
            f"the mail server at {_server()} did not answer within "
            f"{settings.EMAIL_TIMEOUT} s (EMAIL_TIMEOUT)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"could not connect to the mail server at {_server()}: connection refused"
    if isinstance(exc, socket.gaierror):
        return f"could not resolve the mail server's host name {settings.EMAIL_HOST!r}"
    if isinstance(exc, smtplib.SMTPException):
        return f"sending through the mail server at {_server()} failed ({type(exc).__name__})"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    if not issubclass(import_string(settings.EMAIL_BACKEND), smtp.EmailBackend):
        return f"the email backend ({settings.EMAIL_URL.split(':', 1)[0]}) failed: {reason}"
    return f"could not reach the mail server at {_server()}: {reason}"
