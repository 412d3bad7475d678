"""Sending mail through Django's email backend (``EMAIL_URL``), with readable failures.

A failure raises ``EmailDeliveryError`` whose message says what went wrong in plain words:
it never carries the SMTP password nor the server's own reply text (banners and error lines
may name software versions or internal hosts); the SMTP status code is kept.
"""

from __future__ import annotations

import smtplib
import socket
import ssl

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection


def at_domain_literal(address: str) -> bool:
    """Whether ``address`` is at a domain literal (``user@[10.0.0.1]``): the mail server
    delivers to that address, an internal one as readily as any, so the service refuses
    it wherever an address is given."""
    return address.strip().endswith("]")


class EmailDeliveryError(Exception):
    """The mail could not be sent; the message is safe to show to the task's owner."""


def send_email(*, to: list[str], subject: str, body: str, html: str | None = None) -> int:
    """Send one message to every address in ``to``; returns how many recipients it went to."""
    message = EmailMultiAlternatives(
        subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=list(to)
    )
    if html:
        message.attach_alternative(html, "text/html")
    try:
        # The SMTP backend applies EMAIL_TIMEOUT to connecting and to every reply.
        with get_connection(fail_silently=False) as connection:
            sent = connection.send_messages([message])
    except (OSError, smtplib.SMTPException) as exc:
        raise EmailDeliveryError(describe_failure(exc)) from None
    return len(message.recipients()) if sent else 0


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
    if not settings.EMAIL_BACKEND.endswith("smtp.EmailBackend"):
        return f"the email backend ({settings.EMAIL_URL.split(':', 1)[0]}) failed: {reason}"
    return f"could not reach the mail server at {_server()}: {reason}"
