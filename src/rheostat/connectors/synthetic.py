"""Seeded, replayable generators: the shared chunking machinery and ``synthetic``.

Every generated row is a pure function of ``(seed, row number)``: randomness comes from a
counter-based hash (splitmix64) of the row number, never from a stateful RNG. So any chunk
of rows can be generated on its own, which is what makes the generators splittable (source
split ``i`` of ``n`` makes chunks ``i, i+n, i+2n, ...``) and replayable from a position (the
next chunk index). ``splits=n`` fixes the number of splits, so the source step can be
rescaled live and resumed at another parallelism; without it there is one split per task.

>>> t = synthetic(10_000, keys=100, seed=7).to_table()
>>> t.column_names, t.num_rows
(['key', 'value', 'ts'], 10000)
>>> t.equals(synthetic(10_000, keys=100, seed=7).to_table(batch_size=999))
True
"""

from __future__ import annotations

import functools
import numbers
import sys
from abc import abstractmethod
from typing import Any

import numpy as np
import pyarrow as pa

from rheostat.runtime.io import Source, SourceReader

#: 2026-01-01T00:00:00Z, the default start of event time for the generators (fixed so runs repeat).
DEFAULT_START_MS = 1_767_225_600_000

_GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1
_LOW_HALF = 0 if sys.byteorder == "little" else 1


# ---------------------------------------------------------------- counter-based randomness


def _mix_int(x: int) -> int:
    """splitmix64's finaliser on one Python int (for deriving stream keys)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a ``uint64`` array (which it returns)."""
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= 0x94D049BB133111EB
    x ^= x >> 31
    return x


class Randomness:
    """Independent 64-bit random streams for a vector of row numbers.

    ``draw(j)`` is ``splitmix64(n * golden + key_j)``: stream ``j`` of row ``n`` depends only on
    ``(seed, j, n)``.
    """

    def __init__(self, rows: np.ndarray, seed: int) -> None:
        self._base = rows.astype(np.uint64) * np.uint64(_GOLDEN)
        self._seed_key = _mix_int(seed * 0xD1B54A32D192ED03 + 0x2545F4914F6CDD1D)

    def draw(self, stream: int) -> np.ndarray:
        key = _mix_int(self._seed_key + (stream + 1) * _GOLDEN)
        return mix64(self._base + np.uint64(key))


def below(h: np.ndarray, m: Any, high: bool = True) -> np.ndarray:
    """Uniform int64s in ``[0, m)`` (``0 < m < 2**32``, scalar or array) from 32 bits of ``h``."""
    bits = h >> 32 if high else h & 0xFFFFFFFF
    bits *= m.astype(np.int64, copy=False).view(np.uint64) if isinstance(m, np.ndarray) else int(m)
    bits >>= 32
    return bits.view(np.int64)


def chance(h: np.ndarray, ratio: int) -> np.ndarray:
    """Booleans, true with probability ``1 - 1/ratio``: ``below(h, ratio, high=False) > 0``."""
    if ratio == 1:
        return np.zeros(len(h), dtype=bool)
    low = h.view(np.uint32)[_LOW_HALF::2]
    return low >= np.uint32(-(-(1 << 32) // ratio))


def unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in ``[0, 1)`` from the top 53 bits of ``h``."""
    return (h >> 11).astype(np.float64) * (1.0 / (1 << 53))


# ---------------------------------------------------------------- columns from slices

#: Rows per slice of numeric work. Its 64 KiB temporaries stay below glibc's mmap threshold,
#: so malloc recycles them instead of the kernel zeroing fresh pages for each one.
SLICE = 8192


def gather(parts: list[np.ndarray], type_: pa.DataType) -> pa.Array:
    """One Arrow array of the concatenated 8-byte ``parts``, in a buffer from Arrow's pool
    (which keeps its pages, unlike a large numpy array)."""
    buffer = pa.allocate_buffer(8 * sum(len(p) for p in parts))
    out = np.frombuffer(buffer, dtype=parts[0].dtype if parts else np.int64)
    at = 0
    for part in parts:
        out[at : at + len(part)] = part
        at += len(part)
    return pa.Array.from_buffers(type_, len(out), [None, buffer])


# ---------------------------------------------------------------- chunked generator sources


def check_int(name: str, value: Any, minimum: int | None = None, hint: str = "") -> int:
    """Return ``value`` as an int, or raise a ``TypeError``/``ValueError`` that says what to do."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}. {hint}".rstrip())
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}. {hint}".rstrip())
    return int(value)


class ChunkedSource(Source):
    """A generator whose rows ``0..num_rows-1`` are made in chunks of ``batch_size`` rows.

    Split ``(i, n)`` makes chunks ``i, i+n, i+2n, ...``, so the source tasks advance through
    event time together. The position is ``(next chunk index, chunk size)``; a reader reopened
    there keeps that chunk size whatever ``batch_size`` it is given, so it resumes exactly.
    There are ``n_splits`` splits, or one per task when it is ``None``.
    """

    #: The number of splits whatever the parallelism (``None``: one per task).
    n_splits: int | None = None

    @property
    @abstractmethod
    def num_rows(self) -> int | None:
        """Rows in the whole stream; ``None`` when unbounded."""

    @abstractmethod
    def make_batch(self, start: int, stop: int) -> pa.RecordBatch:
        """Rows ``start..stop-1`` of the stream (a pure function of the arguments)."""

    @property
    def bounded(self) -> bool:  # type: ignore[override]
        return self.num_rows is not None

    def splits(self, parallelism: int) -> list[tuple[int, int]]:
        n = self.n_splits or check_int("parallelism", parallelism, 1)
        return [(i, n) for i in range(n)]

    def open(
        self, split: Any, position: Any = None, batch_size: int = 65_536
    ) -> ChunkReader:
        return ChunkReader(self, split, position, batch_size)

    def to_table(self, batch_size: int = 65_536) -> pa.Table:
        """Generate the whole (bounded) stream in this process, for tests and notebooks."""
        if self.num_rows is None:
            raise ValueError("this generator is unbounded; give it a number of events first")
        reader = self.open((0, 1), batch_size=batch_size)
        batches = []
        while (batch := reader.read()) is not None:
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=self.schema())


class ChunkReader(SourceReader):
    """Reads split ``(i, p)`` of a :class:`ChunkedSource`."""

    def __init__(self, source: ChunkedSource, split: Any, position: Any, batch_size: int) -> None:
        if not (isinstance(split, tuple) and len(split) == 2):
            raise ValueError(f"not a split of this generator: {split!r}; use source.splits(p)")
        index, parallelism = split
        self._source = source
        self._step = parallelism
        self._batch_size = check_int("batch_size", batch_size, 1)
        if position is None:
            self._chunk = index
        else:
            if isinstance(position, tuple) and len(position) == 2:  # as position() returns it
                position, self._batch_size = position
                check_int("chunk size in position", self._batch_size, 1)
            self._chunk = check_int("position", position, 0, "Pass what position() returned.")
            if self._chunk % parallelism != index % parallelism:
                raise ValueError(
                    f"position {position} is not a chunk of split {split}; pass the position "
                    "that this split's reader returned"
                )

    def read(self) -> pa.RecordBatch | None:
        start = self._chunk * self._batch_size
        total = self._source.num_rows
        if total is not None and start >= total:
            return None
        stop = start + self._batch_size if total is None else min(start + self._batch_size, total)
        self._chunk += self._step
        return self._source.make_batch(start, stop)

    def position(self) -> tuple[int, int]:
        """``(next chunk index, chunk size)``."""
        return self._chunk, self._batch_size

    def remaining(self) -> int | None:
        """Rows in this split's chunks not read yet (``None`` when unbounded)."""
        total = self._source.num_rows
        if total is None:
            return None
        size = self._batch_size
        chunks = -(-total // size)  # the last one may be short
        left = max(0, -(-(chunks - self._chunk) // self._step))
        rows = left * size
        if left and (chunks - 1 - self._chunk) % self._step == 0:
            rows -= chunks * size - total
        return rows


# ---------------------------------------------------------------- synthetic


_ZIPF_HEAD = 1 << 16  # ranks with exact probabilities; a continuous tail covers the rest


@functools.lru_cache(maxsize=8)
def _zipf_head(keys: int, exponent: float) -> tuple[np.ndarray, float]:
    """Cumulative weights of ranks ``1..min(keys, _ZIPF_HEAD)``, and the tail's total weight."""
    head = np.cumsum(np.arange(1, min(keys, _ZIPF_HEAD) + 1, dtype=np.float64) ** -exponent)
    low, high = min(keys, _ZIPF_HEAD) + 0.5, keys + 0.5  # rank r covers [r - 0.5, r + 0.5)
    if exponent == 1:
        tail = np.log(high / low)
    else:
        tail = (high ** (1 - exponent) - low ** (1 - exponent)) / (1 - exponent)
    return head, float(tail)


def zipf_ranks(u: np.ndarray, keys: int, exponent: float) -> np.ndarray:
    """Map uniform ``u`` in [0, 1) to ranks ``0..keys-1``; rank 0 is the most frequent.

    The first 65,536 ranks get their exact Zipf probabilities; rarer ranks come from
    inverting the continuous density ``x ** -exponent``.
    """
    if exponent == 0:
        return np.minimum((u * keys).astype(np.int64), keys - 1)
    head, tail = _zipf_head(keys, exponent)
    x = u * (head[-1] + tail)
    ranks = np.searchsorted(head, x, side="right").astype(np.int64)
    in_tail = ranks >= len(head)
    if in_tail.any():
        y, low = x[in_tail] - head[-1], len(head) + 0.5
        if exponent == 1:
            z = low * np.exp(y)
        else:
            z = (low ** (1 - exponent) + y * (1 - exponent)) ** (1 / (1 - exponent))
        ranks[in_tail] = np.floor(z + 0.5).astype(np.int64) - 1
    return np.clip(ranks, 0, keys - 1)


class Synthetic(ChunkedSource):
    """Rows ``key`` (Zipf-skewed int64), ``value`` (float64 in [0, 1)), ``ts`` (timestamp[ms])."""

    def __init__(
        self,
        events: int | None,
        keys: int,
        zipf: float,
        seed: int,
        value_columns: int,
        start_ms: int,
        events_per_ms: float,
        splits: int | None = None,
    ) -> None:
        self.n_splits = splits
        self.events = events
        self.keys = keys
        self.zipf = zipf
        self.seed = seed
        self.value_columns = value_columns
        self.start_ms = start_ms
        self.events_per_ms = events_per_ms
        names = ["value"] + [f"value_{i}" for i in range(1, value_columns)]
        self._schema = pa.schema(
            [("key", pa.int64())]
            + [(name, pa.float64()) for name in names[:value_columns]]
            + [("ts", pa.timestamp("ms"))]
        )

    @property
    def num_rows(self) -> int | None:
        return self.events

    def schema(self) -> pa.Schema:
        return self._schema

    def make_batch(self, start: int, stop: int) -> pa.RecordBatch:
        parts = [self._columns(a, min(a + SLICE, stop)) for a in range(start, stop, SLICE)]
        arrays = [gather(list(c), t) for c, t in zip(zip(*parts), self._schema.types)]
        return pa.RecordBatch.from_arrays(arrays, schema=self._schema)

    def _columns(self, start: int, stop: int) -> list[np.ndarray]:
        rows = np.arange(start, stop, dtype=np.int64)
        rnd = Randomness(rows, self.seed)
        columns = [zipf_ranks(unit(rnd.draw(0)), self.keys, self.zipf)]
        columns += [unit(rnd.draw(1 + i)) for i in range(self.value_columns)]
        columns.append(self.start_ms + np.floor(rows / self.events_per_ms).astype(np.int64))
        return columns

    def __repr__(self) -> str:
        return (f"synthetic(events={self.events}, keys={self.keys}, zipf={self.zipf}, "
                f"seed={self.seed})")


def synthetic(
    events: int | None,
    keys: int = 1000,
    zipf: float = 1.1,
    seed: int = 0,
    value_columns: int = 1,
    start_ms: int = DEFAULT_START_MS,
    events_per_ms: float = 1000.0,
    splits: int | None = None,
) -> Synthetic:
    """A seeded stream of ``events`` rows ``(key, value, ts)``; ``events=None`` never ends.

    ``key`` is a Zipf-distributed rank in ``[0, keys)`` with exponent ``zipf`` (key 0 is the
    hottest; ``zipf=0`` is uniform). ``value`` (and ``value_1``, ``value_2``, ... when
    ``value_columns`` > 1) are floats in [0, 1). Row ``n`` has event time
    ``start_ms + floor(n / events_per_ms)``. ``splits=N`` makes N splits whatever the
    parallelism, so the source step can be rescaled (to at most N tasks) and resumed at
    another parallelism; without it each task reads one split.

    >>> t = synthetic(1000, keys=10, zipf=0).to_table()
    >>> t.num_rows, max(t["key"].to_pylist())
    (1000, 9)
    """
    if events is not None:
        check_int("events", events, 0, "Pass the number of rows, or None for an endless stream.")
    check_int("keys", keys, 1, "Pass the number of distinct keys.")
    if isinstance(zipf, bool) or not isinstance(zipf, numbers.Real) or not zipf >= 0:
        raise ValueError(f"zipf must be a number >= 0 (0 = uniform keys), got {zipf!r}")
    check_int("seed", seed, None)
    check_int("value_columns", value_columns, 0, "Pass how many float columns to generate.")
    check_int("start_ms", start_ms, None, "Pass event time of the first row, in ms since epoch.")
    if (
        isinstance(events_per_ms, bool)
        or not isinstance(events_per_ms, numbers.Real)
        or not events_per_ms > 0
    ):
        raise ValueError(f"events_per_ms must be a number > 0, got {events_per_ms!r}")
    return Synthetic(
        events, int(keys), float(zipf), int(seed), int(value_columns), int(start_ms),
        float(events_per_ms), check_splits(splits),
    )


def check_splits(splits: Any) -> int | None:
    """``splits`` of a generator: ``None`` (one per task) or an integer >= 1."""
    if splits is None:
        return None
    return check_int("splits", splits, 1,
                     "Pass how many splits to make (the most tasks that can read the source), "
                     "or None for one per task.")
