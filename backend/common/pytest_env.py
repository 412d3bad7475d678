"""Loaded by pytest before Django's settings (``-p`` in pyproject's addopts): gives the
test run its own broker folder and a throwaway secret, so tests never touch `make run`'s
queue. Values already in the environment (CI's PostgreSQL and Redis) win."""

import os
import pathlib
import urllib.parse

_ROOT = pathlib.Path(__file__).resolve().parents[2]
# The settings that name the stores a suite runs on (none: the embedded default).
STORES = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
# A developer's .env (make run writes one with DEBUG=true) must not change what the tests see:
# the settings read no file in the tests nor in the processes they start.
os.environ["ENV_FILE"] = ""
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-deployment")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
# The test client speaks plain HTTP: no redirect to HTTPS (production's default).
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
_VAR = pathlib.Path(os.environ.get("VAR_DIR") or _ROOT / "var")

# Under pytest-xdist (``make test`` runs the suite in two processes), each process runs on
# stores of its own, as if alone: a folder (the embedded broker, the SQLite file, uploads)
# and, on Redis, databases of their own (worker N uses database d + 8N for the configured
# d). pytest-django gives each its own test database.
_XDIST = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST:
    _VAR = _VAR / f"xdist-{_XDIST}"
    os.environ["VAR_DIR"] = str(_VAR)
    os.environ.pop("BROKER_FOLDER", None)
    _shift = 8 * int(_XDIST.removeprefix("gw"))
    for _name in ("CELERY_BROKER_URL", "CACHE_URL"):
        _url = urllib.parse.urlsplit(os.environ.get(_name, ""))
        if _shift and _url.scheme.startswith("amqp"):
            raise RuntimeError(
                "CELERY_BROKER_URL is RabbitMQ, whose virtual host the test processes would "
                "share: run the suite in one (make test TEST_PROCESSES=0, or pytest -n 0)"
            )
        if _shift and _url.scheme in {"redis", "rediss", "rediscache"}:
            _db = _url.path.strip("/") or "0"
            if not _db.isdigit() or int(_db) + _shift > 15:
                raise RuntimeError(f"{_name}: no Redis database of its own for {_XDIST}")
            _url = _url._replace(path=f"/{int(_db) + _shift}")
            os.environ[_name] = urllib.parse.urlunsplit(_url)
os.environ.setdefault("BROKER_FOLDER", str(_VAR / "test-broker"))
