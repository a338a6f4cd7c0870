"""A clock that moves only when told: for controllers and sources under test.

>>> clock = FakeClock()
>>> clock(), clock.advance(1.5), clock()
(0.0, 1.5, 1.5)
"""

from __future__ import annotations


class FakeClock:
    """Seconds as a float, like ``time.monotonic``; ``advance`` moves it forward."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock does not go back (advance by {seconds})")
        self.now += seconds
        return self.now
