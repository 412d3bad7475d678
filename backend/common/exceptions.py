"""One error path for the API: domain errors and DRF errors become JSON with the right status."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, list):
        # A message not tied to a field (a filter backend's, say) still gets the usual shape.
        detail = " ".join(str(message) for message in exc.detail)
        return Response({"detail": detail, "code": "invalid"}, status=400)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        data = response.data
        # Errors that carry a single message also carry its code, like domain errors do.
        if (
            isinstance(data, dict)
            and set(data) == {"detail"}
            and not isinstance(exc, exceptions.ValidationError)
        ):
            codes = exc.get_codes()
            data["code"] = codes if isinstance(codes, str) else codes.get("detail", "error")
    if response is not None and response.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
        response.data.setdefault("code", "throttled")
    return response
