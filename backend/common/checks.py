"""Checks of ``manage.py check --deploy`` beyond Django's own: settings that a server left
at their development defaults, where nothing fails but users are let down quietly."""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

MAIL_NOT_SENT = "atm.W001"
LINKS_TO_LOOPBACK = "atm.W002"


@checks.register("deployment", deploy=True)
def mail_and_links(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    found = []
    scheme = settings.EMAIL_URL.split("://", 1)[0]
    if scheme in ("consolemail", "filemail"):
        found.append(
            checks.Warning(
                f"EMAIL_URL is {scheme}://: mail (the email and reminder tasks, notification "
                "mails) is written to the workers' output or to files, not sent; such a task "
                "still completes as sent.",
                hint="Set EMAIL_URL to your mail server, e.g. "
                "smtp+tls://user:password@smtp.example.com:587.",
                id=MAIL_NOT_SENT,
            )
        )
    host = urlsplit(settings.PUBLIC_BASE_URL).hostname or ""
    if host == "localhost" or _is_loopback(host):
        found.append(
            checks.Warning(
                f"PUBLIC_BASE_URL is {settings.PUBLIC_BASE_URL}: the links in notification "
                "mails and webhooks point at this machine's loopback, which their readers "
                "cannot reach.",
                hint="Set PUBLIC_BASE_URL to the service's public address, e.g. "
                "https://tasks.example.com.",
                id=LINKS_TO_LOOPBACK,
            )
        )
    return found


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
