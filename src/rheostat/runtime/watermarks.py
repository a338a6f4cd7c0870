"""Watermark bookkeeping, pure and testable without processes.

``InputWatermarks`` combines the watermarks of a task's input channels: the minimum over
channels that are neither idle nor ended. ``BoundedOutOfOrderness`` is a source's
generator: the largest event time seen minus the allowed disorder.

>>> w = InputWatermarks(2)
>>> w.update(0, 10), w.update(1, 5), w.update(1, 20)
(None, 5, 10)
>>> w.set_idle(0), w.current
(20, 20)
"""

from __future__ import annotations

from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK


class InputWatermarks:
    def __init__(self, inputs: int) -> None:
        self._values = [MIN_WATERMARK] * inputs
        self._idle = [False] * inputs
        self._ended = [False] * inputs
        self.current = MIN_WATERMARK

    def add_input(self) -> int:
        """A new input channel (a reconfiguration added a task upstream); its position."""
        self._values.append(MIN_WATERMARK)
        self._idle.append(False)
        self._ended.append(False)
        return len(self._values) - 1

    def restart(self, channel: int) -> None:
        """Forget ``channel``'s watermark (and idleness): its sender states it again, maybe
        lower (a source task that took over a split). The combined watermark does not go
        back; it holds until the channel speaks.

        >>> w = InputWatermarks(2)
        >>> w.update(0, 10), w.update(1, 20)
        (None, 10)
        >>> w.restart(0); w.update(1, 30), w.update(0, 5), w.current
        (None, None, 10)
        """
        self._values[channel] = MIN_WATERMARK
        self._idle[channel] = False

    @property
    def all_idle(self) -> bool:
        active = [i for i in range(len(self._values)) if not self._ended[i]]
        return bool(active) and all(self._idle[i] for i in active)

    def update(self, channel: int, value: int) -> int | None:
        """Record ``value`` on ``channel``; returns the new combined watermark if it advanced."""
        self._idle[channel] = False
        if value > self._values[channel]:
            self._values[channel] = value
        return self._advance()

    def set_idle(self, channel: int) -> int | None:
        self._idle[channel] = True
        return self._advance()

    def end(self, channel: int) -> int | None:
        self._ended[channel] = True
        self._values[channel] = MAX_WATERMARK
        return self._advance()

    @property
    def all_ended(self) -> bool:
        return all(self._ended)

    def _advance(self) -> int | None:
        live = [v for v, idle, ended in zip(self._values, self._idle, self._ended)
                if not idle and not ended]
        if live:
            candidate = min(live)
        elif all(self._ended):
            candidate = MAX_WATERMARK
        else:
            return None  # everything idle: hold the current watermark
        if candidate > self.current:
            self.current = candidate
            return candidate
        return None


class BoundedOutOfOrderness:
    """Watermark = largest event time seen - ``out_of_order_ms`` - 1 (Flink's definition)."""

    def __init__(self, out_of_order_ms: int) -> None:
        self.delay = out_of_order_ms
        self.max_ts = MIN_WATERMARK

    def observe(self, max_ts: int) -> None:
        self.max_ts = max(self.max_ts, max_ts)

    @property
    def watermark(self) -> int:
        if self.max_ts == MIN_WATERMARK:
            return MIN_WATERMARK
        return self.max_ts - self.delay - 1
