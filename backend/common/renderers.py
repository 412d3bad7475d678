"""The browsable API's renderer, with the raw-data form of a PUT or PATCH prefilled with
what may be sent back, the forms after a successful write as after a GET, and a create
refused by a rule of the service shown again as it was typed."""

import json

from django.http import Http404, QueryDict
from django.utils.datastructures import MultiValueDict
from rest_framework import exceptions, renderers
from rest_framework.request import Empty, override_method
from rest_framework.settings import api_settings
from rest_framework.utils.serializer_helpers import ReturnDict


class HTMLFormRenderer(renderers.HTMLFormRenderer):
    """DRF's, showing a date box bound to what was sent that is no date (``"tomorrow"``,
    ``123``) empty, beside its error: DRF parsed it to fill the box, and the page of a
    refused create became a 500 (encode/django-rest-framework#5363)."""

    def render_field(self, field, parent_style):
        try:
            return super().render_field(field, parent_style)
        except (TypeError, ValueError):
            blank = type(field)(field._field, "", field.errors, field._prefix)
            return super().render_field(blank, parent_style)


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF prefills a PUT or PATCH form with the object as the serializer shows it, read-only
    fields (id, dates, statistics) included; sending that back unchanged is refused, since a
    write naming a field it cannot change answers 400. Here only the writable ones are
    prefilled, as the serializer for that method takes them."""

    form_renderer_class = HTMLFormRenderer

    def get_raw_data_form(self, data, view, method, request):
        form = super().get_raw_data_form(data, view, method, request)
        if form is None or method not in ("PUT", "PATCH") or not hasattr(view, "get_serializer"):
            return form
        field = form.fields["_content"]
        try:
            content = json.loads(field.initial or "")
        except ValueError:
            return form
        if not isinstance(content, dict):
            return form
        with override_method(view, request, method):
            serializer = view.get_serializer()
        writable = {name for name, f in serializer.fields.items() if not f.read_only}
        kept = {key: value for key, value in content.items() if key in writable}
        field.initial = json.dumps(kept, indent=4, ensure_ascii=False)
        return form

    def get_context(self, data, accepted_media_type, renderer_context):
        response = renderer_context.get("response")
        self.answered_a_write = response is not None and response.status_code < 400
        if response is not None and response.status_code >= 400:
            view, request = renderer_context.get("view"), renderer_context.get("request")
            _unreadable_body_as_none(request)
            data = _with_the_object(data, view, request)
            if response.status_code in (400, 409):
                data = _bound_to_what_was_sent(data, view, request)
        return super().get_context(data, accepted_media_type, renderer_context)

    def show_form_for_method(self, view, method, request, obj):
        """DRF asks the object's permissions only of the object an answer shows: an action's
        page (``/api/tasks/{id}/cancel/``, answered 405 to its GET) has none, and offered
        its form to anyone who could see the object, to be refused 403. The object is read
        here as the form's method would read it, with its permissions checked, for a user
        signed in: the objects' reads are a user's, and one as the anonymous user (a lapsed
        session, a form without its CSRF token) made the page of their 401 a 500. Nobody
        signed in is offered what the view's own permissions allow (sign-up, sign-in)."""
        if (
            request.user.is_authenticated
            and obj is None
            and getattr(view, "detail", False)
            and hasattr(view, "get_object")
            and method in view.allowed_methods
        ):
            try:
                obj = view.get_object()
            except (exceptions.APIException, Http404):  # not visible, or not theirs to do
                return False
        return super().show_form_for_method(view, method, request, obj)

    def get_rendered_html_form(self, data, view, method, request):
        """After a successful POST or PUT, DRF builds the form of that method from the
        answer's serializer: here the read serializer the views answer with, all read-only,
        so the form came back without a field (and, sent, was refused). The form is the
        view's own, for the object shown, as after a GET. A refused write keeps DRF's way:
        the form bound to what was sent, with its errors."""
        if request.method == method and getattr(self, "answered_a_write", False):
            with override_method(view, request, "GET") as shown:
                return super().get_rendered_html_form(data, view, method, shown)
        return super().get_rendered_html_form(data, view, method, request)

    def render_form_for_serializer(self, serializer):
        # A field whose error is a mapping (a JSON input's, per key) would show only its
        # keys under the box: each message is shown with the path that leads to it.
        errors = getattr(serializer, "_errors", None)
        if isinstance(errors, dict) and any(isinstance(e, dict) for e in errors.values()):
            serializer._errors = ReturnDict(
                {name: _lines(error) for name, error in errors.items()}, serializer=serializer
            )
        return super().render_form_for_serializer(serializer)


def _unreadable_body_as_none(request) -> None:
    """A body the view did not read (a 401, 404 or 405 answered before it) or could not
    (no parser takes it: 415, which DRF raises again at each read, where a body that failed
    to parse reads as empty after its error) reads as empty for the page: DRF's form for the
    method sent read it, parsing an upload the answer refused, and the page became a 500 (a
    body no parser takes) or a 400 (Django's limits on its parts) instead of its answer."""
    if request is not None and request._full_data is Empty:
        request._full_data = request._data = QueryDict("")
        request._files = MultiValueDict()


def _with_the_object(data, view, request):
    """A refused PUT or PATCH answers with the errors of a serializer the view made for the
    data alone (the service changes the object), or of none (a form with a password is not
    shown again bound to what was sent): DRF builds the page's edit forms for that
    serializer's object, and found none, so they came back empty. They are built for the
    object as it is, as after a GET (a form of the method sent, bound to what was sent,
    stays so, with its errors)."""
    serializer = getattr(data, "serializer", None)
    if (
        getattr(serializer, "instance", None) is not None
        or not isinstance(data, dict)
        or request is None
        or request.method not in ("PUT", "PATCH")
        or not hasattr(view, "get_object")
    ):
        return data
    try:
        with override_method(view, request, "GET"):
            shown = view.get_object()
    except Exception:  # gone meanwhile, or not visible: the forms stay empty
        return data
    if serializer is not None:
        serializer.instance = shown
        return data
    return ReturnDict(data, serializer=view.get_serializer(instance=shown))


def _bound_to_what_was_sent(data, view, request):
    """A create the service refused after its input was valid (a deadline in the past, an
    assignee not allowed) answers with no serializer: DRF built the page's create form
    empty, as on a first visit, and what was typed had to be typed again. Here the form is
    bound to what was sent, as after an error of a field (a form with a password is not: it
    would be shown again in the page)."""
    if (
        getattr(data, "serializer", None) is not None
        or not isinstance(data, dict)
        or request is None
        or request.method != "POST"
        or not hasattr(view, "get_serializer")
    ):
        return data
    try:
        sent = request.data
        if not sent:  # nothing read (an empty body, or one that could not be parsed)
            return data
        serializer = view.get_serializer(data=sent)
        if any(f.style.get("input_type") == "password" for f in serializer.fields.values()):
            return data
        serializer.is_valid()
    except Exception:  # an action's serializer that takes no such data: the form stays empty
        return data
    if not serializer._errors:
        # Shown from what was sent (DRF shows a valid serializer's data as its output), the
        # service's reason above the form.
        serializer._errors = ReturnDict(
            {api_settings.NON_FIELD_ERRORS_KEY: [str(data.get("detail", ""))]},
            serializer=serializer,
        )
    return ReturnDict(data, serializer=serializer)


def _lines(error, path: str = "") -> list[str]:
    if isinstance(error, dict):
        return [line for key, inner in error.items() for line in _lines(inner, f"{path}{key}: ")]
    if isinstance(error, list):
        return [line for inner in error for line in _lines(inner, path)]
    return [f"{path}{error}"]
