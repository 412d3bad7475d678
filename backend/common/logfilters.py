"""Logging filters used by ``LOGGING`` (backend/settings.py)."""

import logging


class No4xxTraceback(logging.Filter):
    """Drops the exception from a record of a request answered with a 4xx (Django logs a
    ``PermissionDenied`` or a ``SuspiciousOperation`` with its traceback): the record's own
    line says what happened. A 5xx, and any record that is not about a response, keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
