"""gunicorn's settings for this service, read by every ``gunicorn`` started in the project's
folder (the README's command, the Docker image, compose): gunicorn loads ``./gunicorn.conf.py``
by itself.

A request gunicorn refuses before Django sees it (a request line or a header too long, a
malformed header) was answered with an HTML page; every error of this service is JSON
``{"detail", "code"}``, so those are too. Options given on the command line still win."""

import json
import logging
import uuid
from http import HTTPStatus

from gunicorn import util

# Request lines up to gunicorn's largest (8,190 bytes, not 4,094): a list filtered by many
# values fits.
limit_request_line = 8190

# A sync worker busy on one request this long is killed. gunicorn's 30 s cut a download (or
# an upload, a 500 leaving its temporary file) of a client slower than 0.5 MB/s short of
# MAX_UPLOAD_SIZE (50 MB), with a 200 already sent. Behind a buffering proxy (nginx: README
# "Operating it") requests end in moments whatever the client; published directly (compose),
# a client must do about 0.4 MB/s. GUNICORN_CMD_ARGS="--timeout N" changes it.
timeout = 120

# Whether a request came over HTTPS is Django's to tell, from NUM_PROXIES (settings: the
# proxy's X-Forwarded-Proto when there is one). gunicorn's default took a client's
# X-Forwarded-Proto (or -Protocol, -Ssl) from any peer on 127.0.0.1, so with NUM_PROXIES=0
# a request over plain HTTP could pass for HTTPS: links in the answer, HSTS sent.
secure_scheme_headers = {}

# gunicorn's control socket (gunicornc) is one path per system user by default
# ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl): a second gunicorn of the same user (another
# service, a blue-green switch, a test) took it over, and removed it when it stopped. The
# service needs none; to use it, set control_socket to a path of this instance's own here.
control_socket_disable = True


# The service's codes where they are not the status's phrase (the README's error table).
_CODES = {403: "permission_denied", 500: "server_error"}


def _write_json_error(sock, status_int, reason, mesg):
    if reason == "Bad Request" and status_int != 400:
        # gunicorn keeps that reason for some of its other statuses: a 501 (an unknown
        # Transfer-Encoding), a 500 (a path outside SCRIPT_NAME). The status's own.
        reason = HTTPStatus(status_int).phrase
    code = _CODES.get(status_int) or reason.lower().replace(" ", "_")
    # An id of its own, as every answer of the service has (the request's may not be read),
    # logged beside gunicorn's own line on the refusal; a 500's body names it too.
    request_id = uuid.uuid4().hex
    logging.getLogger("gunicorn.error").info(
        "answered %s %s (request id %s)", status_int, code, request_id
    )
    answer = {"detail": mesg or reason, "code": code}
    if status_int >= 500 and status_int != 501:
        answer["request_id"] = request_id
    body = json.dumps(answer).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = _write_json_error
