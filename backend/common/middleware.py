"""Errors under /api/ (and /health/) are JSON ``{"detail", "code"}`` whatever raised them:
Django's own 404/400 pages, an oversized body (413), an unhandled exception (500, with the
request id that is also in the log). Every response carries ``X-Request-ID``."""

from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import DisallowedHost, RequestDataTooBig, ValidationError
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import Resolver404, is_valid_path, resolve
from django.utils.cache import patch_vary_headers

from .errors import no_room, too_many_parts

logger = logging.getLogger("backend.errors")

API_PREFIXES = ("/api/", "/health/")
# Paths that answer machines (Prometheus; a probe without the slash): JSON errors too.
METRICS_PATHS = frozenset({"/metrics", "/metrics/"})
MACHINE_PATHS = METRICS_PATHS | {"/health"}
DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."
UNHANDLED = "Internal server error; quote the request id when reporting it."
# A statement the database cancelled at the web tier's limits (backend/common/postgresql),
# by SQLSTATE: the code, the message, and the Retry-After (none: trying again the same way
# takes as long).
_CANCELLED = {
    "55P03": (
        "database_busy",
        "Rows this request needs are held by another change (a migration, say); try again shortly.",
        "5",
    ),
    "57014": (
        "statement_timeout",
        "The request took too long in the database and was stopped.",
        None,
    ),
}
SQLITE_BUSY = (
    "database_busy",
    "The database is busy with other changes; try again shortly.",
    "5",
)
STORAGE_FULL = "The service's storage is full; try again later."
TOO_COMPLEX = (
    "The request makes a query too large for the database (e.g. a search of too many words)."
)
# SQLite's refusals of a query too large to build: the request's doing, not an outage.
_SQLITE_LIMITS = (
    "Expression tree is too large",
    "too many SQL variables",
    "parser stack overflow",
    "LIKE or GLOB pattern too complex",
    "too many terms in compound SELECT",
    "too many FROM clause terms",
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
    503: "service_unavailable",
}


def is_api(request) -> bool:
    """Whether ``request``'s errors are JSON: the API's, the health check's and metrics'."""
    return request.path.startswith(API_PREFIXES) or request.path in MACHINE_PATHS


def error_response(status: int, detail: str | None = None, **extra) -> JsonResponse:
    phrase = HTTPStatus(status).phrase.capitalize()  # "Not found."
    body = {"detail": detail or f"{phrase}.", "code": CODES.get(status, "error"), **extra}
    return JsonResponse(body, status=status)


def _too_large(request) -> bool:
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE, by its declared length; file uploads
    (multipart) are bounded by their own limit while they stream."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None or request.content_type == "multipart/form-data":
        return False
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return False


def _chunked(request) -> bool:
    """A body sent in chunks (``Transfer-Encoding: chunked``): Django under WSGI reads it by
    its Content-Length, which it has not (empty: it answered "No file was submitted" or
    "This field is required" for what was sent) or which says something else."""
    return "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()


def _encoded(request) -> str:
    """The content coding of a body sent with one (``Content-Encoding: gzip``), which no
    endpoint decodes: read as it came, a compressed body was a "JSON parse error" about a
    byte 0x8b, and a plain one mislabelled was taken. Empty when there is none."""
    coding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if coding in ("", "identity") or request.META.get("CONTENT_LENGTH", "") in ("", "0"):
        return ""
    return coding


def _served_host() -> str:
    """A Host the service answers to: the first of ALLOWED_HOSTS that names one (a
    ".example.com" entry serves example.com itself); with only "*", any well-formed one."""
    named = (host.lstrip(".") for host in settings.ALLOWED_HOSTS if host != "*")
    return next(named, "localhost")


def _probe_by_address(request) -> bool:
    """A GET or HEAD of /health/ whose Host header is not an allowed host."""
    if request.path != "/health/" or request.method not in ("GET", "HEAD"):
        return False
    try:
        request.get_host()
    except DisallowedHost:
        return True
    return False


class ApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        _add_missing_slash(request)
        if _probe_by_address(request):
            # A load balancer or a container's healthcheck probes by address, whose Host is
            # not one of ALLOWED_HOSTS (a 400 would take a working service out of rotation):
            # the probe is served as if sent to the service's own name, through every
            # middleware as any request (its headers, its checks).
            request.META["HTTP_HOST"] = _served_host()
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        if is_api(request) and _too_large(request):
            response = error_response(413)
        elif is_api(request) and (coding := _encoded(request)):
            response = error_response(
                415,
                f"Content-Encoding {coding[:40]!r} is not accepted: send the body "
                "uncompressed, without a Content-Encoding.",
            )
        elif _chunked(request):
            response = error_response(
                411,
                "Send the body with a Content-Length: a body in chunks "
                "(Transfer-Encoding: chunked) is not read.",
            )
        else:
            response = self.get_response(request)
            if (
                is_api(request)
                and response.status_code >= 400
                and not _is_json(response)
                and not getattr(response, "page_for_a_browser", False)
            ):
                response = _as_json_error(response)
        if not response.streaming and not response.has_header("Content-Length"):
            # An answer made here (or in process_exception) is past CommonMiddleware, which
            # gives every other its length: a HEAD said it, the GET went out in chunks.
            response["Content-Length"] = str(len(response.content))
        response["X-Request-ID"] = request.request_id
        return response

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError) and any(
            limit in str(exception) for limit in _SQLITE_LIMITS
        ):
            # A search of a thousand words in the admin: a 400, not "the database is
            # unavailable", which sent an operator looking for an outage.
            logger.warning(
                "query too large on %s %s (request id %s): %s",
                request.method,
                request.path,
                request.request_id,
                exception,
            )
            return _json_or_page(request, 400, "Bad request", TOO_COMPLEX, code="too_complex")
        cancelled = _CANCELLED.get(getattr(exception.__cause__, "sqlstate", None))
        if isinstance(exception, OperationalError) and "database is locked" in str(exception):
            # SQLite's busy timeout ran out behind other writers: busy, not down.
            cancelled = SQLITE_BUSY
        if isinstance(exception, OperationalError) and cancelled is not None:
            # The web tier's own limits (DATABASE_WEB_LOCK_TIMEOUT, …_STATEMENT_TIMEOUT): the
            # database is up, and "unavailable" sent an operator looking for an outage.
            code, message, retry_after = cancelled
            logger.warning(
                "%s on %s %s (request id %s)",
                code.replace("_", " "),
                request.method,
                request.path,
                request.request_id,
            )
            response = _json_or_page(
                request,
                503,
                "Service unavailable",
                message,
                code=code,
                json_always=request.path in METRICS_PATHS,
                request_id=request.request_id,
            )
            if retry_after:
                response["Retry-After"] = retry_after
            return response
        if isinstance(exception, (OperationalError, InterfaceError)):
            # The database is down, restarting or refusing connections: the client may try
            # again (503), and the log gets one line, not a traceback per request. A page
            # (the admin, the sign-in form, the browsable API for a browser) says so in a
            # page.
            logger.warning(
                "database unavailable on %s %s (request id %s): %s",
                request.method,
                request.path,
                request.request_id,
                str(exception).strip().splitlines()[0] if str(exception).strip() else "",
            )
            response = _json_or_page(
                request,
                503,
                "Service unavailable",
                DATABASE_UNAVAILABLE,
                code="database_unavailable",
                json_always=request.path in METRICS_PATHS,
                request_id=request.request_id,
            )
            response["Retry-After"] = "5"
            if is_api(request):
                patch_vary_headers(response, ["Accept"])
            return response
        if no_room(exception):
            return storage_full(request, exception)
        if not is_api(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return error_response(413)
        refused = too_many_parts(exception)
        if refused is not None:
            return error_response(400, refused.detail, code=refused.code)
        logger.error(
            "unhandled error on %s %s (request id %s)",
            request.method,
            request.path,
            request.request_id,
            exc_info=exception,
        )
        return error_response(500, UNHANDLED, request_id=request.request_id)


# Headers that describe the body, which the JSON error replaces (a page's policy included:
# JSON answers carry none).
_BODY_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "content-disposition",
        "content-security-policy",
    }
)


def _as_json_error(response):
    """The error as JSON, with the other headers of the answer it replaces: the security
    middleware's (nosniff, frame options, referrer policy, ...) were lost, as on a download's
    412."""
    replaced = error_response(response.status_code)
    for header, value in response.items():
        if header.lower() not in _BODY_HEADERS:
            replaced.headers.setdefault(header, value)
    return replaced


def _add_missing_slash(request) -> None:
    """Every API route (the browsable API's sign-in included) answers with or without its
    trailing slash, for every method, with the same result: the slash is added in place (a
    redirect would drop a POST's body; with DEBUG on, Django answers such a POST with a
    500)."""
    path = request.path_info
    if path.endswith("/") or not (
        path.startswith(("/api/", "/api-auth/", "/health")) or path == "/api"
    ):
        return
    urlconf = getattr(request, "urlconf", None)
    if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
        request.path_info = f"{path}/"
        request.path = f"{request.path}/"


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json") or hasattr(
        response, "data"
    )


def _json_or_page(
    request, status: int, title: str, message: str, *, code: str, json_always=False, **extra
):
    """An error answered before any view: JSON under /api/ (and ``json_always``) for a
    client that does not rank HTML first (one that prefers JSON, says nothing, or refuses
    HTML with q=0), a page for a browser and everywhere else."""
    browser = request.get_preferred_type(["application/json", "text/html"])
    if json_always or (is_api(request) and browser != "text/html"):
        return error_response(status, message, code=code, **extra)
    response = HttpResponse(
        f"<!DOCTYPE html><title>{title}</title><h1>{title}</h1><p>{message}</p>"
        f"<p>Request id: {request.request_id}</p>",
        status=status,
    )
    response.page_for_a_browser = True
    return response


def storage_full(request, exception: BaseException):
    """An upload to a full disk: 507 and one line in the log (nothing was kept: the files'
    service and the upload handler remove what they wrote), not a 500 and a traceback."""
    request_id = getattr(request, "request_id", None)
    logger.error(
        "storage full on %s %s (request id %s): %s",
        request.method,
        request.path,
        request_id,
        exception,
    )
    extra = {"request_id": request_id} if request_id else {}
    return _json_or_page(
        request, 507, "Insufficient storage", STORAGE_FULL, code="insufficient_storage", **extra
    )


class AdminBadInputMiddleware:
    """A value the database or Python cannot hold, in an admin URL edited by hand (a year
    99999, a NUL, an id that is not a UUID), is answered as Django's admin answers a filter
    it does not know: back to the list with ``?e=1`` (and from there, to the bare list), or,
    for an action posted with an id that is not one, back to the list with a message; not a
    500. An action's own error is left alone (a 500, its traceback logged): posted to a list
    URL whose query runs, the error is the action's. Logged as a warning, with the
    traceback. The admin's "view on site" link (``/admin/r/<type>/<id>/``) for an id that is
    not a key is a 404, as for a key that is no object's (Django's view catches ValueError,
    and a UUID key raises ValidationError)."""

    ERRORS = (ValueError, OverflowError, ValidationError, DataError)

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not request.path.startswith("/admin/") or not isinstance(exception, self.ERRORS):
            return None
        match = request.resolver_match
        if match is not None and match.url_name == "view_on_site":
            raise Http404("No such object.")
        if request.method == "POST" and "action" in request.POST:
            selected = request.POST.getlist("_selected_action")
            if not all(_is_key(value) for value in selected):
                logger.warning("admin action with a selection it cannot read", exc_info=exception)
                messages.error(request, "The selection holds an id that is not valid.")
                return HttpResponseRedirect(request.path)
            if not request.GET or _list_query_runs(request):
                return None  # the selection and the list are fine: the action's own error
            # Posted to a list URL whose lookups fail: answered as the list's GET would be.
            logger.warning("admin action on a list it cannot query", exc_info=exception)
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        if request.method == "GET" and request.GET:
            logger.warning("admin list with a lookup it cannot run", exc_info=exception)
            if ERROR_FLAG in request.GET:
                return HttpResponseRedirect(request.path)
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return None


class HeadWithoutBodyMiddleware:
    """A HEAD request's answer carries the GET's headers (its Content-Length included) and
    no body. The views build the GET's answer; the WSGI server then dropped the body, and
    gunicorn logged a WARNING for each HEAD ("WSGI app sent body bytes on a no-body
    response"). Outermost, so every other middleware has seen the body first, and
    ApiErrorMiddleware has said its length."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method == "HEAD":
            if response.streaming:
                # A file's stream is closed with the response, as after a GET.
                response.streaming_content = []
            else:
                response.content = b""
        return response


class HttpsRedirectKeepsMethodMiddleware:
    """Django's redirect of plain HTTP to HTTPS (``SECURE_SSL_REDIRECT``, SecurityMiddleware,
    which this one wraps) keeps a write's method and body: 308 for a POST, PUT, PATCH or
    DELETE. Its 301 made a client that follows it send a GET without the body (RFC 9110
    §15.4.2)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code == 301
            and request.method not in ("GET", "HEAD")
            and not request.is_secure()
            and response.get("Location", "").startswith("https://")
        ):
            response.status_code = 308
        return response


class ContentSecurityPolicyMiddleware:
    """Every HTML page (the admin, the browsable API, Swagger UI, ReDoc, the home page) says
    which sources the browser may run and load: scripts only from this service's own files
    (no inline script, so markup injected into a page cannot run), styles, images, fonts and
    fetches from this service, never framed. Inline styles stay allowed: Swagger UI, ReDoc and
    the admin's charts set them. ``CONTENT_SECURITY_POLICY`` (a setting) is the header's value;
    empty sends none. A page that sets its own header keeps it."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        if (
            self.policy
            and "Content-Security-Policy" not in response
            and response.get("Content-Type", "").startswith("text/html")
            # Django's debug page of an error (DEBUG only) runs inline scripts of its own.
            and not (settings.DEBUG and response.status_code >= 500)
        ):
            response["Content-Security-Policy"] = self.policy
        return response


def _list_query_runs(request) -> bool:
    """Whether the admin list this request was posted to can run its query (its filters,
    search and ordering from the URL); True when that cannot be told."""
    try:
        model_admin = resolve(request.path).func.model_admin
    except (Resolver404, AttributeError):
        return True
    try:
        changelist = model_admin.get_changelist_instance(request)
        list(changelist.get_queryset(request)[:1])
    except Exception:  # the lookups: a year out of range, a NUL, an unknown filter
        return False
    return True


def _is_key(value: str) -> bool:
    """A primary key as the admin's models have them: a UUID, or a whole number."""
    try:
        uuid.UUID(value)
    except ValueError:
        return value.isdigit()
    return True
