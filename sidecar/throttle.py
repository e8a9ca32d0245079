"""Limits on failed attempts (sign-in, password change, first-admin secret) that hold under concurrency.

Each attempt is counted before its check runs: while checks are in flight they use up the remaining allowance, so a
burst of simultaneous guesses gets no more checks than the limit, however slow the check (bcrypt) is. Only failures
stay counted once the check is done, in `limits`' moving windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sidecar.errors import TooManyRequests


class Attempt:
    def __init__(self) -> None:
        self.failed = False

    def fail(self) -> None:
        self.failed = True


class FailureLimits:
    """Failure budgets keyed by (kind, value), e.g. ("ip", "192.0.2.1") and ("user", "bob\\x00192.0.2.1")."""

    def __init__(self, limits: dict[str, RateLimitItem]) -> None:
        self._limits = limits
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._in_flight: dict[tuple[str, str], int] = {}

    @contextmanager
    def attempt(self, message: str, **keys: str) -> Iterator[Attempt]:
        """Admit one attempt under every given key, or refuse it with 429; call `fail()` on the attempt when the
        check failed. An exception inside counts as no failure (the check never ran to a verdict)."""
        chosen = [(kind, value) for kind, value in keys.items()]
        for kind, value in chosen:
            remaining = self._limiter.get_window_stats(self._limits[kind], kind, value).remaining
            if remaining - self._in_flight.get((kind, value), 0) <= 0:
                raise TooManyRequests(message)
        for key in chosen:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        attempt = Attempt()
        try:
            yield attempt
        finally:
            for key in chosen:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]
            if attempt.failed:
                for kind, value in chosen:
                    self._limiter.hit(self._limits[kind], kind, value)
