"""A small circuit breaker: after a dependency fails, callers skip it for a few seconds
instead of each waiting for its own timeout (per process; no shared state needed)."""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        """The dependency just failed: skip it for ``seconds``."""
        self._open_until = time.monotonic() + self.seconds

    def reset(self) -> None:
        self._open_until = 0.0
