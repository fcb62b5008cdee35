"""The one retry policy: bounded, jittered, exponential; time and randomness are injected."""

import random

import pytest

from archiver.errors import TerminalError, TransientError
from archiver.retry import Backoff, Deadline, retry


def test_delays_double_up_to_the_maximum_with_jitter_below_each_ceiling():
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(7)]
    ceilings = [1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings)), delays
    assert len(set(delays)) == len(delays), "jittered: no two waits alike"
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_retry_sleeps_between_transient_failures_and_returns_the_result():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("not yet")
        return "done"

    assert retry(flaky, attempts=5, backoff=Backoff(rng=random.Random(0)), sleep=sleeps.append) == "done"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[0] <= 1.0 < sleeps[1] * 2


def test_retry_gives_up_with_the_last_error_and_never_retries_terminal_ones():
    sleeps = []
    with pytest.raises(TransientError, match="down 3"):
        count = iter(range(1, 10))
        retry(lambda: (_ for _ in ()).throw(TransientError(f"down {next(count)}")), attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2
    with pytest.raises(TerminalError):
        retry(lambda: (_ for _ in ()).throw(TerminalError("no")), attempts=3, sleep=sleeps.append)
    assert len(sleeps) == 2


def test_deadline_on_an_injected_clock():
    now = [100.0]
    deadline = Deadline(5.0, clock=lambda: now[0])
    assert not deadline.expired() and deadline.left() == 5.0
    now[0] = 105.0
    assert deadline.expired() and deadline.left() == 0.0
