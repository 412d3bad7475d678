"""``Idempotency-Key`` for every POST that creates something.

Decorate the view method that creates::

    @idempotent
    def create(self, request, *args, **kwargs): ...

A request with the header runs in one transaction with the insert of its key, unique per
user (anonymous ones, i.e. registering, share one space; their bodies hold the password, so
only the client that sent one can replay it): the first one creates and its 2xx response is stored; a retry with the same key and
the same request gets that response back (header ``Idempotent-Replayed: true``) without
creating again; the same key with another request → 422 ``idempotency_key_reused``. Two
requests racing with one key: the unique constraint makes the second wait for the first to
commit, then it answers with the first's response. Keys live ``IDEMPOTENCY_TTL`` seconds.
A response that is not 2xx is not stored (the transaction rolls back), so a retry runs again.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from datetime import timedelta

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.utils import encoders

from .errors import DomainError
from .models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

SCHEMA_PARAMETER = OpenApiParameter(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    OpenApiParameter.HEADER,
    required=False,
    description="A unique value (e.g. a UUID) per intended creation: a retry with the same "
    "key returns the first response instead of creating again. The same key with a "
    "different request is refused with 422.",
)


class IdempotencyKeyReused(DomainError):
    status_code = 422
    code = "idempotency_key_reused"


def _canonical(value):
    """Request data as plain JSON, whatever parser produced it (files by their content)."""
    if isinstance(value, UploadedFile):
        return {"file": value.name, "size": value.size, "sha256": getattr(value, "sha256", None)}
    if hasattr(value, "lists"):  # QueryDict / MultiValueDict
        return {key: [_canonical(v) for v in values] for key, values in value.lists()}
    if isinstance(value, dict):
        return {str(key): _canonical(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _fingerprint(request, view: str, kwargs: dict, secret: str | None = None) -> str:
    """What the request asks for: the view method it reaches (not its path, which a
    retry may spell with or without the trailing slash, a format suffix or an alias such as
    ``/api/tasks/create/``), the URL's arguments and the body."""
    files = getattr(request, "FILES", None) or {}
    payload = {
        "method": request.method,
        "view": view,
        "kwargs": {key: str(value) for key, value in kwargs.items() if key != "format"},
        "data": _canonical(request.data),
        "files": _canonical(files),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    # Keyed by the secret key: a body may hold a password (registering, staff creating a
    # user), and a plain hash of it kept in the database could be guessed at offline.
    key = (secret or settings.SECRET_KEY).encode()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _same_request(record: IdempotencyKey, request, view: str, kwargs: dict) -> bool:
    """Whether a key stored before now was for this request, by the fingerprints it may have
    been stored with: under a secret key since replaced (``SECRET_KEY_FALLBACKS``), or in
    the earlier form (SHA-256 of method, path and body), which keys stored before that form
    changed hold until they expire (``IDEMPOTENCY_TTL``)."""
    secrets = getattr(settings, "SECRET_KEY_FALLBACKS", [])
    candidates = [_fingerprint(request, view, kwargs, secret) for secret in secrets]
    earlier = {
        "method": request.method,
        "path": request.path,
        "data": _canonical(request.data),
        "files": _canonical(getattr(request, "FILES", None) or {}),
    }
    text = json.dumps(earlier, sort_keys=True, default=str)
    candidates.append(hashlib.sha256(text.encode()).hexdigest())
    return any(hmac.compare_digest(record.fingerprint, value) for value in candidates)


def _key_of(request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    # ASCII: the server reads a header's other bytes as Latin-1, so one key sent as UTF-8 by
    # one client and as Latin-1 by another was two keys (and stored garbled).
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise DomainError(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            code="invalid_idempotency_key",
        )
    return key


def _replay(record: IdempotencyKey) -> Response:
    body = None if record.response_body is None else json.loads(record.response_body)
    response = Response(body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view_method):
    view = f"{view_method.__module__}.{view_method.__qualname__}"

    @functools.wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = _key_of(request)
        if key is None:
            return view_method(self, request, *args, **kwargs)
        user = request.user if request.user.is_authenticated else None
        fingerprint = _fingerprint(request, view, kwargs)
        now = timezone.now()
        IdempotencyKey.objects.filter(
            user=user,
            key=key,
            created_at__lt=now - timedelta(seconds=settings.IDEMPOTENCY_TTL),
        ).delete()
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = IdempotencyKey.objects.create(
                        user=user, key=key, fingerprint=fingerprint, created_at=now
                    )
            except IntegrityError:
                # Used before (or by a request that has just committed): answer as it did.
                record = IdempotencyKey.objects.get(user=user, key=key)
                if record.fingerprint != fingerprint and not _same_request(
                    record, request, view, kwargs
                ):
                    raise IdempotencyKeyReused(
                        f"This {HEADER} was used for a different request; use a new key."
                    ) from None
                return _replay(record)
            response = view_method(self, request, *args, **kwargs)
            if status.is_success(response.status_code):
                record.status_code = response.status_code
                record.response_body = json.dumps(response.data, cls=encoders.JSONEncoder)
                record.save(update_fields=["status_code", "response_body"])
            else:
                transaction.set_rollback(True)
            return response

    return extend_schema(parameters=[SCHEMA_PARAMETER])(wrapper)


def idempotency_keys_purge() -> int:
    """Delete keys older than ``IDEMPOTENCY_TTL`` (run by Beat)."""
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
