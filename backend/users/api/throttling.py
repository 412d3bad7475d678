import functools
import logging
import math
import time

from django.conf import settings
from django.http import HttpResponse
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from backend.common.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

# After the cache fails, the throttle does not try it again for a few seconds.
cache_breaker = CircuitBreaker(10)
# How many counts in a row (this process's) took too long (``allow_request``).
_slow_counts = [0]


class _FailsOpen:
    """At ``THROTTLE_AUTH_RATE``; with the cache down, requests go through (logged) instead
    of failing.

    Counted with the cache's increments (atomic on Redis and in local memory; a file cache
    reads and writes back, and calls at the same moment may pass), in ``BUCKETS`` buckets a
    period: a call is let through when the calls of its bucket, of the ``BUCKETS`` before it
    (which cover the last ``duration`` seconds, and up to a bucket more) and of the one after
    stay within the rate, so no ``duration`` seconds ever see more. DRF's own throttle read
    the list of past calls and wrote it back: requests arriving together in different web
    processes each read the same list, and about a quarter more than the rate got through."""

    BUCKETS = 6
    _wait: float | None = None

    def get_rate(self):
        return settings.THROTTLE_AUTH_RATE

    def allow_request(self, request, view):
        if cache_breaker.is_open:
            return True
        began = time.monotonic()
        try:
            allowed = self._allow(request, view)
        except Exception as exc:  # any cache client error: the cache is optional
            cache_breaker.trip()
            logger.warning("%s throttle skipped: the cache is unavailable (%s)", self.scope, exc)
            return True
        # Each of the count's three or four round trips is bounded alone: a slow cache,
        # answering each just within CACHE_TIMEOUT, added 1 to 2 s to every sign-in. Too
        # slow is as down: the answer stands, and the next ones skip the cache a while.
        # Only two slow counts in a row, each over twice the timeout (a count is a
        # millisecond): a process's first, which imports and connects the client, or a busy
        # machine's pause, must not turn the throttle off (a fresh worker's did).
        took = time.monotonic() - began
        slow = took > 2 * settings.CACHE_TIMEOUT
        _slow_counts[0] = _slow_counts[0] + 1 if slow else 0
        if _slow_counts[0] >= 2:
            _slow_counts[0] = 0
            cache_breaker.trip()
            logger.warning(
                "%s throttle: the cache took %.2f s (2 x CACHE_TIMEOUT %g s); skipped for a while",
                self.scope,
                took,
                settings.CACHE_TIMEOUT,
            )
        return allowed

    def _allow(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        width = self.duration / self.BUCKETS
        bucket = int(now // width)
        key = f"{self.key}:{self.duration}:{{}}".format
        lifetime = int((self.BUCKETS + 2) * width) + 1
        self.cache.add(key(bucket), 0, timeout=lifetime)
        try:
            count = self.cache.incr(key(bucket))
        except ValueError:  # it expired in between: a new count
            self.cache.add(key(bucket), 0, timeout=lifetime)
            count = self.cache.incr(key(bucket))
        # The other buckets are read after this call is counted, the next one too: of two
        # calls counted together on either side of a bucket's turn, the later to read sees
        # the other (read first, both could miss each other, and up to twice the rate got
        # through at a turn). At worst a burst at a turn refuses a few calls too many.
        earlier = range(bucket - self.BUCKETS, bucket)
        found = self.cache.get_many([key(b) for b in [*earlier, bucket + 1]])
        counts = [(b, found.get(key(b), 0)) for b in earlier]
        later = found.get(key(bucket + 1), 0)
        over = sum(c for _, c in counts) + count + later - self.num_requests
        if over <= 0:
            return True
        self.cache.decr(key(bucket))  # a refused call is not counted
        # Until enough of the earliest buckets have left the count (the present one's own
        # calls, then the next one's, when they alone are too many, leave it last).
        for b, c in [*counts, (bucket, count - 1), (bucket + 1, later)]:
            over -= c
            if over <= 0:
                self._wait = (b + self.BUCKETS + 1) * width - now
                break
        else:
            self._wait = self.duration
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
