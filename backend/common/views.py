"""JSON error pages for the API (a client of /api/ never receives an HTML error page), the
API's root, and its docs pages."""

import sys

from django.http import HttpResponse, JsonResponse
from django.urls import NoReverseMatch
from django.views import defaults
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework import permissions, routers
from rest_framework.reverse import reverse

from .errors import no_room
from .middleware import UNHANDLED, error_response, is_api, storage_full


def bad_request(request, exception=None):
    if is_api(request):
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request, exception=None):
    if is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """An error outside every view (the middleware's own): the 500 a view's error gets,
    with its request id when one was given (every 500 carries it, README "Errors"). A disk
    with no room for an upload read there (the CSRF check reads a form's body before any
    view) is the 507 it is in a view."""
    if no_room(sys.exc_info()[1]):
        return storage_full(request, sys.exc_info()[1])
    if is_api(request):
        request_id = getattr(request, "request_id", None)
        if request_id is None:
            return error_response(500, "Internal server error.")
        return error_response(500, UNHANDLED, request_id=request_id)
    return defaults.server_error(request)


class ApiRootView(routers.APIRootView):
    """The API's entry points; open to anyone, so a newcomer sees where to start."""

    permission_classes = [permissions.AllowAny]

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        for name in ("register", "token_obtain_pair", "schema", "swagger-ui", "redoc", "health"):
            response.data[name.replace("_obtain_pair", "").replace("-ui", "")] = _address(
                name, request, kwargs.get("format")
            )
        return response


def _address(name: str, request, format: str | None) -> str:
    """The route's address, with the format suffix the root was asked with (``/api/.json``)
    where the route takes one: the docs and health have none (it was a 500)."""
    if format:
        try:
            return reverse(name, request=request, format=format)
        except NoReverseMatch:
            pass
    return reverse(name, request=request)


def requested_action(view) -> str | None:
    """The viewset action a request asks for. OPTIONS (``metadata``) describes each method
    a route takes with the request cloned to that method: the action that method maps to."""
    action = view.action
    if action == "metadata":
        return view.action_map.get(view.request.method.lower(), action)
    return action


class _DocsPage:
    """OPTIONS on a docs page answers with its methods: drf-spectacular rendered the page's
    template with DRF's OPTIONS description as its data, which Swagger UI's could not
    (500), and ReDoc's sent the whole page."""

    def options(self, request, *args, **kwargs):
        return HttpResponse(status=200)  # DRF adds the Allow header


class SwaggerView(_DocsPage, SpectacularSwaggerSplitView):
    pass


class RedocView(_DocsPage, SpectacularRedocView):
    pass
