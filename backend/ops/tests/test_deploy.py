"""Production settings: Django's deployment checks pass with DEBUG off, HTTPS is assumed
behind a TLS-terminating proxy, and the probes stay reachable over plain HTTP."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def manage(tmp_path: Path, *args: str, **overrides: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "VAR_DIR": str(tmp_path),
        "DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "tasks.example.com",
        "EMAIL_URL": "smtp+tls://tasks%40example.com:secret@smtp.example.com:587",
        "PUBLIC_BASE_URL": "https://tasks.example.com",
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_deploy(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess:
    return manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **overrides)


@pytest.mark.own_stores
@pytest.mark.parametrize("proxies", ["0", "1"])
def test_check_deploy_reports_nothing_with_debug_off(tmp_path, proxies):
    result = check_deploy(tmp_path, NUM_PROXIES=proxies)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.own_stores
def test_each_protection_can_be_turned_off_and_check_deploy_says_so(tmp_path):
    result = check_deploy(
        tmp_path,
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="0",
        NUM_PROXIES="1",
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


@pytest.mark.own_stores
@pytest.mark.parametrize(
    ("email_url", "public_base_url", "expected"),
    [
        ("consolemail://", "https://tasks.example.com", {"atm.W001"}),
        ("filemail:///srv/mail", "https://tasks.example.com", {"atm.W001"}),
        ("smtp://smtp.example.com:25", "http://127.0.0.1:8000", {"atm.W002"}),
        ("smtp://smtp.example.com:25", "http://localhost:8000", {"atm.W002"}),
        ("smtp://smtp.example.com:25", "http://[::1]:8000", {"atm.W002"}),
        ("", "", {"atm.W001", "atm.W002"}),  # both unset: their defaults
    ],
)
def test_check_deploy_warns_of_mail_not_sent_and_links_to_loopback(
    tmp_path, email_url, public_base_url, expected
):
    """With DEBUG off, mail still went to the workers' output (an email task completed as
    sent) and the links in mails and webhooks to http://127.0.0.1:8000, without a word."""
    result = check_deploy(tmp_path, EMAIL_URL=email_url, PUBLIC_BASE_URL=public_base_url)
    assert result.returncode != 0
    found = {code for code in ("atm.W001", "atm.W002") if code in result.stderr}
    assert found == expected, result.stderr


@pytest.mark.own_stores
def test_proxy_header_trusted_only_behind_proxies(tmp_path):
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.SECURE_SSL_REDIRECT, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS]))"
    )
    # Django redirects plain HTTP only when it knows a TLS-terminating proxy is in front;
    # without one the redirect is left to whatever terminates TLS (plain HTTP still works).
    for proxies, header, redirect in (
        ("0", None, False),
        ("1", ["HTTP_X_FORWARDED_PROTO", "https"], True),
    ):
        result = manage(tmp_path, "shell", "-c", code, NUM_PROXIES=proxies)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [
            header,
            redirect,
            True,
            True,
            31536000,
        ]


@pytest.mark.django_db
def test_https_redirect_spares_the_probes(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/api/tasks/").status_code == 301
    assert client.get("/health/").status_code in (200, 503)
    assert client.get("/metrics").status_code == 401
    # Behind the proxy, a request it marks as HTTPS is not redirected.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/api/tasks/", HTTP_X_FORWARDED_PROTO="https").status_code == 401


def test_a_write_over_plain_http_is_redirected_keeping_its_method(client, settings):
    """Its 301 made a client that follows it send a GET without the body (RFC 9110
    §15.4.2): a write is redirected with 308; a read keeps the 301."""
    settings.SECURE_SSL_REDIRECT = True
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/tasks/?x=1", {}, content_type="application/json")
        assert response.status_code == 308, method
        assert response["Location"] == "https://testserver/api/tasks/?x=1"
    assert client.get("/api/tasks/").status_code == 301
    assert client.head("/api/tasks/").status_code == 301
