"""Refresh tokens: each one exchanged once, and all of a user's ended by a new password.

simplejwt's rotation checks the blacklist when it reads the token, then adds the token to
it with ``get_or_create``: requests that arrive together with one refresh token all pass the
check, and each gets a new pair, so a stolen token replayed beside the real one becomes a
second session. Here the insert into the blacklist decides: its row per token is unique, so
of the requests racing with one token exactly one inserts it and is answered.
"""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt import tokens
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from backend.common.storable import storable


class SaneExpiryMixin:
    """An ``exp`` beyond the dates Python holds (10**20, in a token signed with the key) is
    an invalid token, not an ``OverflowError`` (a 500) on every request that carries it."""

    def check_exp(self, claim="exp", current_time=None) -> None:
        try:
            super().check_exp(claim, current_time)
        except (OverflowError, OSError, ValueError):
            raise TokenError(_("Token '{}' claim is not a valid time").format(claim)) from None


# The claim holding the count of the user's deactivations at the token's issue (a token
# without it: none). The access tokens of a refresh token copy it.
DEACTIVATIONS_CLAIM = "deactivations"


class DeactivationsMixin:
    """A token carries how many times its user had been deactivated when it was issued: one
    from before a deactivation is refused once the account is active again
    (backend/users/authentication.py), where it worked again for its remaining minutes."""

    @classmethod
    def for_user(cls, user):
        token = super().for_user(user)
        token[DEACTIVATIONS_CLAIM] = user.deactivations
        return token


def deactivations_of(token) -> object:
    return token.get(DEACTIVATIONS_CLAIM, 0)


class AccessToken(SaneExpiryMixin, DeactivationsMixin, tokens.AccessToken):
    pass


class UntypedToken(SaneExpiryMixin, tokens.UntypedToken):
    pass


# OutstandingToken.jti's length.
MAX_JTI = 255


def storable_id(jti) -> bool:
    """Whether ``jti`` is an id the blacklist can hold and look up: a string of 1 to
    MAX_JTI characters, with no NUL nor lone surrogate (PostgreSQL's text refuses them)."""
    return isinstance(jti, str) and 0 < len(jti) <= MAX_JTI and storable(jti)


class IdRequiredMixin:
    """A refresh token (signed with the key, by a tool, say) is invalid without an id
    (``jti``) that the blacklist can hold, or without a user: simplejwt looked it up in the
    blacklist before checking it had an id, and wrote one too long for the column (a 500
    each, as one with a NUL or a lone surrogate did), and a rotation without a user gave out
    an access token of nobody."""

    def check_blacklist(self) -> None:
        if not storable_id(self.payload.get(api_settings.JTI_CLAIM)):
            raise TokenError(_("Token has no id"))
        if not self.payload.get(api_settings.USER_ID_CLAIM):
            raise TokenError(_("Token contained no recognizable user identification"))
        super().check_blacklist()


class SingleUseRefreshToken(SaneExpiryMixin, IdRequiredMixin, DeactivationsMixin, RefreshToken):
    def blacklist(self) -> tuple[BlacklistedToken, bool]:
        """Blacklist this token; ``TokenError`` when it already is, even by a request that
        committed a moment ago."""
        outstanding = self.outstand()
        if isinstance(outstanding, tuple):  # simplejwt answers get_or_create's pair
            outstanding = outstanding[0]
        try:
            with transaction.atomic():
                return BlacklistedToken.objects.create(token=outstanding), True
        except IntegrityError:
            raise TokenError(_("Token is blacklisted")) from None


def token_user_locked(token: RefreshToken) -> tuple[str, bool, int] | None:
    """Lock the row of the token's user until the transaction ends. A new password and a
    deactivation write that row, then revoke the user's refresh tokens, in one transaction:
    a refresh or a logout holding the lock either ends before the revocation reads the open
    tokens (the new token is among them) or starts after it (its own token is revoked).
    Without it, a refresh under way as a password changed recorded its new token after the
    revocation, and the session outlived the new password."""
    user_id = token.payload.get(api_settings.USER_ID_CLAIM)
    if isinstance(user_id, str | int) and not isinstance(user_id, bool):
        return user_row_locked(**{api_settings.USER_ID_FIELD: user_id})
    return None


def user_row_locked(**lookup) -> tuple[str, bool, int] | None:
    """Lock the user's row until the transaction ends (``token_user_locked``); its password
    hash, ``is_active`` and ``deactivations`` as the row holds them now, or None when it is
    gone. The lock leaves the keys alone (as a save's own), so rows that name the user (a
    task created, a token recorded) are not held up by it."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.select_for_update(no_key=True)
    return users.filter(**lookup).values_list("password", "is_active", "deactivations").first()


def refresh_tokens_revoke(user) -> int:
    """Blacklist every refresh token of ``user`` that is still open (a new password ends
    every session; an access token runs out within ``JWT_ACCESS_MINUTES``)."""
    return _revoke(Q(user=user))


def refresh_tokens_revoke_all(users: QuerySet) -> int:
    """``refresh_tokens_revoke`` for each of ``users`` (a deactivation: a refresh token
    issued before it must not work again once the account is reactivated)."""
    return _revoke(Q(user__in=users.values("pk")))


def browser_sessions_end(user_ids) -> None:
    """Delete the users' browser sessions (the admin's, the browsable API's), as a
    deactivation must: Django checks a session against the password only, so one from
    before worked again once the account was reactivated. A session names its user only
    inside its encoded data: the unexpired ones are read (deactivations are rare, and the
    sessions are only those of people signed in to the admin or the browsable API)."""
    wanted = {str(pk) for pk in user_ids}
    ended = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if session.get_decoded().get(SESSION_KEY) in wanted
    ]
    Session.objects.filter(pk__in=ended).delete()


def _revoke(whose: Q) -> int:
    open_tokens = OutstandingToken.objects.filter(
        whose, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    created = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in open_tokens], ignore_conflicts=True
    )
    return len(created)
