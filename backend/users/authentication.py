"""Bearer (JWT) authentication: simplejwt's, at less cost per request (every API request
pays it).

- The user is read by one statement written once; simplejwt reads it with
  ``User.objects.get(id=…)``, compiled afresh by the ORM on every request.
- A token whose signature this process has already checked is not checked again: the
  verified tokens are kept by their exact text (at most ``VERIFIED_TOKENS``), and their
  expiry is still checked on every use. A token is the same bytes for its whole life, and a
  client sends it with every request.
"""

from __future__ import annotations

import functools
import uuid

from django.db import connection
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import aware_utcnow, get_md5_hash_password

from backend.common import sql

from .models import User
from .tokens import deactivations_of

_USERS = sql.Rows(User)
_BY_ID = f"SELECT {_USERS.columns('u')} FROM {User._meta.db_table} AS u WHERE u.id = %s"


VERIFIED_TOKENS = 1024
# Schemes are case-insensitive (RFC 9110 §11.1): "bearer" is "Bearer".
_HEADER_TYPES = {kind.lower().encode(): kind.encode() for kind in api_settings.AUTH_HEADER_TYPES}


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(raw_token: bytes):
    """simplejwt's full check (signature, expiry, token type); an error is not kept."""
    return authentication.JWTAuthentication().get_validated_token(raw_token)


class JWTAuthentication(authentication.JWTAuthentication):
    def get_raw_token(self, header):
        parts = header.split()
        if parts and parts[0].lower() in _HEADER_TYPES:
            header = b" ".join([_HEADER_TYPES[parts[0].lower()], *parts[1:]])
        return super().get_raw_token(header)

    def get_validated_token(self, raw_token):
        token = _verified(raw_token)
        try:
            token.check_exp(current_time=aware_utcnow())
        except TokenError:
            # Expired since it was verified: simplejwt's own check says so, in its words.
            return super().get_validated_token(raw_token)
        return token

    def get_user(self, validated_token):
        """As simplejwt's (same checks, same errors), for users keyed by their UUID."""
        try:
            user_id = uuid.UUID(str(validated_token[api_settings.USER_ID_CLAIM]))
        except (KeyError, ValueError) as e:
            raise InvalidToken(_("Token contained no recognizable user identification")) from e
        found = _USERS.fetch(_BY_ID, [User._meta.pk.get_db_prep_value(user_id, connection)])
        if not found:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        user = found[0]
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if deactivations_of(validated_token) != user.deactivations:
            raise AuthenticationFailed(
                _("The token was issued before the account was deactivated; sign in again."),
                code="token_not_valid",
            )
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(
                _("The user's password has been changed."), code="password_changed"
            )
        return user


class JWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's class, for this one (``jwtAuth``)."""

    target_class = "backend.users.authentication.JWTAuthentication"
