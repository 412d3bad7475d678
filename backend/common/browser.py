"""Django's session, session-user and messages middleware, left out of the requests that
have no use for them: an API request that carries a Bearer token and asks for JSON.

Such a request is authenticated by its token alone. The JWT authentication comes first in
``DEFAULT_AUTHENTICATION_CLASSES``, and once the header names its type it decides (a user,
or 401); the session is never read. So none of the three has anything to do for it: no
session is read or saved, no ``Vary: Cookie`` is added for it. They still cost about 3 % of such
a request's CPU, a create's included, so they step aside. (Django's CSRF middleware stays in
place for every request: the deployment check asks for that very class, and on the API's
views, exempt from it because DRF's session authentication makes its own check, it does next
to nothing, but replaces a malformed ``csrftoken`` cookie the client sent.)

A request that asks for HTML (the browsable API, Swagger UI), or carries no Bearer token,
or is outside ``/api/``, goes through all three as usual. The classes are subclasses of
Django's, so the admin's checks that they are installed still find them.
"""

from __future__ import annotations

from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from rest_framework_simplejwt.settings import api_settings as jwt_settings

_TOKEN_TYPES = frozenset(kind.lower() for kind in jwt_settings.AUTH_HEADER_TYPES)


def token_only(request) -> bool:
    """True for a request to ``/api/`` with a Bearer token, that does not ask for HTML:
    decided once per request."""
    known = request.__dict__.get("_token_only")
    if known is None:
        meta = request.META
        header = meta.get("HTTP_AUTHORIZATION", "").split(None, 1)
        known = (
            bool(header)
            and header[0].lower() in _TOKEN_TYPES  # schemes are case-insensitive
            and request.path_info.startswith("/api/")
            and "text/html" not in meta.get("HTTP_ACCEPT", "")
        )
        request._token_only = known
    return known


class _BrowserOnly:
    def __call__(self, request):
        if token_only(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_BrowserOnly, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(_BrowserOnly, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, messages.MessageMiddleware):
    pass
