"""Durations as users write them: ``"2s"``, ``"500ms"``, ``"1m"``, a timedelta, or int ms.

>>> to_ms("10s"), to_ms("1.5m"), to_ms(250)
(10000, 90000, 250)
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)\s*$")


def to_ms(value: str | int | float | timedelta, what: str = "duration") -> int:
    """Milliseconds in ``value``; raises ValueError naming ``what`` when it cannot be read."""
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration like '2s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(
        f"{what}: cannot read {value!r} as a duration; write e.g. '500ms', '2s', '1m', '1h'"
    )
