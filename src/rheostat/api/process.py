"""Keyed process: your per-key logic, with per-key state and event-time timers.

Subclass :class:`KeyedProcess` and pass an instance (or the class) to
``stream.key_by(...).process(...)``. For each incoming batch, :meth:`KeyedProcess.process`
runs once per key present, with that key's rows in arrival order; when the watermark
passes a timer, :meth:`KeyedProcess.on_timer` runs for its key, timers in timestamp
order, before the watermark goes downstream (Flink's ``KeyedProcessFunction``).

- ``key`` is the key value, or a tuple of values for several key columns.
- Rows are dicts of the input columns without the event time; ``ctx.timestamps`` gives
  each row's event time (ms) and ``ctx.timestamp`` the largest.
- Return (or yield) output rows as dicts. The operator fills in the key columns a row
  leaves out and sets ``_ts``: the largest event time among the key's rows in the batch
  (``process``) or the timer's timestamp (``on_timer``); a ``_ts`` you set is ignored.
  On a stream without event time there is no ``_ts``, ``ctx.timestamp`` is ``None`` and
  timers fire only at the end of the input.
  Set ``schema`` (a ``pyarrow.Schema``) to fix the output columns' types.
- ``ctx.state`` is one value per key (``get``, ``set``, ``clear``); it is checkpointed
  and moves with its key group, so it must be picklable. Keep per-key data there, not in
  attributes of the object: one object serves every key of a task.
- ``ctx.register_timer(ts)`` / ``ctx.delete_timer(ts)`` manage event-time timers of the
  current key; registering the same time twice makes one timer. A timer at or before the
  current watermark fires at the next watermark.
- An exception in your code fails the step (the engine reports the step and batch).

>>> class RunningCount(KeyedProcess):
...     def process(self, key, rows, ctx):
...         n = ctx.state.get(0)
...         for row in rows:
...             n += 1
...             yield {"count": n}
...         ctx.state.set(n)

For the common "state in, state and output out" shape, :func:`stateful_map` builds one
from a plain function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast, runtime_checkable

__all__ = ["KeyedProcess", "ProcessContext", "ValueState", "as_keyed_process", "stateful_map"]

Row = dict[str, Any]


@runtime_checkable
class ValueState(Protocol):
    """The current key's state: one picklable value, ``None`` until set."""

    def get(self, default: Any = None) -> Any:
        """The value, or ``default`` when none is set."""
        ...

    def set(self, value: Any) -> None:
        """Replace the value."""
        ...

    def clear(self) -> None:
        """Forget the value (the key then holds no state)."""
        ...


class ProcessContext(Protocol):
    """What :class:`KeyedProcess` methods see besides the key and rows."""

    #: The current key's state.
    state: ValueState
    #: The key: one value, or a tuple for several key columns.
    key: Any
    #: The task's current event-time watermark (ms).
    watermark: int
    #: The largest event time of the rows at hand, or the timer's time in ``on_timer``
    #: (``None`` on a stream without event time).
    timestamp: int | None
    #: The event time of each row, aligned with ``rows`` (``[timestamp]`` in ``on_timer``).
    timestamps: list[int] | None

    def register_timer(self, timestamp: int) -> None:
        """Call ``on_timer(key, timestamp, ctx)`` once the watermark reaches ``timestamp``."""
        ...

    def delete_timer(self, timestamp: int) -> None:
        """Cancel the current key's timer at ``timestamp``, if there is one."""
        ...

    def timers(self) -> list[int]:
        """The current key's pending timers, earliest first."""
        ...


class KeyedProcess:
    """Base class for per-key logic; override :meth:`process` and maybe :meth:`on_timer`.

    >>> class Timeout(KeyedProcess):
    ...     "Emit a row once a key has been quiet for 1 s of event time."
    ...     def process(self, key, rows, ctx):
    ...         last = ctx.state.get()
    ...         if last is not None:
    ...             ctx.delete_timer(last + 1000)
    ...         ctx.state.set(ctx.timestamp)
    ...         ctx.register_timer(ctx.timestamp + 1000)
    ...         return ()
    ...     def on_timer(self, key, timestamp, ctx):
    ...         ctx.state.clear()
    ...         return [{"quiet_since": timestamp - 1000}]
    """

    #: Optional ``pyarrow.Schema`` of the output rows (key columns and ``_ts`` may be left out).
    schema: Any = None

    def process(self, key: Any, rows: list[Row], ctx: ProcessContext) -> Iterable[Row] | None:
        """Handle one batch's rows of ``key`` (arrival order); return the output rows."""
        raise NotImplementedError(f"{type(self).__name__} must define process(key, rows, ctx)")

    def on_timer(self, key: Any, timestamp: int, ctx: ProcessContext) -> Iterable[Row] | None:
        """A timer of ``key`` fired at ``timestamp``; return the output rows."""
        return None


class _StatefulMap(KeyedProcess):
    def __init__(self, fn: Callable[[Any, Row], tuple[Any, Row | None]]) -> None:
        self.fn = fn

    def process(self, key: Any, rows: list[Row], ctx: ProcessContext) -> list[Row]:
        state, out = ctx.state.get(), []
        for row in rows:
            state, value = self.fn(state, row)
            if value is not None:
                out.append(value)
        if state is None:
            ctx.state.clear()
        else:
            ctx.state.set(state)
        return out

    def __repr__(self) -> str:
        return f"stateful_map({getattr(self.fn, '__qualname__', self.fn)!r})"


def stateful_map(fn: Callable[[Any, Row], tuple[Any, Row | None]]) -> KeyedProcess:
    """A :class:`KeyedProcess` from ``fn(state, row) -> (state, output row or None)``.

    ``state`` is ``None`` for a key's first row; returning ``None`` as the state forgets it
    (as in Bytewax).

    >>> def running_sum(total, row):
    ...     total = (total or 0) + row["amount"]
    ...     return total, {"total": total}
    >>> proc = stateful_map(running_sum)   # stream.key_by("user").process(proc)
    """
    if not callable(fn):
        raise TypeError(f"stateful_map needs a function fn(state, row), got {fn!r}")
    return _StatefulMap(fn)


def as_keyed_process(fn: Any) -> KeyedProcess:
    """Check what a user passed to ``process``: a :class:`KeyedProcess` instance or class.

    >>> as_keyed_process(KeyedProcess).__class__.__name__
    'KeyedProcess'
    """
    if isinstance(fn, type) and issubclass(fn, KeyedProcess):
        fn = fn()
    if isinstance(fn, KeyedProcess) or callable(getattr(fn, "process", None)):
        return cast(KeyedProcess, fn)
    raise TypeError(
        f"process() needs a KeyedProcess (subclass it and define process(key, rows, ctx)), "
        f"got {fn!r}; for a plain fn(state, row) -> (state, out) use rs.stateful_map(fn)"
    )
