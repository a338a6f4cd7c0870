"""Window constructors: ``rs.windows.tumbling``, ``sliding`` and ``session``.

>>> sliding(size="10s", slide="2s")
Sliding(size_ms=10000, slide_ms=2000, offset_ms=0)
"""

from __future__ import annotations

from datetime import timedelta

from rheostat.api.durations import to_ms
from rheostat.plan.errors import FlowError
from rheostat.plan.logical import Session, Sliding, Tumbling

Duration = str | int | float | timedelta


def tumbling(size: Duration, offset: Duration = 0) -> Tumbling:
    """Fixed, non-overlapping windows of ``size``: ``tumbling("1m")``."""
    size_ms = to_ms(size, "tumbling window size")
    if size_ms <= 0:
        raise FlowError("tumbling window size must be positive")
    return Tumbling(size_ms, to_ms(offset, "window offset") % size_ms)


def sliding(size: Duration, slide: Duration, offset: Duration = 0) -> Sliding:
    """Windows of ``size`` starting every ``slide``: ``sliding(size="10s", slide="2s")``."""
    size_ms, slide_ms = to_ms(size, "sliding window size"), to_ms(slide, "sliding window slide")
    if size_ms <= 0 or slide_ms <= 0:
        raise FlowError("sliding window size and slide must be positive")
    if size_ms % slide_ms:
        raise FlowError(
            f"sliding window size ({size_ms} ms) must be a multiple of its slide ({slide_ms} ms)"
        )
    return Sliding(size_ms, slide_ms, to_ms(offset, "window offset") % slide_ms)


def session(gap: Duration) -> Session:
    """Per-key sessions that close after ``gap`` without rows: ``session("30s")``."""
    gap_ms = to_ms(gap, "session gap")
    if gap_ms <= 0:
        raise FlowError("session gap must be positive")
    return Session(gap_ms)
