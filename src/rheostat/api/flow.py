"""Building flows: ``Flow``, ``Stream``, ``KeyedStream`` and ``WindowedStream``.

Building a flow runs nothing: each method appends one frozen step (see
:mod:`rheostat.plan.logical`) and returns a handle to its output.

>>> import pyarrow as pa
>>> from rheostat.runtime.io import ListReader, Source
>>> flow = Flow("doc")
>>> class Rows(Source):
...     def splits(self, parallelism): return [0]
...     def open(self, split, position=None, batch_size=0):
...         return ListReader([pa.record_batch({"k": ["a"], "t": [1]})], position)
>>> s = flow.source("rows", Rows(), timestamp="t")
>>> s.key_by("k").window(tumbling("1s")).aggregate(n=count()).sink("out", None)
>>> [step.step_id for step in flow.steps]
['rows', 'rows.aggregate', 'out']
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from rheostat.api.agg import count
from rheostat.api.durations import to_ms
from rheostat.api.process import as_keyed_process, stateful_map
from rheostat.api.windows import tumbling
from rheostat.plan.errors import FlowError
from rheostat.plan.logical import (
    BROADCAST,
    ERRORS,
    EVENT_TIME,
    LATE,
    MAIN,
    REBALANCE,
    Agg,
    ErrorPolicy,
    Input,
    JoinStep,
    KeyedProcessStep,
    MapStep,
    Port,
    Routing,
    Session,
    SinkStep,
    SourceStep,
    Step,
    TimestampStep,
    UnionStep,
    WindowAggregateStep,
    WindowSpec,
)
from rheostat.plan.rates import RateSchedule

__all__ = ["Flow", "KeyedStream", "Stream", "WindowedStream", "count", "tumbling"]

Duration = str | int | float | timedelta
_ERROR_POLICIES = ("fail", "skip", "dead_letter")
_WINDOW_COLUMNS = ("window_start", "window_end")


class Flow:
    """A dataflow: a named graph of steps. Building it runs nothing.

    >>> Flow("empty").steps
    ()
    """

    def __init__(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise FlowError("a flow needs a non-empty name")
        self.name = name
        self._steps: dict[str, Step] = {}

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps.values())

    def step(self, step_id: str) -> Step:
        return self._steps[step_id]

    def source(
        self,
        step_id: str,
        source: Any,
        *,
        timestamp: str | None = None,
        out_of_order: Duration = 0,
        idle_timeout: Duration | None = None,
        rate: float | Sequence[tuple[float, float]] | None = None,
        batch_size: int = 65_536,
        parallelism: int | None = None,
    ) -> Stream:
        """Read from ``source``. ``timestamp`` names the event-time column (a timestamp or
        int milliseconds); watermarks trail the largest event time seen by ``out_of_order``.
        ``rate`` limits the source to that many rows per second (all its tasks together),
        or paces it by a schedule: ``rate=[(0, 1000), (20, 2000), (40, 500)]`` reads 1000
        rows/s, 2000 from 20 s, 500 from 40 s (seconds since each source task's first
        read; :mod:`rheostat.plan.rates`)."""
        if not hasattr(source, "splits") or not hasattr(source, "open"):
            raise FlowError(
                f"source step {step_id!r}: {source!r} is not a source; "
                "use one of rs.sources (nexmark, parquet, csv, jsonl, ...)"
            )
        if isinstance(rate, (int, float)):
            if rate <= 0:
                raise FlowError(f"source step {step_id!r}: rate must be positive, got {rate!r}")
        elif rate is not None:
            try:
                rate = RateSchedule.of(rate)
            except (TypeError, ValueError) as e:
                raise FlowError(f"source step {step_id!r}: rate is rows per second or a list "
                                f"of (from_s, rows_per_s) steps; {e}") from None
        if batch_size < 1:
            raise FlowError(f"source step {step_id!r}: batch_size must be >= 1")
        schema = source.schema() if hasattr(source, "schema") else None
        columns = tuple(schema.names) if schema is not None else None
        if timestamp is not None and columns is not None and timestamp not in columns:
            raise FlowError(
                f"source step {step_id!r}: timestamp column {timestamp!r} is not in the "
                f"source's columns {list(columns)}"
            )
        step = SourceStep(
            step_id,
            (),
            parallelism=parallelism,
            source=source,
            timestamp=timestamp,
            out_of_order_ms=to_ms(out_of_order, f"{step_id}: out_of_order"),
            idle_timeout_ms=None if idle_timeout is None else to_ms(idle_timeout, "idle_timeout"),
            rate=rate,
            batch_size=batch_size,
        )
        self._add(step)
        return Stream(self, Port(step_id), columns, timestamp is not None)

    def _add(self, step: Step) -> None:
        if not isinstance(step.step_id, str) or not step.step_id:
            raise FlowError(f"step ids must be non-empty strings, got {step.step_id!r}")
        if step.step_id in self._steps:
            raise FlowError(
                f"duplicate step id {step.step_id!r} in flow {self.name!r}; give each step "
                "a unique name (step ids key state and metrics)"
            )
        self._steps[step.step_id] = step

    def _fresh_id(self, base: str) -> str:
        if base not in self._steps:
            return base
        n = 2
        while f"{base}_{n}" in self._steps:
            n += 1
        return f"{base}_{n}"

    def validate(self) -> None:
        """Raise :class:`FlowError` for a flow that cannot run: no sink, unconsumed outputs."""
        if not self._steps:
            raise FlowError(f"flow {self.name!r} has no steps")
        consumed = {inp.port for s in self._steps.values() for inp in s.inputs}
        if not any(isinstance(s, SinkStep) for s in self._steps.values()):
            raise FlowError(f"flow {self.name!r} has no sink; add one with stream.sink(...)")
        for s in self._steps.values():
            if isinstance(s, SinkStep):
                continue
            if Port(s.step_id, MAIN) not in consumed:
                raise FlowError(
                    f"the output of step {s.step_id!r} goes nowhere: connect it to a step "
                    "or a sink (rs.sinks.null() to discard it on purpose)"
                )

    def to_mermaid(self) -> str:
        """The flow as a Mermaid diagram (paste into any Markdown that renders Mermaid)."""
        lines = ["flowchart LR"]
        for s in self._steps.values():
            label = f"{s.step_id}<br/><small>{s.kind}</small>"
            shape = (f"[/{label}/]" if isinstance(s, SourceStep | SinkStep) else f"[{label}]")
            lines.append(f"    {_node(s.step_id)}{shape}")
        for s in self._steps.values():
            for inp in s.inputs:
                tags = [] if inp.port.name == MAIN else [inp.port.name]
                if inp.routing is not None and inp.routing.kind != "forward":
                    tags.append(str(inp.routing))
                arrow = f"-- {' '.join(tags)} -->" if tags else "-->"
                lines.append(f"    {_node(inp.port.step_id)} {arrow} {_node(s.step_id)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self._steps)})"


def _node(step_id: str) -> str:
    return "s_" + "".join(c if c.isalnum() else "_" for c in step_id)


@dataclass(frozen=True)
class Stream:
    """The output of a step. Methods add steps downstream and return their outputs."""

    flow: Flow
    port: Port
    #: Column names when known at build time (for checks), else None.
    columns: tuple[str, ...] | None = None
    #: Whether rows carry event time (the source named a timestamp column).
    timestamped: bool = False
    routing: Routing | None = None

    # --- stateless ------------------------------------------------------------------

    def map(
        self, fn: Callable[[dict], dict], *, name: str | None = None,
        on_error: ErrorPolicy = "fail", parallelism: int | None = None,
        knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        """Apply ``fn`` to every row (a dict), which returns the new row.

        Python runs once per row: prefer :meth:`map_batches` on hot paths. ``knobs``
        declares settings a running job may change (``rheostat knob``): ``{name: initial
        value}`` with JSON scalar values; ``fn`` then gets them as keyword arguments,
        ``fn(row, **knobs)`` (likewise for :meth:`filter`, :meth:`flat_map` and
        :meth:`map_batches`).

        Rows need not all have the same keys (as in Bytewax, where a row is any dict):
        the output has the union of the keys returned so far, null where a row lacks
        one, and a key first returned later adds a column from that batch on; nothing
        returned is dropped. A value whose type does not fit its column (a string in a
        column of ints) fails the step on the input row that returned it, or skips it
        under ``on_error``.
        """
        return self._map(fn, "map", name, on_error, parallelism, knobs)

    def filter(
        self, fn: Callable[[dict], bool], *, name: str | None = None,
        on_error: ErrorPolicy = "fail", parallelism: int | None = None,
        knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        """Keep the rows for which ``fn(row)`` is true."""
        return replace(self._map(fn, "filter", name, on_error, parallelism, knobs),
                       columns=self.columns)

    def flat_map(
        self, fn: Callable[[dict], Iterable[dict]], *, name: str | None = None,
        on_error: ErrorPolicy = "fail", parallelism: int | None = None,
        knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        """Replace every row by the rows ``fn(row)`` yields (zero or more)."""
        return self._map(fn, "flat_map", name, on_error, parallelism, knobs)

    def map_batches(
        self, fn: Callable[[Any], Any], *, name: str | None = None,
        on_error: ErrorPolicy = "fail", parallelism: int | None = None,
        knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        """Apply ``fn`` to whole ``pyarrow.RecordBatch`` es; it returns a RecordBatch or Table.

        The vectorised fast path: use pyarrow.compute, polars, numpy or DuckDB inside.
        A timestamped batch carries the hidden ``_ts`` column; filtering or slicing keeps it,
        and an output with as many rows as the input gets it back automatically.
        """
        return self._map(fn, "map_batches", name, on_error, parallelism, knobs)

    def _map(
        self, fn: Any, mode: str, name: str | None, on_error: str, parallelism: int | None,
        knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        if not callable(fn):
            raise FlowError(f"{mode}(...) on {self.port}: expected a function, got {fn!r}")
        if on_error not in _ERROR_POLICIES:
            raise FlowError(f"on_error must be one of {_ERROR_POLICIES}, got {on_error!r}")
        step_id = name or self.flow._fresh_id(f"{self.port.step_id}.{mode}")
        declared = check_knobs(step_id, knobs)
        missing = missing_knob_parameters(fn, declared)
        if missing:
            raise FlowError(f"step {step_id!r}: its function takes no parameter for knob(s) "
                            f"{missing}; it is called as fn(input, **knobs), so add them "
                            "(or **knobs) to its parameters")
        step = MapStep(step_id, (self._input(),), parallelism=parallelism, fn=fn,
                       mode=mode, on_error=on_error, knobs=declared)  # type: ignore[arg-type]
        self.flow._add(step)
        return Stream(self.flow, Port(step_id), None, self.timestamped)

    def with_timestamp(
        self, column: str, *, out_of_order: Duration = 0, name: str | None = None
    ) -> Stream:
        """Take event time from ``column`` from here on (e.g. after a map that computed it)."""
        self._check_columns([column], "with_timestamp")
        step_id = name or self.flow._fresh_id(f"{self.port.step_id}.with_timestamp")
        step = TimestampStep(step_id, (self._input(),), column=column,
                             out_of_order_ms=to_ms(out_of_order, "out_of_order"))
        self.flow._add(step)
        return Stream(self.flow, Port(step_id), self.columns, True)

    def at_least_once(self) -> Stream:
        """Declare that the step making this stream may see rows again after a failure.

        A task whose steps all say so does not align checkpoint barriers (no input is held
        back while the others catch up): lower latency, and after a recovery some rows
        are processed twice. Exactly-once is the default.
        """
        step = self.flow.step(self.port.step_id)
        self.flow._steps[step.step_id] = replace(step, at_least_once=True)
        return self

    def with_resources(self, **amounts: float) -> Stream:
        """Ask the cluster, on the Ray backend, for ``amounts`` for each task of the step
        making this stream: Ray resources such as ``GPU``, ``CPU``, ``memory`` (bytes) or
        custom ones. A worker asks for the sum over the tasks it hosts (a task of a
        chain for the most any of the chain's steps asks). Other backends ignore it.

        >>> from rheostat.testing import rows
        >>> flow = Flow("f")
        >>> s = flow.source("src", rows([{"x": 1}])).map(lambda r: r, name="embed")
        >>> s.with_resources(GPU=1).flow.step("embed").resources
        {'GPU': 1.0}
        """
        step = self.flow.step(self.port.step_id)
        checked: dict[str, float] = {}
        for name, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise FlowError(
                    f"step {step.step_id!r}: resource {name!r} must be a number >= 0, got "
                    f"{amount!r} (e.g. with_resources(GPU=1))"
                )
            checked[name] = float(amount)
        self.flow._steps[step.step_id] = replace(step, resources=checked)
        return self

    # --- partitioning ---------------------------------------------------------------

    def key_by(self, *keys: str) -> KeyedStream:
        """Partition by the values of ``keys``: the next step sees all rows of a key together."""
        if not keys or not all(isinstance(k, str) for k in keys):
            raise FlowError(f"key_by on {self.port}: give one or more column names")
        self._check_columns(keys, "key_by")
        return KeyedStream(self.flow, self.port, self.columns, self.timestamped,
                           Routing("hash", tuple(keys)), tuple(keys))

    def rebalance(self) -> Stream:
        """Spread batches round-robin over the next step's tasks."""
        return replace(self, routing=REBALANCE)

    def broadcast(self) -> Stream:
        """Send every batch to every task of the next step."""
        return replace(self, routing=BROADCAST)

    def union(self, *others: Stream, name: str | None = None) -> Stream:
        """Merge this stream with ``others`` (same columns expected)."""
        for o in others:
            if o.flow is not self.flow:
                raise FlowError("union: streams belong to different flows")
        step_id = name or self.flow._fresh_id(f"{self.port.step_id}.union")
        self.flow._add(UnionStep(step_id, tuple(s._input() for s in (self, *others))))
        return Stream(self.flow, Port(step_id), self.columns,
                      all(s.timestamped for s in (self, *others)))

    # --- outputs --------------------------------------------------------------------

    def sink(self, step_id: str, sink: Any, *, parallelism: int | None = None) -> None:
        """Write this stream to ``sink`` (one of ``rs.sinks``)."""
        if sink is not None and not hasattr(sink, "open"):
            raise FlowError(f"sink step {step_id!r}: {sink!r} is not a sink; use rs.sinks.*")
        self.flow._add(SinkStep(step_id, (self._input(),), parallelism=parallelism, sink=sink))

    @property
    def late(self) -> Stream:
        """Rows that arrived too late for a window step (its ``late`` side output)."""
        return self._side(LATE)

    @property
    def errors(self) -> Stream:
        """Rows a step with ``on_error="dead_letter"`` could not process, with the reason."""
        return self._side(ERRORS)

    def _side(self, port: str) -> Stream:
        step = self.flow.step(self.port.step_id)
        if port not in step.ports:
            raise FlowError(f"step {step.step_id!r} has no {port!r} output")
        cols = ("step", "error", "record") if port == ERRORS else None
        return Stream(self.flow, Port(step.step_id, port), cols, port != ERRORS)

    # --- helpers --------------------------------------------------------------------

    def _input(self) -> Input:
        return Input(self.port, self.routing)

    def _check_columns(self, names: Iterable[str], what: str) -> None:
        if self.columns is None:
            return
        missing = [n for n in names if n not in self.columns]
        if missing:
            visible = [c for c in self.columns if c != EVENT_TIME]
            raise FlowError(
                f"{what} after step {self.port.step_id!r}: unknown column(s) {missing}; "
                f"the stream has {visible}"
            )

    def _need_event_time(self, what: str) -> None:
        if not self.timestamped:
            raise FlowError(
                f"{what} after step {self.port.step_id!r} needs event time: give the source "
                "a timestamp= column or call .with_timestamp(column)"
            )


@dataclass(frozen=True)
class KeyedStream(Stream):
    """A stream partitioned by key columns: windows, keyed process and joins follow."""

    keys: tuple[str, ...] = ()

    def window(self, window: WindowSpec, *, allowed_lateness: Duration = 0) -> WindowedStream:
        """Group rows per key into event-time windows (``rs.windows.*``)."""
        self._need_event_time("window")
        return WindowedStream(self, window, to_ms(allowed_lateness, "allowed_lateness"))

    def process(
        self, fn: Any, *, name: str | None = None, knobs: Mapping[str, Any] | None = None,
    ) -> Stream:
        """Run per-key logic with state and event-time timers (a ``rs.KeyedProcess``).

        ``knobs`` (``{name: initial value}``, JSON scalars) are settings a running job
        may change; the process reads them as ``ctx.knobs[name]``.
        """
        try:
            proc = as_keyed_process(fn)
        except TypeError as exc:
            raise FlowError(f"process after {self.port.step_id!r}: {exc}") from None
        step_id = name or self.flow._fresh_id(f"{self.port.step_id}.process")
        self.flow._add(KeyedProcessStep(step_id, (self._input(),), keys=self.keys, fn=proc,
                                        knobs=check_knobs(step_id, knobs)))
        return Stream(self.flow, Port(step_id), None, self.timestamped)

    def stateful_map(
        self, fn: Callable[[Any, dict], tuple[Any, dict | None]], *, name: str | None = None
    ) -> Stream:
        """Per-key running state: ``fn(state, row) -> (new_state, output row or None)``.

        ``state`` is None for a key's first row; returning None as the state forgets it.
        """
        try:
            proc = stateful_map(fn)
        except TypeError as exc:
            raise FlowError(f"stateful_map after {self.port.step_id!r}: {exc}") from None
        return self.process(proc, name=name or self.flow._fresh_id(
            f"{self.port.step_id}.stateful_map"))

    def join(
        self,
        other: KeyedStream,
        *,
        window: WindowSpec | None = None,
        between: tuple[Duration, Duration] | None = None,
        name: str | None = None,
        suffixes: tuple[str, str] = ("", "_right"),
    ) -> Stream:
        """Join with ``other`` on the keys: in the same ``window``, or with the right row's
        event time ``between`` (lower, upper) of the left's (an interval join; bounds may be
        negative, given in ms or as '-5s')."""
        if not isinstance(other, KeyedStream):
            raise FlowError("join: the other stream must be keyed too (.key_by(...))")
        if len(other.keys) != len(self.keys):
            raise FlowError(f"join: key counts differ ({self.keys} vs {other.keys})")
        if (window is None) == (between is None):
            raise FlowError("join: give exactly one of window=... or between=(lower, upper)")
        if isinstance(window, Session):
            raise FlowError("join: session windows are not supported; use tumbling or sliding")
        self._need_event_time("join")
        other._need_event_time("join")
        lower = upper = 0
        if between is not None:
            lower, upper = (_signed_ms(b) for b in between)
            if lower > upper:
                raise FlowError(f"join: between lower bound {lower} ms exceeds upper {upper} ms")
        step_id = name or self.flow._fresh_id(f"{self.port.step_id}.join")
        self.flow._add(JoinStep(
            step_id, (self._input(), other._input()), left_keys=self.keys,
            right_keys=other.keys, window=window, lower_ms=lower, upper_ms=upper,
            suffixes=suffixes,
        ))
        return Stream(self.flow, Port(step_id), None, True)


def check_knobs(step_id: str, knobs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``knobs`` as a dict, checked: identifier names, JSON scalar values.

    >>> check_knobs("s", {"threshold": 0.5, "mode": "fast"})
    {'threshold': 0.5, 'mode': 'fast'}
    """
    if knobs is None:
        return {}
    if not isinstance(knobs, Mapping):
        raise FlowError(f"step {step_id!r}: knobs must be a dict of name -> initial value, "
                        f"got {knobs!r}")
    for name, value in knobs.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise FlowError(f"step {step_id!r}: knob name {name!r} must be a Python "
                            "identifier (it is passed as a keyword argument)")
        if value is not None and not isinstance(value, bool | int | float | str):
            raise FlowError(f"step {step_id!r}: knob {name!r} = {value!r}: a knob's value must "
                            "be a number, string, boolean or None (a JSON scalar)")
    return dict(knobs)


def missing_knob_parameters(fn: Any, names: Iterable[str]) -> list[str]:
    """The knob names ``fn`` cannot take as keyword arguments ([] if unsure).

    >>> missing_knob_parameters(lambda row, threshold=0.5: row, ["threshold", "mode"])
    ['mode']
    """
    wanted = list(names)
    if not wanted:
        return []
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and the like: cannot tell
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    takes = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [n for n in wanted if n not in takes]


def _signed_ms(value: Duration) -> int:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -to_ms(value.strip()[1:], "join bound")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return to_ms(value, "join bound")


@dataclass(frozen=True)
class WindowedStream:
    """A keyed stream grouped into windows; :meth:`aggregate` completes it."""

    keyed: KeyedStream
    window: WindowSpec
    allowed_lateness_ms: int

    def aggregate(self, *, name: str | None = None, **aggs: Agg) -> Stream:
        """One output row per key and window with the named aggregations (``rs.agg.*``).

        Output columns: the keys, ``window_start``, ``window_end`` and one per aggregation.
        A column that is an integer in some inputs and a float in others (files written
        apart) is aggregated as float64; any other change of a key's or an aggregated
        column's type fails at the first batch that has it, naming the column.
        """
        ks = self.keyed
        if not aggs:
            raise FlowError(f"aggregate after {ks.port.step_id!r}: name at least one aggregation")
        for out, agg in aggs.items():
            if not isinstance(agg, Agg):
                raise FlowError(f"aggregate: {out}={agg!r} is not an aggregation; use rs.agg.*")
            if out in ks.keys or out in _WINDOW_COLUMNS:
                raise FlowError(
                    f"aggregate: output name {out!r} clashes with a key or window column"
                )
        ks._check_columns([a.column for a in aggs.values() if a.column], "aggregate")
        step_id = name or ks.flow._fresh_id(f"{ks.port.step_id}.aggregate")
        ks.flow._add(WindowAggregateStep(
            step_id, (ks._input(),), keys=ks.keys, window=self.window,
            aggs=tuple(aggs.items()), allowed_lateness_ms=self.allowed_lateness_ms,
        ))
        cols = (*ks.keys, *_WINDOW_COLUMNS, *aggs)
        return Stream(ks.flow, Port(step_id), cols, True)
