"""Loaded by pytest before Django's settings (``-p`` in pyproject's addopts): gives the
test run its own broker folder and a throwaway secret, so tests never touch `make run`'s
queue. Values already in the environment (CI's PostgreSQL and Redis) win."""

import os
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parents[2]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
# A developer's .env (make run writes one with DEBUG=true) must not change what the tests see:
# the settings read no file in the tests nor in the processes they start.
os.environ["ENV_FILE"] = ""
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-deployment")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
# The test client speaks plain HTTP: no redirect to HTTPS (production's default).
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
_VAR = pathlib.Path(os.environ.get("VAR_DIR") or _ROOT / "var")
os.environ.setdefault("BROKER_FOLDER", str(_VAR / "test-broker"))
