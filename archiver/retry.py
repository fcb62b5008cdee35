"""The one retry policy: bounded, jittered exponential backoff with an injected clock.

Everything archiver retries goes through `Backoff`: partitions paused during an outage (schema
registry, S3, the dead-letter topic), the final commits of a stopping daemon and lookups of
Kafka's committed offsets. Clients that retry inside one request (botocore's standard mode) keep
their own; this policy decides when archiver itself tries again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from archiver.errors import TransientError

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays that double from `initial` up to `maximum`, each drawn in [delay/2, delay].

    The jitter keeps partitions (and daemons) that failed together from retrying together.
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one failed attempt."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** self.attempts)
        self.attempts += 1
        return ceiling * (0.5 + self.rng.random() / 2)

    def reset(self) -> None:
        self.attempts = 0


def retry(action: Callable[[], T], *, attempts: int, backoff: Backoff | None = None,
          retry_on: tuple[type[BaseException], ...] = (TransientError,),
          sleep: Callable[[float], None] = time.sleep,
          on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """Call `action` until it returns, at most `attempts` times, sleeping `backoff` between.

    Raises the last error of `retry_on` when every attempt failed; any other error at once.
    """
    backoff = backoff or Backoff(initial=0.5, maximum=5.0)
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as e:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, e)
            sleep(backoff.next_delay())
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Deadline:
    """A point in time on an injected clock: `expired()` and how much is `left()`."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.clock()

    def left(self) -> float:
        return max(0.0, self.start + self.seconds - self.clock())

    def expired(self) -> bool:
        return self.clock() - self.start >= self.seconds
