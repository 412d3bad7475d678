"""gunicorn as the README, the Docker image and compose start it (from the project's folder,
which holds ``gunicorn.conf.py``): what it refuses before Django sees a request is JSON too."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]
GUNICORN = Path(sys.executable).parent / "gunicorn"

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served(NamedTuple):
    port: int
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    port = _free_port()
    folder = tmp_path_factory.mktemp("gunicorn")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "ENV_FILE": "",
        "VAR_DIR": str(folder),
        "DEBUG": "false",
        "DJANGO_SECRET_KEY": "a-key-for-this-test-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [str(GUNICORN), "backend.wsgi:application", "--bind", f"127.0.0.1:{port}", "-w", "1"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "gunicorn.log").open("wb"),
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (folder / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
    yield Served(port, folder / "gunicorn.log")
    proc.terminate()
    proc.wait(timeout=30)


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def _logged(log: Path, text: str) -> None:
    """Wait (at most 10 s) for ``text`` in gunicorn's log, which it writes as it goes."""
    deadline = time.monotonic() + 10
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in the log"
        time.sleep(0.05)


@pytest.mark.own_stores
@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /api/tasks/?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414,
         "uri_too_long"),
        (b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + b"a" * 9000
         + b"\r\n\r\n", 431, "request_header_fields_too_large"),
        (b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad\x01: 1\r\n\r\n", 400,
         "bad_request"),
        (b"POST /api/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 200-ok\r\n"
         b"Content-Length: 0\r\n\r\n", 417, "expectation_failed"),
        # gunicorn's reason stays "Bad Request" (the code was bad_request beside a 501).
        (b"POST /api/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: foo\r\n\r\n",
         501, "not_implemented"),
    ],
    ids=["request-line", "header", "malformed-header", "expect", "transfer-encoding"],
)  # fmt: skip
def test_what_gunicorn_refuses_is_json(served, request_bytes, status, code):
    """These were gunicorn's HTML pages, under /api/ as anywhere."""
    got, headers, body = _exchange(served.port, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"detail", "code"} and answer["code"] == code and answer["detail"]
    # Every answer names its request (these had no id), in the log too.
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    _logged(served.log, f"(request id {headers['x-request-id']})")


@pytest.mark.parametrize(
    ("status", "reason", "code", "with_id"),
    [
        (500, "Bad Request", "server_error", True),  # a path outside SCRIPT_NAME
        (501, "Bad Request", "not_implemented", False),
        (403, "Forbidden", "permission_denied", False),  # a proxy-protocol peer refused
        (400, "Bad Request", "bad_request", False),
    ],
)
def test_gunicorns_refusals_carry_the_services_codes(status, reason, code, with_id):
    """A 500 of gunicorn's (SCRIPT_NAME set, a path outside it) answered "500 Bad Request"
    with code bad_request, and no request id in its body as the service's 500s have; a
    403 said forbidden, a code the service never answers."""
    import runpy
    import socket as sockets

    from backend.settings import BASE_DIR

    config = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    ours, theirs = sockets.socketpair()
    with ours, theirs:
        config["_write_json_error"](ours, status, reason, "a message")
        ours.shutdown(sockets.SHUT_WR)
        answer = b""
        while chunk := theirs.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.decode("latin-1").split("\r\n")[0]
    assert status_line == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"
    got = json.loads(body)
    assert got["code"] == code and got["detail"] == "a message"
    assert ("request_id" in got) is with_id


@pytest.mark.own_stores
def test_a_request_line_of_8000_bytes_reaches_the_service(served):
    """gunicorn's default refused request lines over 4,094 bytes (a list filtered by many
    values): they reach Django, which answers (here the health check, the database not
    migrated)."""
    path = b"/health/?q=" + b"a" * 8000
    got, headers, body = _exchange(
        served.port, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert got in (200, 503) and headers["content-type"].startswith("application/json")
    assert "status" in json.loads(body)


@pytest.mark.own_stores
def test_a_head_request_is_answered_without_a_body_and_without_a_warning(served):
    """The service built the GET's body for a HEAD, which gunicorn dropped with a WARNING
    in its log for every HEAD request. The headers stay the GET's, the length included."""
    request = b" /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    got, headers, body = _exchange(served.port, b"GET" + request)
    head_got, head_headers, head_body = _exchange(served.port, b"HEAD" + request)
    assert body and head_body == b""
    assert head_got == got
    assert head_headers["content-length"] == headers["content-length"] == str(len(body))
    assert head_headers["content-type"] == headers["content-type"]
    assert "no-body response" not in served.log.read_text()


@pytest.mark.own_stores
@pytest.mark.parametrize(
    "header", ["X-Forwarded-Proto: https", "X-Forwarded-Protocol: ssl", "X-Forwarded-Ssl: on"]
)
def test_a_clients_forwarded_scheme_is_not_taken_without_a_proxy(served, header):
    """With NUM_PROXIES=0 (here) Django cannot tell HTTPS from HTTP, as the README says; but
    gunicorn took these headers from any peer on 127.0.0.1, so a request over plain HTTP
    passed for HTTPS (HSTS sent, links on https)."""
    request = f"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\nConnection: close\r\n\r\n"
    got, headers, _ = _exchange(served.port, request.encode())
    assert got in (200, 503)
    assert "strict-transport-security" not in headers


@pytest.mark.own_stores
def test_a_worker_is_given_two_minutes_for_a_request(tmp_path):
    """gunicorn's default 30 s killed the sync worker of a slow download (a 200 cut short)
    or upload (a 500): gunicorn.conf.py gives every gunicorn started here 120 s, and the
    command line still wins."""
    var_dir = tmp_path / "var"

    def config(*args: str) -> dict[str, str]:
        done = subprocess.run(
            [str(GUNICORN), "--print-config", *args, "backend.wsgi:application"],
            cwd=PROJECT_ROOT,
            env={  # it loads the application: the settings of a deployment, no .env
                "PATH": os.environ.get("PATH", ""),
                "ENV_FILE": "",
                "DEBUG": "false",
                "DJANGO_SECRET_KEY": "a-key-for-this-test-only-" + "x" * 40,
                "ALLOWED_HOSTS": "127.0.0.1",
                "VAR_DIR": str(var_dir),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return dict(
            (part.strip() for part in line.split("=", 1))
            for line in done.stdout.splitlines()
            if "=" in line
        )

    assert config()["timeout"] == "120"
    # No control socket shared by every gunicorn of the user (one removed another's).
    assert config()["control_socket_disable"] == "True"
    assert config("--timeout", "300")["timeout"] == "300"


# Closing a response ends its request, which checks the database connections: one an earlier
# test of the same process left open is checked too.
@pytest.mark.django_db
def test_a_head_request_for_a_file_closes_its_stream_and_keeps_its_length(tmp_path, rf):
    """A download's stream (a FileResponse) is replaced by nothing and still closed with the
    response; its Content-Length stays the file's."""
    from django.http import FileResponse

    from backend.common.middleware import HeadWithoutBodyMiddleware

    stream = (tmp_path / "f.bin").open("wb+")
    stream.write(b"x" * 1000)
    stream.seek(0)
    response = HeadWithoutBodyMiddleware(lambda request: FileResponse(stream))(rf.head("/"))
    assert response["Content-Length"] == "1000"
    assert b"".join(response.streaming_content) == b"" and response.file_to_stream is None
    response.close()
    assert stream.closed
