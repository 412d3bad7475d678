"""Settings for Async Task Manager: one module, everything from the environment.

A bad value stops start-up with a message naming the variable (see ``_fail``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import tempfile
import warnings
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.message import sanitize_address
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file at the top level fills in what the environment does not set (`make run` writes
# one with DEBUG=true and a generated secret if there is none). ENV_FILE names another file;
# set but empty, none is read (the test suite: a developer's .env must not change its results).
_env_file = os.environ.get("ENV_FILE", ".env")
ENV_FILE = BASE_DIR / _env_file if _env_file else None  # relative to the top level


def _text(name: str, default: str) -> str:
    """A string variable; set but empty counts as unset (as in a copied .env.example)."""
    return os.environ.get(name) or default


def _fail(message: str):
    raise ImproperlyConfigured(message)


def _from_top(path: str | Path) -> Path:
    """``path`` made absolute; a relative one is taken from the top level (as ENV_FILE), not
    from the folder a process was started in: `VAR_DIR=./var` in the .env gave
    `python /app/manage.py` run from elsewhere another database and broker."""
    return (BASE_DIR / path).resolve()


def _folder(name: str, default: Path) -> Path:
    """A folder variable as an absolute path (see ``_from_top``)."""
    return _from_top(_text(name, str(default)))


if ENV_FILE is not None and ENV_FILE.is_file():
    # A variable set in the environment wins over the file, but one set empty counts as
    # unset (as everywhere below): the file's value applies.
    _empty = {name: value for name, value in os.environ.items() if not value.strip()}
    for _name in _empty:
        del os.environ[_name]
    environ.Env.read_env(ENV_FILE)
    for _name, _value in _empty.items():
        os.environ.setdefault(_name, _value)
elif ENV_FILE is not None and _env_file != ".env":  # another file named, and not there
    _fail(f"ENV_FILE names no file: {ENV_FILE} (empty ENV_FILE reads none)")


def _read(name: str, cast, default):
    """Read one variable; a value that does not parse stops start-up with its name. Set but
    empty counts as unset, as for every kind of setting (``NAME=`` in a .env, which
    compose passes on as it is)."""
    if not os.environ.get(name, "").strip():
        return default
    try:
        return cast(name, default=default)
    except (ValueError, TypeError) as exc:
        _fail(f"Environment variable {name} has an invalid value: {exc}")


def _float(name: str, default: float, *, positive: bool = False) -> float:
    """A number of seconds, written as Python writes a float (django-environ's reading dropped
    every character but digits, ``,``, ``.`` and ``-``: ``1e1`` was 11, ``2 s`` was 2); at
    least 0, above 0 when ``positive``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        _fail(f"Environment variable {name} has an invalid value: {raw!r} is not a number")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "above 0" if positive else "0 or more"
        _fail(f"Environment variable {name} must be a number of seconds {bound}, got {raw!r}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    _fail(f"Environment variable {name} must be true or false, got {raw!r}")


# The largest number a count, a size or a number of seconds or minutes may be: PostgreSQL's
# integer, 68 years of seconds. Beyond it, a time a setting gave was out of Python's range,
# and start-up (or the cleanup, at each run) stopped with a traceback.
MAX_SETTING_INT = 2**31 - 1
MAX_SETTING_DAYS = 36500


def _positive_int(name: str, default: int, minimum: int = 1, maximum: int = MAX_SETTING_INT) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:  # Python's words were "invalid literal for int() with base 10: '50MB'"
        value = None
    if value is None or not minimum <= value <= maximum:
        _fail(
            f"Environment variable {name} must be an integer from {minimum} to {maximum}, "
            f"got {raw if value is None else value!r}"
        )
    return value


def _writable_folder(name: str, folder: Path) -> None:
    """``folder`` made if missing, and written to (a file made and removed at once: a
    folder owned by another user, say a host's mount in a container, passed a check of its
    existence, and then every upload or send failed with a 500)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        _fail(
            f"{name} cannot be made a folder this process writes to: {folder}: "
            f"{exc.strerror or exc}"
        )


# --- core ---------------------------------------------------------------------
DEBUG = _bool("DEBUG", False)
VAR_DIR = _folder("VAR_DIR", BASE_DIR / "var")
try:  # made when missing; written to only through the folders below that need it (none
    # with PostgreSQL, Redis and MEDIA_ROOT elsewhere: a read-only VAR_DIR then serves)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    _fail(f"VAR_DIR cannot be made a folder: {VAR_DIR}: {exc.strerror or exc}")

SECRET_KEY = _text("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        _fail(
            "DJANGO_SECRET_KEY is required when DEBUG is off (for local development set "
            "DEBUG=true, e.g. in .env, which `make run` writes)."
        )
    SECRET_KEY = "insecure-development-key-only-used-when-DEBUG-is-on"


def _list(name: str, default: list[str], *, check=None, expected: str = "", normalize=None):
    """A comma-separated list, each item trimmed (``a, b`` is ``["a", "b"]``, where Django
    would match nothing against " b") and, with ``normalize``, put in the form it is
    compared in; empty items dropped; an item ``check`` refuses stops start-up naming it."""
    items = [item.strip() for item in _read(name, env.list, default)]
    items = [normalize(item) if normalize else item for item in items if item]
    for item in items:
        if check is not None and not check(item):
            _fail(f"Environment variable {name} has an invalid item {item!r}: {expected}")
    return items


# Earlier secret keys, still accepted for what was signed with them (sessions, idempotency
# fingerprints) while a new DJANGO_SECRET_KEY takes over.
SECRET_KEY_FALLBACKS = _list("DJANGO_SECRET_KEY_FALLBACKS", [])


def _host(item: str) -> str:
    """As Django compares a Host: lower case, without the one trailing dot it drops."""
    item = item.lower()
    return item[:-1] if item.endswith(".") and item.strip(".") else item


_NAME = r"[a-z0-9_-]+(\.[a-z0-9_-]+)*"
# A host name, an address ([::1] for IPv6), ".example.com" for it and its subdomains, or "*".
_HOST = re.compile(rf"\*|\.?{_NAME}|\[[0-9a-f:.]+\]")
ALLOWED_HOSTS = _list(
    "ALLOWED_HOSTS",
    ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [],
    check=_HOST.fullmatch,
    normalize=_host,
    expected="give host names without a scheme or port, e.g. tasks.example.com,.example.com",
)
if not DEBUG and not ALLOWED_HOSTS:
    _fail("ALLOWED_HOSTS is required when DEBUG is off (comma-separated host names).")
# As a browser sends an Origin (lower case), which Django compares exactly.
_ORIGIN = re.compile(rf"https?://((\*\.)?{_NAME}|\[[0-9a-f:.]+\])(:\d+)?")
CSRF_TRUSTED_ORIGINS = _list(
    "CSRF_TRUSTED_ORIGINS",
    [],
    check=_ORIGIN.fullmatch,
    normalize=str.lower,
    expected="give origins as scheme://host[:port], without a path, e.g. https://tasks.example.com",
)
PORT = _positive_int("PORT", 8000, maximum=65535)

INSTALLED_APPS = [
    # Before django.contrib.auth and staticfiles: the first app naming a management command
    # provides it; users' createsuperuser validates what the stock one lets through, and
    # common's runserver (make run) takes a longer queue of connections.
    "backend.users",
    "backend.common",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "backend.tasks",
    "backend.schedules",
    "backend.files",
    "backend.notifications",
    "backend.ops",
]

MIDDLEWARE = [
    "backend.common.middleware.HeadWithoutBodyMiddleware",
    "backend.common.middleware.ApiErrorMiddleware",
    "backend.common.middleware.HttpsRedirectKeepsMethodMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "backend.common.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's own sessions, session user and messages, which step aside for an API request
    # that carries a Bearer token and asks for JSON: it reads and sets no cookie
    # (backend/common/browser.py).
    "backend.common.browser.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "backend.common.browser.AuthenticationMiddleware",
    "backend.common.browser.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "backend.common.middleware.AdminBadInputMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------
# Embedded default: SQLite in WAL mode with IMMEDIATE transactions and a busy timeout, so the
# web process, the worker and beat can all write to it at once.
DATABASE_URL = _text("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
try:
    with warnings.catch_warnings():
        # django-environ warns of an unknown scheme; the check below names it in one line.
        warnings.simplefilter("ignore", UserWarning)
        _db = environ.Env.db_url_config(DATABASE_URL)
except Exception as exc:  # django-environ raises several types for a bad URL
    _fail(f"DATABASE_URL is not a valid database URL: {exc}")
SUPPORTED_DATABASES = {"django.db.backends.sqlite3", "django.db.backends.postgresql"}
if _db.get("ENGINE") not in SUPPORTED_DATABASES:
    _fail(
        f"DATABASE_URL must be a sqlite:// or postgres:// URL, got scheme "
        f"{DATABASE_URL.split(':', 1)[0]!r}"
    )
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": _positive_int("SQLITE_BUSY_TIMEOUT", 20),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not in-memory) test database, so end-to-end tests can share it with a worker.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
    if _db.get("NAME") and _db["NAME"] != ":memory:":
        _db["NAME"] = str(_from_top(_db["NAME"]))
        _writable_folder(
            "the SQLite database's folder (DATABASE_URL, by default in VAR_DIR)",
            Path(_db["NAME"]).parent,
        )
else:
    # Django's backend, with a health check that needs no round trip (backend/common/postgresql).
    _db["ENGINE"] = "backend.common.postgresql"
    _db["CONN_MAX_AGE"] = _positive_int("CONN_MAX_AGE", 60, minimum=0)
    _db["CONN_HEALTH_CHECKS"] = True
    # Parameters bound by the server (psycopg's extended protocol), and a statement a
    # connection has run DATABASE_PREPARE_THRESHOLD times (the Bearer user, the create's
    # INSERT, a run's read and outcome) prepared: parsed and planned no more (Django leaves
    # psycopg's preparing off unless told). Both off for a pooler that cannot keep prepared
    # statements (PgBouncer in transaction mode before 1.21): DATABASE_SERVER_SIDE_BINDING=false.
    _server_binding = _bool("DATABASE_SERVER_SIDE_BINDING", True)
    # A server that takes the connection and never answers (hung, or its host gone) is an
    # error after this long, answered 503 as one that refuses; libpq waits for ever by
    # default. `?connect_timeout=N` in DATABASE_URL gives another.
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
    # A server whose host is gone, or cut off by the network, in the middle of a statement:
    # libpq waited for the answer until the kernel gave up on the connection (minutes; a
    # web worker until gunicorn killed it, a task's worker and beat longer). Unanswered
    # data is an error after 30 s (tcp_user_timeout), a connection waiting on an answer is
    # probed after 10 s of silence, every 5 s, and dropped after 3 unanswered probes. A
    # server that is up never misses them (its kernel answers), however long it runs a
    # statement. `?keepalives_idle=N` (and the others) in DATABASE_URL give others.
    for _name, _value in (
        ("keepalives", 1),
        ("keepalives_idle", 10),
        ("keepalives_interval", 5),
        ("keepalives_count", 3),
        ("tcp_user_timeout", 30_000),
    ):
        _db["OPTIONS"].setdefault(_name, _value)
    _db["OPTIONS"].update(
        server_side_binding=_server_binding,
        prepare_threshold=(
            _positive_int("DATABASE_PREPARE_THRESHOLD", 5, minimum=0) if _server_binding else None
        ),
    )
DATABASES = {"default": _db}
# PostgreSQL, in the web tier only (backend/wsgi.py): a request's statement that waits this
# many seconds for rows another transaction holds (DATABASE_WEB_LOCK_TIMEOUT), or runs this
# long (DATABASE_WEB_STATEMENT_TIMEOUT), is cancelled and answered 503. A request waiting on
# a lock held by a long transaction (a migration, a session left open in psql) held its web
# worker until gunicorn killed it two minutes later (a 500). 0: no limit. Workers, Beat and
# the commands have none. They are sent with the connection (libpq's "options"), which a
# pooler may refuse (PgBouncer: "unsupported startup parameter"): behind one, that is with
# DATABASE_SERVER_SIDE_BINDING=false, both are 0 unless set (set them on the database role
# there: ALTER ROLE … SET lock_timeout = '5s').
_behind_a_pooler = DATABASES["default"].get("OPTIONS", {}).get("server_side_binding") is False
DATABASE_WEB_LOCK_TIMEOUT = _positive_int(
    "DATABASE_WEB_LOCK_TIMEOUT", 0 if _behind_a_pooler else 5, minimum=0
)
DATABASE_WEB_STATEMENT_TIMEOUT = _positive_int(
    "DATABASE_WEB_STATEMENT_TIMEOUT", 0 if _behind_a_pooler else 30, minimum=0
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth ---------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"
AUTHENTICATION_BACKENDS = ["backend.users.backends.UsernameOrEmailBackend"]
# Where /api-auth/login/ goes when it names no next page (or a foreign one): the API root,
# not Django's /accounts/profile/, which this service does not have.
LOGIN_REDIRECT_URL = "/api/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
with contextlib.suppress(OSError):  # a read-only VAR_DIR: collected when the image was built
    STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- files --------------------------------------------------------------------
# Uploaded and generated files live in the default storage above: the filesystem under
# MEDIA_ROOT by default. Any Django storage works by changing STORAGES["default"] alone
# (e.g. S3 through django-storages); the code only uses the storage API. Web and workers
# must see the same storage (compose shares one volume).
MEDIA_ROOT = _folder("MEDIA_ROOT", VAR_DIR / "media")
_writable_folder("MEDIA_ROOT", MEDIA_ROOT)  # else every upload answered 500
# Largest upload, in bytes (50 MB): past it the upload stops at once with 413.
MAX_UPLOAD_SIZE = _positive_int("MAX_UPLOAD_SIZE", 50 * 1024 * 1024, maximum=2**63 - 1)
# Files older than this many days that no active task uses are deleted by the cleanup.
FILE_RETENTION_DAYS = _positive_int("FILE_RETENTION_DAYS", 30, maximum=MAX_SETTING_DAYS)
# Seconds between cleanups (Beat).
FILE_CLEANUP_INTERVAL = _positive_int("FILE_CLEANUP_INTERVAL", 3600)
# Every upload is hashed (SHA-256) and counted as it streams into a temporary file, and
# stopped past MAX_UPLOAD_SIZE; no upload is ever held in memory whole.
FILE_UPLOAD_HANDLERS = ["backend.files.uploads.HashingUploadHandler"]

# --- REST framework -----------------------------------------------------------
THROTTLE_AUTH_RATE = _text("THROTTLE_AUTH_RATE", "20/min")
if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", THROTTLE_AUTH_RATE):
    _fail(
        f"THROTTLE_AUTH_RATE must look like 20/min (number/s|min|hour|day), got {THROTTLE_AUTH_RATE!r}"
    )

NUM_PROXIES = _positive_int("NUM_PROXIES", 0, minimum=0)
# How long an Idempotency-Key is remembered, in seconds (24 h).
IDEMPOTENCY_TTL = _positive_int("IDEMPOTENCY_TTL", 86400)
# A 1 MB text sent with every character JSON-escaped is still accepted.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "backend.users.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # OPTIONS describes an action only to whom it would serve (backend/common/metadata.py).
    "DEFAULT_METADATA_CLASS": "backend.common.metadata.Metadata",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "backend.common.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "backend.common.parsers.StrictJSONParser",
        "backend.common.parsers.JSONTolerantFormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Proxies in front of the service; 0 means the client address is REMOTE_ADDR, so a
    # forged X-Forwarded-For cannot dodge the auth throttle.
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_PAGINATION_CLASS": "backend.common.pagination.PageNumberPagination",
    "PAGE_SIZE": 10,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.common.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": THROTTLE_AUTH_RATE,
    },
}

SIMPLE_JWT = {
    # simplejwt's access token, refusing an exp beyond the dates Python holds (a 500 else).
    "AUTH_TOKEN_CLASSES": ("backend.users.tokens.AccessToken",),
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=_positive_int("JWT_ACCESS_MINUTES", 30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        days=_positive_int("JWT_REFRESH_DAYS", 7, maximum=MAX_SETTING_DAYS)
    ),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Async Task Manager API",
    "DESCRIPTION": "Submit typed background jobs, follow their status and results, "
    "and assign human work items.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Request bodies are documented as JSON (form parsers serve the browsable API); an
    # upload documents its multipart body explicitly.
    "PARSER_WHITELIST": ["backend.common.parsers.StrictJSONParser"],
    # Swagger UI's Authorize takes the JWT access token (the only scheme shown) and keeps it
    # across reloads.
    "AUTHENTICATION_WHITELIST": ["backend.users.authentication.JWTAuthentication"],
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "deepLinking": True},
    # One name for the four events, whether a notification's or a choice of notify_email.
    "ENUM_NAME_OVERRIDES": {"NotificationEvent": "backend.notifications.models.Event"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "backend.common.schema.document_errors",
    ],
}

# The throttle counters live in the cache; a local-memory cache is per process, which is
# what a single web process needs. Point CACHE_URL at Redis to share them across processes.
# The cache is optional at run time: a cache server that is down or hangs costs a request
# at most CACHE_TIMEOUT seconds, and the throttles then let requests through.
try:
    CACHES = {"default": environ.Env.cache_url_config(_text("CACHE_URL", "locmemcache://"))}
except Exception as exc:
    _fail(f"CACHE_URL is not a valid cache URL: {exc}")
# What the service installs and runs with (memcached's clients are not installed: such a
# URL stopped every process with a traceback when the cache was first used).
_USABLE_CACHES = (
    "locmem.LocMemCache",
    "redis.RedisCache",
    "filebased.FileBasedCache",
    "dummy.DummyCache",
)
if CACHES["default"]["BACKEND"].endswith("filebased.FileBasedCache"):
    CACHES["default"]["LOCATION"] = str(_from_top(CACHES["default"]["LOCATION"]))
if not CACHES["default"]["BACKEND"].endswith(_USABLE_CACHES):
    _fail(
        "CACHE_URL names a cache this service does not run with: give locmemcache:// (the "
        "default), rediscache://host:6379/1 (or redis://, rediss://), filecache:///path or "
        "dummycache://"
    )
CACHE_TIMEOUT = _float("CACHE_TIMEOUT", 0.25, positive=True)
if CACHES["default"]["BACKEND"].endswith("redis.RedisCache"):
    CACHES["default"].setdefault("OPTIONS", {}).update(
        socket_connect_timeout=CACHE_TIMEOUT, socket_timeout=CACHE_TIMEOUT
    )
# Each /health/ probe (database, broker, cache) gets this long before it is reported hung.
HEALTH_CHECK_TIMEOUT = _float("HEALTH_CHECK_TIMEOUT", 1.5, positive=True)

# Longest countdown task.
COUNTDOWN_MAX_SECONDS = _positive_int("COUNTDOWN_MAX_SECONDS", 3600)

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = _text("CELERY_BROKER_URL", "filesystem://")
BROKER_FOLDER = _folder("BROKER_FOLDER", VAR_DIR / "broker")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("data", "control", "processed"):
        _writable_folder("BROKER_FOLDER", BROKER_FOLDER / _sub)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_FOLDER / "data"),
        "data_folder_out": str(BROKER_FOLDER / "data"),
        "control_folder": str(BROKER_FOLDER / "control"),
        "processed_folder": str(BROKER_FOLDER / "processed"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
    # Priorities, as file-name order (backend/common/brokers.py).
    CELERY_BROKER_TRANSPORT = "backend.common.brokers:Transport"
elif CELERY_BROKER_URL.split("://", 1)[0] not in {"redis", "rediss", "amqp", "amqps", "pyamqp"}:
    _fail(f"CELERY_BROKER_URL has an unsupported scheme: {CELERY_BROKER_URL.split(':', 1)[0]}")
if CELERY_BROKER_URL.startswith("redis://"):
    # One Redis client per channel, not one per command (backend/common/brokers.py).
    CELERY_BROKER_TRANSPORT = "backend.common.brokers:RedisTransport"
if CELERY_BROKER_URL.startswith(("redis", "rediss")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # One list per priority step; the worker takes step 0 (urgent) first.
        "priority_steps": [0, 3, 6, 9],
        # A worker keeps the messages it holds in its own memory, not in Redis: kombu's
        # emulated acknowledgements (a hash and a sorted set written when a message is taken,
        # again when it is acknowledged) cost the worker's main process two round trips per
        # task, and would hand a held message out again only after a visibility timeout past
        # the longest task. A worker still gives back what it holds when it stops, or when a
        # pool process dies mid-task; a message lost with a killed worker is recovered from
        # the database, as before: the dispatcher sends a pending task again after
        # TASK_REDISPATCH_AFTER, the rescue sweep a running one whose heartbeat stopped.
        "ack_emulation": False,
    }
BROKER_IS_AMQP = CELERY_BROKER_URL.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}
if BROKER_IS_AMQP:
    # A send counts once RabbitMQ has confirmed it (publisher confirms).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# RabbitMQ cuts a consumer that holds a message unacknowledged longer than its
# consumer_timeout (default 30 min), and a worker acknowledges a task when it ends: a task
# whose time limit is longer than this is refused at create time instead of being cut. Set it
# to the server's consumer_timeout (in seconds); only used with RabbitMQ.
BROKER_CONSUMER_TIMEOUT = _positive_int("BROKER_CONSUMER_TIMEOUT", 1800)
CELERY_BROKER_CONNECTION_TIMEOUT = 3

# Sends from the web tier and the dispatcher: a broker that refuses or hangs holds a request
# for about BROKER_PUBLISH_TIMEOUT seconds at most, and after a failed send the senders of
# that process leave new tasks to the dispatcher for BROKER_BREAKER_SECONDS.
BROKER_PUBLISH_TIMEOUT = _float("BROKER_PUBLISH_TIMEOUT", 1.0)
if not 0 < BROKER_PUBLISH_TIMEOUT <= 30:
    _fail(f"BROKER_PUBLISH_TIMEOUT must be between 0 and 30 seconds, got {BROKER_PUBLISH_TIMEOUT}")
BROKER_BREAKER_SECONDS = _float("BROKER_BREAKER_SECONDS", 5.0)
if BROKER_BREAKER_SECONDS < 0:
    _fail(f"BROKER_BREAKER_SECONDS must be >= 0, got {BROKER_BREAKER_SECONDS}")
BROKER_PUBLISH_TRANSPORT_OPTIONS = {
    "max_retries": 0,  # one connection attempt: the dispatcher is the retry
    # Redis
    "socket_timeout": BROKER_PUBLISH_TIMEOUT,
    "socket_connect_timeout": BROKER_PUBLISH_TIMEOUT,
    # AMQP
    "read_timeout": BROKER_PUBLISH_TIMEOUT,
    "write_timeout": BROKER_PUBLISH_TIMEOUT,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The database is the source of truth for results; Celery keeps none.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Two messages reserved per worker process: while a process waits on the database, the next
# message is already at hand (a short task's run is mostly that wait). Priorities still decide
# what is taken from the queue; an urgent message waits behind at most the few a worker has
# already taken. The long queue's workers reserve one per process they may run
# (``--prefetch-multiplier=1 --autoscale=8,2`` in the Procfile and compose: a reserved task
# gets a process of its own within a second), so a long task never waits behind another on a
# busy worker while one elsewhere is free. The embedded broker, which hands messages out once
# per poll, reserves a few more to keep up.
CELERY_WORKER_PREFETCH_MULTIPLIER = _positive_int(
    "CELERY_WORKER_PREFETCH_MULTIPLIER", 4 if CELERY_BROKER_URL.startswith("filesystem://") else 2
)
CELERY_WORKER_CONCURRENCY = _positive_int("CELERY_WORKER_CONCURRENCY", 2)
# After a broker reconnect Celery set a worker's prefetch count to what its pool held then
# (reduced further by the tasks still running), for good: the long queue's worker, shrunk
# to its minimum while idle, could no longer reserve enough to grow (long tasks ran one or
# two at a time until it restarted). Off, it keeps the count it started with; a message it
# takes for a task already running is skipped by the guarded claim.
CELERY_WORKER_ENABLE_PREFETCH_COUNT_REDUCTION = False
# A worker that loses its broker connection lets its running tasks finish (Celery's default
# until 6.0, said here so it stays): a run's outcome is written to the database, not told by
# its message's acknowledgement, so a broker blip does not cut a long countdown or report.
# (backend/celery.py leaves out Celery's warning of the coming default at each reconnect.)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# What a task prints (the mails of EMAIL_URL=consolemail://) goes to the worker's output as
# it is, as under runserver: redirected, Celery logged each write as a WARNING of
# celery.redirected (and LOG_LEVEL=WARNING or above would drop it).
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Short jobs go to "tasks", long-running types (countdown, files, outbound calls) to "long",
# the sweeps to "maintenance": each has worker processes of its own under `make run`, the
# Procfile and compose, so nothing short waits behind something long. A worker started
# without -Q consumes all three.
CELERY_TASK_DEFAULT_QUEUE = "tasks"
TASK_QUEUES = ("tasks", "long", "maintenance")
# RabbitMQ honours message priorities only on classic queues declared with x-max-priority,
# and a queue's arguments cannot change once it exists (README: "RabbitMQ"). The type is
# named: in a virtual host whose default type is quorum, the declaration was refused and
# every worker stopped.
AMQP_MAX_PRIORITY = 10
AMQP_QUEUE_ARGUMENTS = {"x-max-priority": AMQP_MAX_PRIORITY, "x-queue-type": "classic"}
CELERY_TASK_QUEUES = tuple(
    Queue(
        name,
        Exchange(name),
        routing_key=name,
        durable=True,
        queue_arguments=AMQP_QUEUE_ARGUMENTS if BROKER_IS_AMQP else None,
    )
    for name in TASK_QUEUES
)
CELERY_TASK_ROUTES = {
    "backend.tasks.jobs.run_task": {"queue": "tasks"},
    "backend.tasks.jobs.expire_overdue_tasks": {"queue": "maintenance"},
    "backend.tasks.jobs.dispatch_tasks": {"queue": "maintenance"},
    "backend.tasks.jobs.rescue_stale_tasks": {"queue": "maintenance"},
    "backend.common.jobs.purge_idempotency_keys": {"queue": "maintenance"},
    "backend.schedules.jobs.fire_schedule": {"queue": "maintenance"},
    "backend.files.jobs.purge_expired_files": {"queue": "maintenance"},
    # A mail server or a webhook receiver may hang: deliveries never hold up short tasks.
    "backend.notifications.jobs.deliver_notifications": {"queue": "long"},
    "backend.notifications.jobs.deliver_notification": {"queue": "long"},
    "backend.notifications.jobs.dispatch_notifications": {"queue": "maintenance"},
    "backend.ops.jobs.fold_task_counts": {"queue": "maintenance"},
}
CELERY_RESULT_EXPIRES = None
CELERY_BEAT_SCHEDULER = "backend.schedules.beat:Scheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 5
# Celery closes Django's connections around every task; let a worker reuse one for a while.
# Broken connections are still dropped before each task (backend/celery.py); 0 turns reuse off.
CELERY_DB_REUSE_MAX = _positive_int("CELERY_DB_REUSE_MAX", 1000, minimum=0) or None
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- tasks --------------------------------------------------------------------
MAX_ACTIVE_TASKS = _positive_int("MAX_ACTIVE_TASKS", 5)
TASK_EXPIRY_INTERVAL = _positive_int("TASK_EXPIRY_INTERVAL", 15)
TASK_DISPATCH_INTERVAL = _positive_int("TASK_DISPATCH_INTERVAL", 5)
TASK_RESCUE_INTERVAL = _positive_int("TASK_RESCUE_INTERVAL", 30)
# How often Beat sends the notifications that are due (first sends that failed, retries).
NOTIFY_DISPATCH_INTERVAL = _positive_int("NOTIFY_DISPATCH_INTERVAL", 10)
# A running worker task whose heartbeat is older than this is presumed lost.
TASK_HEARTBEAT_TIMEOUT = _positive_int("TASK_HEARTBEAT_TIMEOUT", 60)
# A pending task sent this long ago and still not started is sent again.
TASK_REDISPATCH_AFTER = _positive_int("TASK_REDISPATCH_AFTER", 300)
# PostgreSQL: a run's own writes (claim, progress, outcome) commit without waiting for the WAL
# flush unless this is on; a database crash may then forget the last fraction of a second
# of them, which the dispatcher and the rescue sweep recover (backend/tasks/services/execution.py).
RUN_SYNCHRONOUS_COMMIT = _bool("RUN_SYNCHRONOUS_COMMIT", False)
# PostgreSQL: a worker's pool process writes the outcomes of its completed instant runs
# (a `sum` whose message carries its input) together, in one statement, at most this many
# seconds after the first of them; 0 writes each at once (backend/tasks/outcomes.py).
TASK_OUTCOME_LINGER = _float("TASK_OUTCOME_LINGER", 0.05)
if TASK_OUTCOME_LINGER > 5:
    _fail(f"TASK_OUTCOME_LINGER must be 5 seconds or less, got {TASK_OUTCOME_LINGER}")

CELERY_BEAT_SCHEDULE = {
    "tasks.expire-overdue": {
        "task": "backend.tasks.jobs.expire_overdue_tasks",
        "schedule": timedelta(seconds=TASK_EXPIRY_INTERVAL),
    },
    "tasks.dispatch": {
        "task": "backend.tasks.jobs.dispatch_tasks",
        "schedule": timedelta(seconds=TASK_DISPATCH_INTERVAL),
    },
    "tasks.rescue-stale": {
        "task": "backend.tasks.jobs.rescue_stale_tasks",
        "schedule": timedelta(seconds=TASK_RESCUE_INTERVAL),
    },
    "common.purge-idempotency-keys": {
        "task": "backend.common.jobs.purge_idempotency_keys",
        "schedule": timedelta(hours=1),
    },
    "files.purge-expired": {
        "task": "backend.files.jobs.purge_expired_files",
        "schedule": timedelta(seconds=FILE_CLEANUP_INTERVAL),
    },
    "notifications.dispatch": {
        "task": "backend.notifications.jobs.dispatch_notifications",
        "schedule": timedelta(seconds=NOTIFY_DISPATCH_INTERVAL),
    },
}
# On PostgreSQL, triggers keep the task counts by status and type as appended rows
# (backend/ops); this folds them into one row per pair every so many seconds, so reading
# them stays cheap. SQLite counts the tasks and needs no fold.
OPS_COUNT_FOLD_INTERVAL = _positive_int("OPS_COUNT_FOLD_INTERVAL", 10)
if _db["ENGINE"] != "django.db.backends.sqlite3":
    CELERY_BEAT_SCHEDULE["ops.fold-task-counts"] = {
        "task": "backend.ops.jobs.fold_task_counts",
        "schedule": timedelta(seconds=OPS_COUNT_FOLD_INTERVAL),
    }

# --- operations ---------------------------------------------------------------
# The stats API, /metrics and the admin dashboard read the broker (queue depth, workers
# online) with this deadline in seconds, at most 1, and keep the answers in each process for
# the given seconds, so a page view never waits on the broker twice.
OPS_BROKER_TIMEOUT = _float("OPS_BROKER_TIMEOUT", 1.0)
if not 0 < OPS_BROKER_TIMEOUT <= 1:
    _fail(f"OPS_BROKER_TIMEOUT must be between 0 and 1 second, got {OPS_BROKER_TIMEOUT}")
OPS_WORKERS_CACHE_SECONDS = _float("OPS_WORKERS_CACHE_SECONDS", 10.0)
OPS_QUEUE_DEPTH_CACHE_SECONDS = _float("OPS_QUEUE_DEPTH_CACHE_SECONDS", 2.0)
# GET /metrics answers staff sessions and `Authorization: Bearer <METRICS_TOKEN>`; empty
# means staff only.
METRICS_TOKEN = _text("METRICS_TOKEN", "")

# Behind a TLS-terminating proxy (NUM_PROXIES > 0) a request is secure when the proxy says so
# in X-Forwarded-Proto. With DEBUG off: cookies are sent over HTTPS only and browsers are told
# to use HTTPS (HSTS) for a year. Plain HTTP is redirected to HTTPS by Django when it knows it
# sits behind such a proxy (NUM_PROXIES > 0; except /health/ and /metrics, probed from inside
# the network); without one, Django cannot tell HTTPS from HTTP, and the redirect is left to
# whatever terminates TLS in front (Django's deploy check W008 says as much, and is silenced
# for that case only). Each can be changed from the environment.
if NUM_PROXIES > 0:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", not DEBUG and NUM_PROXIES > 0)
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^metrics/?$"]
SILENCED_SYSTEM_CHECKS = ["security.W008"] if NUM_PROXIES == 0 else []
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has no covering indexes: an index that INCLUDEs columns for PostgreSQL's
    # index-only scans (tasks' task_finished_completed) is an ordinary index there, as
    # intended. Django warns about it (models.W040) on every command; it says nothing useful.
    SILENCED_SYSTEM_CHECKS.append("models.W040")
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = _positive_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", not DEBUG)
# The Content-Security-Policy of every HTML page (backend/common/middleware.py): scripts
# from this service's files only, no inline script; inline styles allowed (Swagger UI, ReDoc
# and the admin's charts set them); ReDoc's search runs in a worker made from a blob.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

# --- email --------------------------------------------------------------------
# Django's email backend from one URL: consolemail:// prints mails (the `make run` default),
# smtp://user:pass@host:port (smtp+tls:// for STARTTLS, smtp+ssl:// for implicit TLS),
# filemail:///path writes them to files, memorymail:// keeps them in memory (tests).
EMAIL_URL = _text("EMAIL_URL", "consolemail://")
_EMAIL_SCHEMES = (
    *("smtp", "smtp+tls", "smtp+ssl", "smtps"),
    *("consolemail", "filemail", "memorymail", "dummymail"),
)
_email_scheme = EMAIL_URL.split("://", 1)[0] if "://" in EMAIL_URL else ""
if _email_scheme not in _EMAIL_SCHEMES:
    # Only the scheme is named: the URL may hold a password.
    _fail(
        "EMAIL_URL must start with smtp://, smtp+tls://, smtp+ssl://, consolemail://, "
        f"filemail:// or memorymail://; got scheme {_email_scheme!r}"
    )
try:
    _email = environ.Env.email_url_config(EMAIL_URL)
except Exception as exc:
    _fail(f"EMAIL_URL ({_email_scheme}://...) is not a valid email URL: {type(exc).__name__}")
if _email_scheme.startswith("smtp") and not _email.get("EMAIL_HOST"):
    _fail(f"EMAIL_URL ({_email_scheme}://...) names no host, e.g. smtp://user:pass@host:587")
if _email_scheme == "filemail":
    # django-environ drops the leading slash of an absolute path; read it as written.
    _email["EMAIL_FILE_PATH"] = str(_from_top(EMAIL_URL.split("://", 1)[1] or VAR_DIR / "mail"))
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
if EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":
    # Django's, with the whole exchange of one send bounded (backend.common.email).
    EMAIL_BACKEND = "backend.common.email.SMTPBackend"
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_FILE_PATH = _email.get("EMAIL_FILE_PATH") or None
DEFAULT_FROM_EMAIL = _text("DEFAULT_FROM_EMAIL", "Async Task Manager <noreply@localhost>")
try:
    sanitize_address(DEFAULT_FROM_EMAIL, "utf-8")  # one mailbox, nothing after it (as a send)
    _local, _at, _domain = parseaddr(DEFAULT_FROM_EMAIL)[1].rpartition("@")
    if not (_local and _domain) or " " in _domain:
        raise ValueError(DEFAULT_FROM_EMAIL)
except ValueError:
    _fail(
        "DEFAULT_FROM_EMAIL must be an address, with or without a name "
        f"(Async Task Manager <noreply@example.com>), got {DEFAULT_FROM_EMAIL!r}"
    )
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Seconds an SMTP connection may take to connect or answer before the send fails; one
# send (connecting to QUIT) may take 12 times this in all.
EMAIL_TIMEOUT = _positive_int("EMAIL_TIMEOUT", 10)
# Recipients one `email` task may have.
EMAIL_TASK_MAX_RECIPIENTS = _positive_int("EMAIL_TASK_MAX_RECIPIENTS", 10)

# --- outbound calls (webhooks, api_integration) --------------------------------
# CIDRs let through despite being loopback/private/link-local (tests, intranets), e.g.
# 127.0.0.0/8,10.0.0.0/8. Empty: only public addresses are called.
OUTBOUND_ALLOWED_NETWORKS = _list("OUTBOUND_ALLOWED_NETWORKS", [])
for _cidr in OUTBOUND_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr, strict=False)
    except ValueError:
        _fail(f"OUTBOUND_ALLOWED_NETWORKS: {_cidr!r} is not a network (e.g. 10.0.0.0/8)")
# Bytes of a response body kept; the rest is dropped and the result says truncated.
OUTBOUND_MAX_BODY = _positive_int("OUTBOUND_MAX_BODY", 64 * 1024)
# First delay, in seconds, before a task whose run failed for a passing reason (a 5xx,
# a timeout) runs again; it doubles at each attempt, with jitter, up to TASK_RETRY_MAX_DELAY.
TASK_RETRY_BACKOFF = _positive_int("TASK_RETRY_BACKOFF", 10)
TASK_RETRY_MAX_DELAY = _positive_int("TASK_RETRY_MAX_DELAY", 600)

# --- notifications ------------------------------------------------------------
# Deliveries tried per notification before it is marked failed.
NOTIFY_MAX_ATTEMPTS = _positive_int("NOTIFY_MAX_ATTEMPTS", 8)
# First delay (seconds) before a failed delivery is tried again; doubles each time, with
# jitter, up to NOTIFY_MAX_DELAY.
NOTIFY_BACKOFF = _positive_int("NOTIFY_BACKOFF", 30)
NOTIFY_MAX_DELAY = _positive_int("NOTIFY_MAX_DELAY", 3600)
# After how long a notification sent but not yet delivered (a lost message, a crashed
# worker) is sent again (NOTIFY_DISPATCH_INTERVAL: how often Beat looks).
NOTIFY_REDISPATCH_AFTER = _positive_int("NOTIFY_REDISPATCH_AFTER", 120)
# Seconds a webhook receiver has to answer.
# An outbound call's bound (SPEC §7): above it, the call was cut at 30 s all the same.
NOTIFY_WEBHOOK_TIMEOUT = _positive_int("NOTIFY_WEBHOOK_TIMEOUT", 10, maximum=30)
# Webhooks and callbacks of one user under way at once (each holds a process of the long
# queue while its receiver answers): the user's others wait for the dispatcher's next round,
# so one user's slow receivers cannot hold every process of the queue.
NOTIFY_USER_CONCURRENCY = _positive_int("NOTIFY_USER_CONCURRENCY", 2)
# Seconds after a rotation of a user's webhook secret during which webhooks are signed with
# the new secret and the one it replaced (two v1 signatures), so a receiver can switch
# without rejecting any; 0: the old one stops at once.
WEBHOOK_SECRET_OVERLAP = _positive_int("WEBHOOK_SECRET_OVERLAP", 86400, minimum=0)
# Where the links in notification mails point (this service's public address).
# `make run` sets it from its PORT when neither the environment nor .env gives it (PORT cannot
# be read here: honcho gives each process of the Procfile its own).
PUBLIC_BASE_URL = _text("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
try:
    _public = urlsplit(PUBLIC_BASE_URL)
    _public.port  # noqa: B018 (a port beyond 65535 or not a number raises here)
except ValueError:
    _public = urlsplit("")
if _public.scheme not in ("http", "https") or not _public.hostname or _public.query:
    _fail(
        "PUBLIC_BASE_URL must be an http(s) address such as https://tasks.example.com, "
        f"got {PUBLIC_BASE_URL!r}"
    )

# --- schedules ----------------------------------------------------------------
# Shortest interval of a recurring schedule, in seconds.
SCHEDULE_MIN_INTERVAL = _positive_int("SCHEDULE_MIN_INTERVAL", 60)
# Schedules one user may own.
MAX_SCHEDULES_PER_USER = _positive_int("MAX_SCHEDULES_PER_USER", 20)
# Runs kept per schedule (its latest ones): each firing removes those beyond, so a schedule
# firing every minute keeps about 16 hours of runs, not a row a minute for ever.
SCHEDULE_RUNS_KEPT = _positive_int("SCHEDULE_RUNS_KEPT", 1000)

# --- logging ------------------------------------------------------------------
LOG_LEVEL = _text("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    _fail(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A 4xx that Django logs with its exception (PermissionDenied, a SuspiciousOperation) is
    # one line: the traceback of an answer the request asked for tells nothing. A 5xx keeps it.
    # The maintenance sweeps beat sends every few seconds are not logged when they did
    # nothing (LOG_LEVEL=DEBUG logs them).
    "filters": {
        "no_4xx_traceback": {"()": "backend.common.logfilters.No4xxTraceback"},
        "quiet_sweeps": {"()": "backend.common.logfilters.QuietSweeps"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["no_4xx_traceback", "quiet_sweeps"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) is dropped: its records reach the root
        # handler above, and each 4xx warning and traceback was printed twice.
        "django": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "INFO"},
        # httpx logs each outbound call's URL at INFO, credentials and query tokens included
        # (webhooks, callbacks, api_integration); what each call did is kept on its task or
        # notification.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
