"""One error path for the API: domain errors and DRF errors become JSON with the right status,
always ``{"detail", "code"}`` (validation errors keep their per-field lists beside them)."""

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.utils.serializer_helpers import ReturnDict
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import DomainError, too_many_parts


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than the server accepts."
    default_code = "payload_too_large"


def _asks_a_password(serializer) -> bool:
    fields = getattr(serializer, "fields", {})
    return any(field.style.get("input_type") == "password" for field in fields.values())


def _first_message(detail) -> str:
    """A readable one-line summary of a validation error: its first message, with the path
    of fields that leads to it."""
    path = []
    while isinstance(detail, dict | list) and detail:
        if isinstance(detail, dict):
            key = next(iter(detail))
            if key != "non_field_errors":
                path.append(str(key))
            detail = detail[key]
        else:
            detail = detail[0]
    message = str(detail) if detail else "Invalid input."
    return f"{'.'.join(path)}: {message}" if path else message


def _explain_scheme(exc, context):
    """A token sent with another scheme (``Token …``, ``JWT …``) is ignored by the JWT
    authentication: say so, instead of "credentials were not provided"."""
    request = context.get("request")
    header = request.META.get("HTTP_AUTHORIZATION", "") if request is not None else ""
    scheme = header.split(" ", 1)[0]
    if header and scheme.lower() != "bearer":
        return exceptions.NotAuthenticated(
            f"Send the access token as 'Authorization: Bearer <token>'; the "
            f"'{scheme[:20]}' scheme is not accepted.",
            code="not_authenticated",
        )
    return exc


def _say_why_the_token_failed(data) -> None:
    """simplejwt refuses a bad access token with "Given token not valid for any token type"
    and puts the reason (expired, wrong type, bad signature) in a list of its own,
    ``messages``, beside the error's two keys: the reason becomes the detail."""
    if not isinstance(data, dict):
        return
    reasons = data.pop("messages", None)
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        reason = reasons[0].get("message")
        if reason:
            data["detail"] = str(reason)


def _answer_in_json(request) -> None:
    """An error is JSON ``{"detail", "code"}`` (or the browsable API's page), whatever the
    view renders otherwise: the schema's YAML renderer wrote each message as a mapping of
    its text and code."""
    renderer = getattr(request, "accepted_renderer", None)
    if request is not None and (renderer is None or renderer.format not in ("json", "api")):
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type


# A field's refusal that has a code of its own, which the answer's ``code`` carries (the
# field's message stays under the field): a client tells it from any other bad input.
OWN_FIELD_CODES = frozenset({"exceeds_broker_timeout", "too_large", "token_not_valid"})


def _codes(codes):
    if isinstance(codes, dict):
        codes = list(codes.values())
    if isinstance(codes, list):
        for each in codes:
            yield from _codes(each)
    else:
        yield codes


def _own_code(exc: exceptions.ValidationError) -> str:
    """``invalid``, or the one code of OWN_FIELD_CODES that every error of ``exc`` has."""
    found = set(_codes(exc.get_codes()))
    return found.pop() if len(found) == 1 and found <= OWN_FIELD_CODES else "invalid"


def exception_handler(exc, context):
    _answer_in_json(context.get("request"))
    exc = too_many_parts(exc) or exc
    if isinstance(exc, DomainError):
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.NotAuthenticated):
        exc = _explain_scheme(exc, context)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            body = {"detail": _first_message(detail), "code": _own_code(exc), **detail}
            serializer = getattr(detail, "serializer", None)
            if serializer is not None and not _asks_a_password(serializer):
                # The browsable API shows the form again bound to what was sent, each
                # error under its field (it finds the form's serializer on the data); not
                # a form with a password, which would be written back into the page.
                body = ReturnDict(body, serializer=serializer)
        else:
            # A message not tied to a field (a filter backend's, say).
            body = {"detail": " ".join(str(message) for message in detail), "code": "invalid"}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        data = response.data
        _say_why_the_token_failed(data)
        if isinstance(data, dict) and "code" not in data:
            codes = exc.get_codes()
            data["code"] = codes if isinstance(codes, str) else "error"
    return response
