"""Swagger UI, ReDoc, the admin login and the front page in a real browser: headless Chromium
loads each one, every host but this server's resolves to a listener that records the
attempt (plain HTTP or TLS alike), and the page must not have tried any. Catches what a look
at the HTML cannot: a script or a style sheet fetching fonts or assets from a CDN."""

import socket
import subprocess
import threading
from contextlib import contextmanager

import pytest

from backend.ops.tests.browser import BROWSER, serve_as
from backend.users.tests.factories import UserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(BROWSER is None, reason="no chromium-headless-shell or chromium here"),
]


@contextmanager
def foreign_hosts_listener():
    """A loopback socket standing in for every other host; yields the list of attempts."""
    attempts: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    attempts.append(conn.recv(4096))  # a request line, or a TLS hello
                except OSError:
                    attempts.append(b"")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], attempts
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def load(url: str, foreign_port: int) -> str:
    """The page's DOM after its scripts ran (up to 8 s of page time)."""
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--host-resolver-rules=MAP * 127.0.0.1:{foreign_port}, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    return done.stdout.decode(errors="replace")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/api/docs/", "swagger-ui"),
        ("/api/redoc/", "Async Task Manager"),
        ("/admin/login/", 'name="password"'),
        ("/", "/api/docs/"),
    ],
)
def test_page_loads_everything_from_this_server(path, rendered):
    with foreign_hosts_listener() as (port, attempts), serve_as(UserFactory()) as (base, seen):
        dom = load(f"{base}{path}", port)

    assert rendered in dom
    assert attempts == [], f"{path} tried another host: {attempts}"
    assert {host for host, _ in seen} == {base.removeprefix("http://")}
    if path.startswith("/api/"):
        # The docs pages did run: they fetched the schema and their bundled assets here.
        assert any(p.startswith("/api/schema") for _, p in seen), seen
        assert any(p.startswith("/static/") for _, p in seen), seen
