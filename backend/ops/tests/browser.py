"""A headless Chromium pointed at this service on loopback: the service runs in a thread
(WSGI, signed in as a given user through a session cookie), every request it receives is
recorded, and the browser may resolve no other host. Used when ``chromium-headless-shell``
(or ``chromium``) is installed."""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections

BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def session_cookie(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


@contextmanager
def serve_as(user):
    """Yield (base URL, list of (host, path) requested) while the service answers."""
    cookie = session_cookie(user)
    django_app = StaticFilesHandler(WSGIHandler())  # static files as whitenoise serves them
    seen: list[tuple[str, str]] = []

    def app(environ, start_response):
        seen.append((environ.get("HTTP_HOST", ""), environ["PATH_INFO"]))
        environ["HTTP_COOKIE"] = cookie
        return django_app(environ, start_response)

    def serve():
        try:
            server.serve_forever()
        finally:
            # The requests' database connections belong to this thread: closed here, or the
            # test database could not be dropped at the end of the run.
            connections.close_all()

    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def screenshot(url: str, path: Path, *, width: int = 1400, height: int = 1400) -> None:
    subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            # Nothing but this server: any other host fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--window-size={width},{height}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )


def png_pixels(path: Path) -> tuple[int, int, list[bytes], int]:
    """Width, height, rows of bytes and channels (3 or 4) of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r) for r in rows], channels


def count_colour(path: Path, rgb: tuple[int, int, int]) -> int:
    width, _, rows, channels = png_pixels(path)
    target = bytes(rgb)
    return sum(
        1 for row in rows for x in range(width) if row[x * channels : x * channels + 3] == target
    )
