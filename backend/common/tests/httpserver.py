"""A real HTTP server on loopback for tests: answers as a test scripts it, records every
request, and counts every TCP connection it accepts (so a test can prove none was made)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    body_after: float = 0.0  # seconds between the headers and the body (a slow sender)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: HTTPServer, host: str):
        self.owner = owner
        super().__init__((host, 0), _Handler)

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early (a capped body, a timeout) is part of the tests

    def get_request(self):
        conn = super().get_request()
        with self.owner.lock:
            self.owner.connections += 1
        return conn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        owner: HTTPServer = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        recorded = Recorded(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        with owner.lock:
            owner.requests.append(recorded)
            index = len(owner.requests) - 1
        answer = owner.next_answer(recorded, index)  # may block (a hanging receiver)
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        if answer.body_after:
            self.wfile.flush()
            time.sleep(answer.body_after)
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer


class HTTPServer:
    """``answers``: a list used in order (the last one repeats), or a function of the
    request. Use as a context manager."""

    def __init__(
        self,
        answers: list[Answer] | Callable[[Recorded], Answer] | None = None,
        host: str = "127.0.0.1",
    ):
        self.answers = answers if answers is not None else [Answer()]
        self.requests: list[Recorded] = []
        self.connections = 0
        self.lock = threading.Lock()
        self._server = _Server(self, host)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def next_answer(self, request: Recorded, index: int) -> Answer:
        if callable(self.answers):
            return self.answers(request)
        return self.answers[min(index, len(self.answers) - 1)]

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> HTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
