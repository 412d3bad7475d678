import functools
import logging
import math

from django.conf import settings
from django.http import HttpResponse
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from backend.common.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

# After the cache fails, the throttle does not try it again for a few seconds.
cache_breaker = CircuitBreaker(10)


class _FailsOpen:
    """At ``THROTTLE_AUTH_RATE``; with the cache down, requests go through (logged) instead
    of failing.

    Counted with the cache's atomic increments, over a window that slides: the calls of the
    present window plus those of the one before, weighted by how much of it is still within
    the last ``duration`` seconds. DRF's own throttle read the list of past calls and wrote
    it back: requests arriving together in different web processes each read the same list,
    and about a quarter more than the rate got through."""

    _wait: float | None = None

    def get_rate(self):
        return settings.THROTTLE_AUTH_RATE

    def allow_request(self, request, view):
        if cache_breaker.is_open:
            return True
        try:
            return self._allow(request, view)
        except Exception as exc:  # any cache client error: the cache is optional
            cache_breaker.trip()
            logger.warning("%s throttle skipped: the cache is unavailable (%s)", self.scope, exc)
            return True

    def _allow(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        current = f"{self.key}:{self.duration}:{window}"
        previous = self.cache.get(f"{self.key}:{self.duration}:{window - 1}", 0)
        # Each window's count lives through the next one, which weighs it.
        self.cache.add(current, 0, timeout=2 * self.duration + 1)
        try:
            count = self.cache.incr(current)
        except ValueError:  # it expired in between: a new count
            self.cache.add(current, 0, timeout=2 * self.duration + 1)
            count = self.cache.incr(current)
        left_of_previous = 1 - (now - window * self.duration) / self.duration
        if previous * left_of_previous + count <= self.num_requests:
            return True
        self.cache.decr(current)  # a refused call is not counted
        if count > self.num_requests or not previous:
            self._wait = (window + 1) * self.duration - now  # this window is full
        else:  # until enough of the window before has slid out
            room = (self.num_requests - count) / previous
            self._wait = (left_of_previous - room) * self.duration
        return False

    def wait(self):
        return None if self._wait is None else max(self._wait, 1.0)


class AuthRateThrottle(_FailsOpen, AnonRateThrottle):
    """Calls to the auth endpoints and the sign-in forms, per client address, whoever is
    signed in: DRF's anonymous throttle lets every request of a signed-in user through, and
    a session of one's own made a sign-in form guess others' passwords without a limit."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class EmailChangeThrottle(_FailsOpen, UserRateThrottle):
    """Changes of an account's email or username, per account: each answers whether an
    address is already registered (a username may not be another user's email), which
    others' emails, hidden from them, must not be tried for at any pace."""

    scope = "email_change"


def throttled_login(view):
    """A Django login view (the browsable API's session login, the admin's) behind the
    throttle of the auth endpoints: a POST past ``THROTTLE_AUTH_RATE`` from one address
    answers 429 with ``Retry-After``, so a password cannot be guessed through a form faster
    than through ``/api/token/``."""

    @functools.wraps(view)
    def throttled(request, *args, **kwargs):
        if request.method == "POST":
            throttle = AuthRateThrottle()
            if not throttle.allow_request(request, None):
                response = HttpResponse(
                    "Too many sign-in attempts from this address; try again later.\n",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                wait = throttle.wait()
                if wait is not None:
                    response["Retry-After"] = str(math.ceil(wait))
                return response
        return view(request, *args, **kwargs)

    return throttled
