import logging

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle

from backend.common.breaker import CircuitBreaker

logger = logging.getLogger(__name__)

# After the cache fails, the throttle does not try it again for a few seconds.
cache_breaker = CircuitBreaker(10)


class AuthRateThrottle(AnonRateThrottle):
    """Anonymous calls to the auth endpoints, per client address (``THROTTLE_AUTH_RATE``).

    Fails open: with the cache down, requests go through (logged) instead of failing.
    """

    scope = "auth"

    def get_rate(self):
        return settings.THROTTLE_AUTH_RATE

    def allow_request(self, request, view):
        if cache_breaker.is_open:
            return True
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # any cache client error: the cache is optional
            cache_breaker.trip()
            logger.warning("auth throttle skipped: the cache is unavailable (%s)", exc)
            return True
