from django.conf import settings
from rest_framework.throttling import AnonRateThrottle


class AuthRateThrottle(AnonRateThrottle):
    """Anonymous calls to the auth endpoints, per client address (``THROTTLE_AUTH_RATE``)."""

    scope = "auth"

    def get_rate(self):
        return settings.THROTTLE_AUTH_RATE
