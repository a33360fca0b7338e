"""When to try again: exponential backoff with jitter, bounded in attempts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from hydra.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a call is retried after a lost connection.

    The n-th retry waits ``initial * multiplier**(n-1)`` seconds, capped at
    ``maximum``, scaled by a random factor in [0.5, 1] so that many clients
    retrying at once spread out. ``attempts`` counts retries after the first
    try; ``None`` retries forever (sensible only for subscriptions).
    """

    attempts: int | None = 5
    initial: float = 0.05
    maximum: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts is not None and (type(self.attempts) is not int or self.attempts < 0):
            raise InvalidArgument(f"attempts must be None or an integer >= 0, got {self.attempts!r}")
        for name in ("initial", "maximum", "multiplier"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 <= value <= 3600:
                raise InvalidArgument(f"{name} must be a number in [0, 3600], got {value!r}")
        if self.multiplier < 1:
            raise InvalidArgument(f"multiplier must be >= 1, got {self.multiplier!r}")

    def delays(self) -> Iterator[float]:
        """The pause before each retry; exhausted when no retry is left."""
        delay = self.initial
        n = 0
        while self.attempts is None or n < self.attempts:
            yield min(delay, self.maximum) * random.uniform(0.5, 1.0)
            delay *= self.multiplier
            n += 1


RETRY = Retry()
NO_RETRY = Retry(attempts=0)
# Subscriptions resume for longer than single calls retry: a gateway restart
# takes a second or two.
RESUME = Retry(attempts=20, initial=0.05, maximum=1.0)
