"""Event-time timers per key, kept per key group, fired in timestamp order.

The registered timers live in ``{key_group: {key: {timestamp, ...}}}`` (what a snapshot
takes); a heap orders them for firing. Deleting a timer only removes it from the sets:
its heap entry is skipped when it comes up, and the heap is rebuilt once stale entries
outnumber live ones. Timers with equal timestamps fire in registration order.

>>> timers = TimerQueue()
>>> timers.register(7, "a", 20); timers.register(7, "b", 10); timers.register(7, "a", 5)
>>> timers.delete(7, "a", 5)
>>> timers.pop(15), timers.pop(15), timers.pop(25)
((7, 'b', 10), None, (7, 'a', 20))
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from typing import Any


class TimerQueue:
    """Timers ``(key group, key, timestamp)``; see the module docstring."""

    def __init__(self) -> None:
        self._timers: dict[int, dict[Any, set[int]]] = {}
        self._heap: list[tuple[int, int, int, Any]] = []
        self._seq = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def register(self, group: int, key: Any, timestamp: int) -> None:
        """Add a timer; registering one that exists changes nothing."""
        times = self._timers.setdefault(group, {}).setdefault(key, set())
        if timestamp not in times:
            times.add(timestamp)
            self._live += 1
            heapq.heappush(self._heap, (timestamp, next(self._seq), group, key))

    def delete(self, group: int, key: Any, timestamp: int) -> None:
        """Remove a timer, if it exists."""
        if self._discard(group, key, timestamp) and len(self._heap) > 2 * self._live + 64:
            self._rebuild()

    def of(self, group: int, key: Any) -> list[int]:
        """The pending timers of one key, earliest first."""
        return sorted(self._timers.get(group, {}).get(key, ()))

    def pop(self, watermark: int) -> tuple[int, Any, int] | None:
        """Remove and return the earliest timer at or before ``watermark``, if any."""
        while self._heap and self._heap[0][0] <= watermark:
            timestamp, _, group, key = heapq.heappop(self._heap)
            if self._discard(group, key, timestamp):
                return group, key, timestamp
        return None

    def _discard(self, group: int, key: Any, timestamp: int) -> bool:
        keyed = self._timers.get(group)
        times = keyed.get(key) if keyed is not None else None
        if times is None or timestamp not in times:
            return False
        times.discard(timestamp)
        self._live -= 1
        if not times:
            del keyed[key]  # type: ignore[union-attr]
            if not keyed:
                del self._timers[group]
        return True

    def _rebuild(self) -> None:
        self._heap = [
            (ts, next(self._seq), group, key)
            for group, keyed in self._timers.items()
            for key, times in keyed.items()
            for ts in times
        ]
        heapq.heapify(self._heap)

    # --- per key group -------------------------------------------------------------

    def groups(self) -> Iterable[int]:
        return self._timers.keys()

    def snapshot(self, group: int) -> dict[Any, list[int]]:
        """The timers of one key group as ``{key: [timestamps]}``."""
        return {key: sorted(times) for key, times in self._timers.get(group, {}).items()}

    def restore(self, group: int, timers: Mapping[Any, Iterable[int]]) -> None:
        """Add the timers of one key group, as :meth:`snapshot` gave them."""
        for key, times in timers.items():
            for ts in times:
                self.register(group, key, ts)

    def drop(self, groups: Iterable[int]) -> None:
        """Forget every timer of ``groups``."""
        for group in groups:
            keyed = self._timers.pop(group, None)
            if keyed:
                self._live -= sum(len(times) for times in keyed.values())
        self._rebuild()
