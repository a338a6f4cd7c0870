"""The logical graph: steps and the edges between them, as frozen data.

A flow built with :mod:`rheostat.api` is a tuple of these steps. Nothing here runs
anything; the runtime looks up an operator for each step kind (see
``rheostat.runtime.operators``) and the planner turns the graph into tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from rheostat.plan.rates import RateSchedule

# The hidden column that carries each row's event time (int64 milliseconds since the
# epoch) through a timestamped stream. Per-record functions never see it; sinks drop it.
EVENT_TIME = "_ts"
MAIN = "main"
LATE = "late"
ERRORS = "errors"

ErrorPolicy = Literal["fail", "skip", "dead_letter"]


@dataclass(frozen=True)
class Port:
    """One output of a step: ``main``, or a side output such as ``late`` or ``errors``."""

    step_id: str
    name: str = MAIN

    def __str__(self) -> str:
        return self.step_id if self.name == MAIN else f"{self.step_id}.{self.name}"


@dataclass(frozen=True)
class Routing:
    """How an edge distributes rows over the downstream step's tasks."""

    kind: Literal["forward", "hash", "broadcast", "rebalance"]
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"hash({', '.join(self.keys)})" if self.kind == "hash" else self.kind


FORWARD = Routing("forward")
REBALANCE = Routing("rebalance")
BROADCAST = Routing("broadcast")


@dataclass(frozen=True)
class Input:
    """An edge into a step: where it comes from and how it is routed (``None``: default)."""

    port: Port
    routing: Routing | None = None


@dataclass(frozen=True)
class Step:
    """Base of every logical step; ``step_id`` keys its state, metrics and reconfiguration."""

    step_id: str
    inputs: tuple[Input, ...]
    parallelism: int | None = field(default=None, kw_only=True)
    #: The step accepts at-least-once processing after a failure: no barrier alignment.
    at_least_once: bool = field(default=False, kw_only=True)
    #: Declared knobs and their values: settings a running job may change (``set_knob``).
    knobs: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    #: What each task of the step asks of the cluster on Ray (``{"GPU": 1}``); ignored
    #: by the inline and local backends.
    resources: Mapping[str, float] = field(default_factory=dict, kw_only=True)

    kind: ClassVar[str] = "step"
    side_ports: ClassVar[tuple[str, ...]] = ()

    @property
    def ports(self) -> tuple[str, ...]:
        return (MAIN, *self.side_ports)

    @property
    def is_keyed(self) -> bool:
        return any(i.routing is not None and i.routing.kind == "hash" for i in self.inputs)


# --- sources and sinks -------------------------------------------------------------


@dataclass(frozen=True)
class SourceStep(Step):
    source: Any = None
    timestamp: str | None = None
    out_of_order_ms: int = 0
    idle_timeout_ms: int | None = None
    rate: float | RateSchedule | None = None  # rows/s, or a schedule (plan.rates)
    batch_size: int = 65_536
    kind = "source"


@dataclass(frozen=True)
class SinkStep(Step):
    sink: Any = None
    kind = "sink"


# --- stateless steps ---------------------------------------------------------------


@dataclass(frozen=True)
class MapStep(Step):
    """``map``, ``filter``, ``flat_map`` (per record, over dicts) or ``map_batches`` (Arrow)."""

    fn: Any = None
    mode: Literal["map", "filter", "flat_map", "map_batches"] = "map"
    on_error: ErrorPolicy = "fail"
    kind = "map"

    @property
    def side_ports(self) -> tuple[str, ...]:  # type: ignore[override]
        return (ERRORS,) if self.on_error == "dead_letter" else ()


@dataclass(frozen=True)
class UnionStep(Step):
    kind = "union"


@dataclass(frozen=True)
class TimestampStep(Step):
    """Re-derive event time from a column, with a new out-of-orderness bound."""

    column: str = ""
    out_of_order_ms: int = 0
    kind = "timestamp"


# --- windows and aggregations -----------------------------------------------------


@dataclass(frozen=True)
class Tumbling:
    size_ms: int
    offset_ms: int = 0
    kind = "tumbling"


@dataclass(frozen=True)
class Sliding:
    size_ms: int
    slide_ms: int
    offset_ms: int = 0
    kind = "sliding"


@dataclass(frozen=True)
class Session:
    gap_ms: int
    kind = "session"


WindowSpec = Tumbling | Sliding | Session


@dataclass(frozen=True)
class Agg:
    """One aggregation: ``kind`` over ``column`` (``None`` for count), or a user reducer."""

    kind: Literal["count", "sum", "min", "max", "mean", "first", "last", "reduce"]
    column: str | None = None
    reducer: Any = None


@dataclass(frozen=True)
class WindowAggregateStep(Step):
    """Keyed windowed aggregation. Emits key columns, ``window_start``, ``window_end``, aggs."""

    keys: tuple[str, ...] = ()
    window: WindowSpec | None = None
    aggs: tuple[tuple[str, Agg], ...] = ()
    allowed_lateness_ms: int = 0
    kind = "window_aggregate"
    side_ports = (LATE,)


@dataclass(frozen=True)
class KeyedProcessStep(Step):
    """Keyed step with per-key state and event-time timers (see ``rheostat.KeyedProcess``)."""

    keys: tuple[str, ...] = ()
    fn: Any = None
    kind = "keyed_process"


@dataclass(frozen=True)
class JoinStep(Step):
    """Two-input keyed join. ``window`` set: window join; else interval join on bounds."""

    left_keys: tuple[str, ...] = ()
    right_keys: tuple[str, ...] = ()
    window: WindowSpec | None = None
    lower_ms: int = 0
    upper_ms: int = 0
    how: Literal["inner"] = "inner"
    suffixes: tuple[str, str] = ("", "_right")
    kind = "join"


STATEFUL_KINDS = frozenset({"window_aggregate", "keyed_process", "join"})
