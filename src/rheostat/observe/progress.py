"""Progress on the terminal while a job runs, and a plain summary when it ends.

:class:`TerminalProgress` is the controller's progress callback
``(plan, metrics, elapsed_s) -> None``, called about twice a second. On a terminal it keeps
one live table up to date (one row per chain of fused steps); when stdout is not a
terminal it prints a plain line every few seconds instead. The helpers that compute and
format the numbers are pure functions, tested without a terminal.

>>> format_rate(1_234_567.0)
'1.23M/s'
>>> format_watermark(0)
'1970-01-01 00:00:00.000'
>>> format_watermark(None)
'-'
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from rich import box
from rich.console import Console
from rich.live_render import LiveRender
from rich.markup import escape
from rich.table import Table

from rheostat.plan.physical import Chain, PhysicalPlan
from rheostat.protocol import TaskMetrics
from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK

if TYPE_CHECKING:
    from rheostat.control.controller import JobResult

__all__ = [
    "ChainRow",
    "ChainTotals",
    "RateTracker",
    "TerminalProgress",
    "chain_totals",
    "format_count",
    "format_duration",
    "format_percent",
    "format_rate",
    "format_watermark",
    "notable_counters",
    "plain_line",
    "summary",
]


# --- pure formatting helpers -----------------------------------------------------------


def _si(value: float) -> str:
    """A number with k/M/G suffix and three significant digits: 950, 12.3k, 1.23M."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            scaled = value / threshold
            digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
            return f"{scaled:.{digits}f}{suffix}"
    return f"{value:.0f}"


def format_count(n: int | None) -> str:
    """A row count, compact: ``1234567 -> '1.23M'``; None -> '-'.

    >>> format_count(950), format_count(12_345), format_count(None)
    ('950', '12.3k', '-')
    """
    return "-" if n is None else _si(n)


def format_rate(rows_per_s: float | None) -> str:
    """Rows per second, compact: ``'85.2k/s'``; None -> '-'.

    >>> format_rate(0.4), format_rate(85_200.0), format_rate(None)
    ('0/s', '85.2k/s', '-')
    """
    return "-" if rows_per_s is None else f"{_si(rows_per_s)}/s"


def format_percent(fraction: float | None) -> str:
    """A fraction in [0, 1] as a whole percentage; None -> '-'.

    >>> format_percent(0.123), format_percent(None)
    ('12%', '-')
    """
    return "-" if fraction is None else f"{round(fraction * 100):d}%"


def format_duration(seconds: float) -> str:
    """Elapsed time for people: ``'4.2s'``, ``'3m 07s'``, ``'1h 02m 03s'``.

    >>> format_duration(4.24), format_duration(187), format_duration(3723)
    ('4.2s', '3m 07s', '1h 02m 03s')
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def format_watermark(ms: int | None) -> str:
    """An event-time watermark (ms since the epoch) as UTC; none yet -> '-', done -> 'end'.

    >>> format_watermark(1_700_000_000_123)
    '2023-11-14 22:13:20.123'
    >>> format_watermark(2**63 - 1)
    'end'
    """
    if ms is None or ms <= MIN_WATERMARK:
        return "-"
    if ms >= MAX_WATERMARK:
        return "end"
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)  # outside what datetime can show: the raw number still says something
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def is_notable_counter(name: str) -> bool:
    """Counters worth showing while a job runs: rows late, skipped, dead-lettered, unconsumed.

    >>> [n for n in ("late", "late_dropped", "skipped", "errors_unconsumed", "fired")
    ...  if is_notable_counter(n)]
    ['late', 'late_dropped', 'skipped', 'errors_unconsumed']
    """
    return (
        name.startswith("late")
        or name in ("skipped", "dead_lettered")
        or name.endswith("_unconsumed")
    )


def notable_counters(counters: Mapping[str, int]) -> dict[str, int]:
    """The non-zero notable counters, sorted by name."""
    return {k: v for k, v in sorted(counters.items()) if v and is_notable_counter(k)}


def format_counters(counters: Mapping[str, int]) -> str:
    """``{'late': 3, 'skipped': 1} -> 'late 3, skipped 1'`` (zeros left out)."""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items()) if v)


# --- per-chain aggregation -------------------------------------------------------------


def chain_label(chain: Chain) -> str:
    """The chain's steps joined by arrows: ``'bids → bids.map'``."""
    return " → ".join(chain.steps)


@dataclass(frozen=True)
class ChainTotals:
    """One chain's metrics summed (or combined) over its tasks at one moment."""

    chain_id: str
    label: str
    tasks: int
    rows_in: int
    rows_out: int
    backpressure_s: float
    #: The smallest watermark over the chain's tasks; None if any task has none yet.
    watermark: int | None
    counters: dict[str, int] = field(default_factory=dict)


def chain_totals(plan: PhysicalPlan, metrics: Mapping[str, TaskMetrics]) -> list[ChainTotals]:
    """Sum task metrics per chain, in the plan's chain order.

    A task with no report yet counts as zero rows and no watermark.
    """
    by_chain: dict[str, list[TaskMetrics | None]] = {
        c.chain_id: [metrics.get(c.task_id(i)) for i in range(c.parallelism)]
        for c in plan.chains
    }
    out: list[ChainTotals] = []
    for chain in plan.chains:
        tasks = by_chain[chain.chain_id]
        reported = [m for m in tasks if m is not None]
        counters: dict[str, int] = {}
        for m in reported:
            for k, v in m.counters.items():
                counters[k] = counters.get(k, 0) + v
        marks = [m.watermark if m is not None else None for m in tasks]
        known = [w for w in marks if w is not None and w > MIN_WATERMARK]
        watermark = min(known) if known and len(known) == len(marks) else None
        out.append(ChainTotals(
            chain_id=chain.chain_id,
            label=chain_label(chain),
            tasks=chain.parallelism,
            rows_in=sum(m.rows_in for m in reported),
            rows_out=sum(m.rows_out for m in reported),
            backpressure_s=sum(m.backpressure_s for m in reported),
            watermark=watermark,
            counters=counters,
        ))
    return out


@dataclass(frozen=True)
class ChainRow:
    """What one row of the progress display shows."""

    totals: ChainTotals
    #: Rows in per second over the last interval; None before there is an interval.
    rows_per_s: float | None
    #: Share of the last interval the chain's tasks spent blocked on credit (mean over tasks).
    backpressure: float | None


@dataclass
class _Snapshot:
    elapsed_s: float
    rows_in: dict[str, int]
    backpressure_s: dict[str, float]


class RateTracker:
    """Turns successive cumulative metrics into rates, per chain.

    Rates compare the newest snapshot with the oldest one kept, which is at most
    ``window_s`` older (``0`` compares consecutive calls). The first call compares with
    the start of the job.

    >>> from rheostat.plan.physical import lower
    >>> from rheostat.plan.logical import SourceStep, SinkStep, Input, Port
    >>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=1)
    >>> t = RateTracker(window_s=0)
    >>> row, = t.update(plan, {"s#0": TaskMetrics(rows_in=100, backpressure_s=0.5)}, 1.0)
    >>> row.rows_per_s, row.backpressure
    (100.0, 0.5)
    >>> row, = t.update(plan, {"s#0": TaskMetrics(rows_in=400, backpressure_s=0.5)}, 2.0)
    >>> row.rows_per_s, row.backpressure
    (300.0, 0.0)
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._history: deque[_Snapshot] = deque()

    def update(
        self, plan: PhysicalPlan, metrics: Mapping[str, TaskMetrics], elapsed_s: float
    ) -> list[ChainRow]:
        totals = chain_totals(plan, metrics)
        now = _Snapshot(
            elapsed_s,
            {t.chain_id: t.rows_in for t in totals},
            {t.chain_id: t.backpressure_s for t in totals},
        )
        if not self._history:
            self._history.append(_Snapshot(0.0, {}, {}))
        # Keep the oldest snapshot still inside the window, and always the previous one.
        while len(self._history) > 1 and elapsed_s - self._history[1].elapsed_s >= self.window_s:
            self._history.popleft()
        base = self._history[0]
        self._history.append(now)
        dt = elapsed_s - base.elapsed_s
        rows: list[ChainRow] = []
        for t in totals:
            if dt <= 0:
                rows.append(ChainRow(t, None, None))
                continue
            d_rows = max(0, t.rows_in - base.rows_in.get(t.chain_id, 0))
            d_bp = max(0.0, t.backpressure_s - base.backpressure_s.get(t.chain_id, 0.0))
            backpressure = min(1.0, d_bp / t.tasks / dt) if t.tasks else None
            rows.append(ChainRow(t, d_rows / dt, backpressure))
        return rows


def plain_line(flow_name: str, rows: list[ChainRow], elapsed_s: float) -> str:
    """One line of progress for logs and pipes.

    >>> from rheostat.plan.physical import lower
    >>> from rheostat.plan.logical import SourceStep, SinkStep, Input, Port
    >>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=1)
    >>> rows = RateTracker().update(plan, {"s#0": TaskMetrics(rows_in=5000)}, 2.0)
    >>> plain_line("demo", rows, 2.0)
    'demo 2.0s | s → o: 5.00k rows, 2.50k/s, wm -, bp 0%'
    """
    parts = []
    for r in rows:
        t = r.totals
        text = (
            f"{t.label}: {format_count(t.rows_in)} rows, {format_rate(r.rows_per_s)}, "
            f"wm {format_watermark(t.watermark)}, bp {format_percent(r.backpressure)}"
        )
        counters = format_counters(notable_counters(t.counters))
        parts.append(f"{text}, {counters}" if counters else text)
    return f"{flow_name} {format_duration(elapsed_s)} | " + " | ".join(parts)


def progress_table(flow_name: str, rows: list[ChainRow], elapsed_s: float) -> Table:
    """The live display: one row per chain."""
    table = Table(
        title=f"[bold]{escape(flow_name)}[/] · {format_duration(elapsed_s)}",
        title_justify="left",
        caption="bp: share of time the chain's tasks waited for downstream credit",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("chain", overflow="fold")
    table.add_column("tasks", justify="right", no_wrap=True)
    table.add_column("rows in", justify="right", no_wrap=True)
    table.add_column("rows/s", justify="right", no_wrap=True)
    table.add_column("watermark (UTC)", justify="right", no_wrap=True)
    table.add_column("bp", justify="right", no_wrap=True)
    table.add_column("counters", overflow="fold")
    for r in rows:
        t = r.totals
        bp = format_percent(r.backpressure)
        if r.backpressure is not None and r.backpressure >= 0.5:
            bp = f"[yellow]{bp}[/]"
        table.add_row(
            escape(t.label),
            str(t.tasks),
            format_count(t.rows_in),
            format_rate(r.rows_per_s),
            format_watermark(t.watermark),
            bp,
            escape(format_counters(notable_counters(t.counters))),
        )
    return table


# --- the callback ----------------------------------------------------------------------


class TerminalProgress:
    """The progress callback ``rs.run(..., progress=True)`` installs.

    On a terminal: a table redrawn in place on each call (the controller calls about
    twice a second); the last frame stays on screen when the job ends. Otherwise (a pipe,
    a log file): a plain line every ``plain_interval_s``. It holds no global state (no
    hidden cursor, no redirected stdout), so there is nothing to undo; :meth:`close` only
    stops further drawing.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        plain_interval_s: float = 5.0,
        window_s: float = 2.0,
    ) -> None:
        self._stream = stream
        self._live_wanted = live
        self.plain_interval_s = plain_interval_s
        self._window_s = window_s
        self._tracker: RateTracker | None = None
        self._console: Console | None = None
        self._render: LiveRender | None = None
        self._last_plain: float | None = None
        self._closed = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def _is_live(self) -> bool:
        if self._live_wanted is not None:
            return self._live_wanted
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(
        self, plan: PhysicalPlan, metrics: dict[str, TaskMetrics], elapsed_s: float
    ) -> None:
        if self._closed:
            return
        if self._is_live():
            self._draw(plan, metrics, elapsed_s)
        elif self._last_plain is None or elapsed_s - self._last_plain >= self.plain_interval_s:
            self._last_plain = elapsed_s
            if self._tracker is None:
                self._tracker = RateTracker(window_s=0)  # rates between printed lines
            rows = self._tracker.update(plan, metrics, elapsed_s)
            print(plain_line(plan.flow_name, rows, elapsed_s), file=self.stream, flush=True)

    def _draw(self, plan: PhysicalPlan, metrics: dict[str, TaskMetrics], elapsed_s: float) -> None:
        if self._tracker is None:
            self._tracker = RateTracker(window_s=self._window_s)
        rows = self._tracker.update(plan, metrics, elapsed_s)
        table = progress_table(plan.flow_name, rows, elapsed_s)
        if self._console is None or self._render is None:
            self._console = Console(file=self.stream, force_terminal=self._live_wanted or None)
            # Frames are cropped one line short of the terminal, so that with the newline
            # after each frame the screen never scrolls (which would strand old lines).
            self._console.height = max(2, self._console.height - 1)
            self._render = LiveRender(table)
        else:
            # Erase the previous frame, then draw the new one in its place (what
            # rich.live.Live does on refresh, without its global set-up and tear-down).
            self._render.set_renderable(table)
            self._console.control(self._render.restore_cursor())
        # A frame ends with a newline: whatever is printed after the job starts on a fresh line.
        self._console.print(self._render)
        self._console.line()
        self.stream.flush()

    def close(self) -> None:
        """Stop drawing; the last frame stays on screen. Idempotent."""
        self._closed = True

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the end-of-job summary ------------------------------------------------------------


def summary(result: JobResult) -> str:
    """A plain-words report of a finished job: state, time, rows per chain, counters.

    >>> from rheostat.control.controller import JobResult
    >>> from rheostat.plan.physical import lower
    >>> from rheostat.plan.logical import SourceStep, SinkStep, Input, Port
    >>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=1)
    >>> print(summary(JobResult("demo", "finished", 2.0, plan, {"s#0": TaskMetrics(rows_in=5000)})))
    Job 'demo' finished in 2.0s.
      s → o  (1 task): 5,000 rows in, 2.50k rows/s
    Counters: none.
    """
    elapsed = result.elapsed_s
    lines = [f"Job {result.flow_name!r} {result.state} in {format_duration(elapsed)}."]
    totals = chain_totals(result.plan, result.metrics)
    width = max((len(t.label) for t in totals), default=0)
    for t in totals:
        rate = f"{_si(t.rows_in / elapsed)} rows/s" if elapsed > 0 else "- rows/s"
        tasks = f"{t.tasks} task{'s' if t.tasks != 1 else ''}"
        line = f"  {t.label:<{width}}  ({tasks}): {t.rows_in:,} rows in, {rate}"
        if t.watermark is not None and t.watermark < MAX_WATERMARK:
            line += f", watermark {format_watermark(t.watermark)} UTC"
        lines.append(line)
    counters = format_counters(result.counters())
    lines.append(f"Counters: {counters}." if counters else "Counters: none.")
    if result.checkpoints or result.restarts:
        last = f", the last {result.checkpoints[-1]}" if result.checkpoints else ""
        lines.append(f"Checkpoints: {len(result.checkpoints)} completed{last}; restarts: "
                     f"{result.restarts} (rows in count from the last restart).")
    return "\n".join(lines)
