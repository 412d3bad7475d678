"""Domain errors raised by services; the API's exception handler turns them into responses."""

import errno

# A write the disk (or the user's quota on it) had no room for: the service's state, not a
# fault of the request nor of the code.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_room(exception: BaseException | None) -> bool:
    """A write the disk (or the user's quota on it) had no room for."""
    return isinstance(exception, OSError) and exception.errno in _NO_ROOM


class DomainError(Exception):
    """A business rule refused an operation. ``code`` is stable and machine-readable."""

    status_code = 400
    code = "invalid"

    def __init__(self, detail: str, *, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class Conflict(DomainError):
    """The operation does not fit the current state (HTTP 409)."""

    status_code = 409
    code = "conflict"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class PermissionDenied(DomainError):
    status_code = 403
    code = "permission_denied"


class PayloadTooLarge(DomainError):
    """The request carries more than the service accepts (HTTP 413)."""

    status_code = 413
    code = "too_large"


def too_many_parts(exc: BaseException) -> DomainError | None:
    """Django's refusal to parse a request with more fields (query parameters included) or
    files than its limits, as a 400 (it was a 500); None for any other error."""
    from django.conf import settings
    from django.core.exceptions import TooManyFieldsSent, TooManyFilesSent

    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return DomainError(f"The request has more than {limit} files.", code="too_many_files")
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return DomainError(
            f"The request has more than {limit} fields and query parameters.",
            code="too_many_fields",
        )
    return None
