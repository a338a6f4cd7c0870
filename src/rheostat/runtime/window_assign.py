"""Window assignment as pure, vectorised functions over int64 millisecond arrays.

Tumbling and sliding windows follow Flink: a window is ``[start, start + size)`` with
``start`` a multiple of the slide plus the offset; a tumbling window is a sliding one whose
slide equals its size. Sliding windows are evaluated over *panes* of ``gcd(size, slide)``
milliseconds: every window is a union of whole panes, so rows are pre-aggregated per pane
and panes are merged into windows when they fire.

Session windows merge per key the intervals ``[ts, ts + gap)`` that overlap or touch
(Flink's ``TimeWindow.intersects``: ``start <= other.end``), over rows sorted by key, then
start (:func:`key_then_start_order`); :func:`session_ids` numbers the merged sessions
with no per-row Python.

>>> import numpy as np
>>> tumbling_start(np.array([-1, 0, 9, 10]), 10).tolist()
[-10, 0, 0, 10]
>>> rows, starts = sliding_windows(np.array([7]), size=10, slide=5)
>>> rows.tolist(), starts.tolist()
([0, 0], [5, 0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def tumbling_start(ts: np.ndarray, size: int, offset: int = 0) -> np.ndarray:
    """Start of the size-``size`` window (aligned to ``offset``) that holds each timestamp.

    Works for negative timestamps (floor semantics, as Flink's ``getWindowStartWithOffset``).

    >>> tumbling_start(np.array([-11, 14]), 10, offset=3).tolist()
    [-17, 13]
    """
    ts = np.asarray(ts, dtype=np.int64)
    return ts - (ts - offset) % size


def window_counts(ts: np.ndarray, size: int, slide: int, offset: int = 0) -> np.ndarray:
    """How many sliding windows hold each timestamp (0 in the gaps when ``slide > size``).

    >>> window_counts(np.array([0, 1, 2]), size=10, slide=3).tolist()
    [4, 3, 3]
    """
    ts = np.asarray(ts, dtype=np.int64)
    r = (ts - offset) % slide  # distance to the latest window start at or before ts
    return np.maximum((size - 1 - r) // slide + 1, 0)


def sliding_windows(
    ts: np.ndarray, size: int, slide: int, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, window start) pair such that window ``[start, start + size)`` holds ``ts[row]``.

    Rows come out grouped by row, latest window first. Tumbling windows are ``slide == size``.

    >>> rows, starts = sliding_windows(np.array([0, 12]), size=10, slide=5)
    >>> rows.tolist(), starts.tolist()
    ([0, 0, 1, 1], [0, -5, 10, 5])
    """
    ts = np.asarray(ts, dtype=np.int64)
    last = tumbling_start(ts, slide, offset)
    if size % slide == 0:  # every row is in exactly size / slide windows
        n = size // slide
        rows = np.repeat(np.arange(len(ts), dtype=np.int64), n)
        starts = (last[:, None] - np.arange(n, dtype=np.int64) * slide).ravel()
        return rows, starts
    counts = window_counts(ts, size, slide, offset)
    rows = np.repeat(np.arange(len(ts), dtype=np.int64), counts)
    k = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, last[rows] - k * slide


def last_window_end(ts: np.ndarray, size: int, slide: int, offset: int = 0) -> np.ndarray:
    """End of the latest window that could hold each timestamp (the one to expire last).

    >>> last_window_end(np.array([7]), size=10, slide=5).tolist()
    [15]
    """
    return tumbling_start(ts, slide, offset) + size


def pane_size(size: int, slide: int) -> int:
    """The pane width: every window boundary is a multiple of it (plus the offset).

    >>> pane_size(10_000, 2_000), pane_size(10, 4)
    (2000, 2)
    """
    return math.gcd(size, slide)


def key_codes(columns: Sequence[pa.Array | pa.ChunkedArray], n: int) -> np.ndarray:
    """An int64 code per row, equal exactly where the rows' tuples of values are equal.

    Codes come from hash dictionary encoding (nulls are a value), in first-seen order.

    >>> key_codes([pa.array(["b", "a", "b", None]), pa.array([1, 1, 1, 1])], 4).tolist()
    [0, 1, 0, 2]
    """
    code, card = np.zeros(n, dtype=np.int64), 1
    for col in columns:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        enc = pc.dictionary_encode(col, null_encoding="encode")
        m = max(len(enc.dictionary), 1)
        if card * m >= 2**62:  # keep the mixed-radix code in range: renumber densely
            code = np.unique(code, return_inverse=True)[1].astype(np.int64)
            card = int(code.max(initial=0)) + 1
        code = code * m + enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        card *= m
    return code


def key_then_start_order(codes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order sorted by key code, then start; and where each key begins in that order.

    >>> order, new_key = key_then_start_order(np.array([1, 0, 1]), np.array([5, 9, 2]))
    >>> order.tolist(), new_key.tolist()
    ([1, 2, 0], [True, True, False])
    """
    by_start = np.argsort(starts, kind="stable")
    c = codes[by_start]
    narrow = c.astype(np.uint16) if len(c) and c.max() < 2**16 else c  # uint16: radix sort
    order = by_start[np.argsort(narrow, kind="stable")]
    c = codes[order]
    new_key = np.ones(len(c), dtype=bool)
    new_key[1:] = c[1:] != c[:-1]
    return order, new_key


def segmented_cummax(values: np.ndarray, new_segment: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` that restarts wherever ``new_segment`` is True.

    A Hillis-Steele scan: log2(longest segment) vectorised passes.

    >>> segmented_cummax(np.array([5, 1, 7, 2, 3]), np.array([1, 0, 0, 1, 0], bool)).tolist()
    [5, 5, 7, 2, 3]
    """
    out = np.array(values, copy=True)
    seg = np.cumsum(new_segment)
    shift = 1
    while shift < len(out):
        same = seg[shift:] == seg[:-shift]
        if not same.any():
            break
        out[shift:] = np.where(same, np.maximum(out[shift:], out[:-shift]), out[shift:])
        shift *= 2
    return out


def session_ids(new_key: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Number the merged sessions of intervals sorted by key, then start.

    ``new_key[i]`` is True where row ``i`` begins a key (always at row 0). A row begins a new
    session when its start lies after every end seen so far within its key.

    >>> session_ids(np.array([1, 0, 0, 1], bool), np.array([0, 5, 30, 6]),
    ...             np.array([10, 15, 40, 16])).tolist()
    [0, 0, 1, 2]
    """
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    running_end = segmented_cummax(np.asarray(ends, dtype=np.int64), new_key)
    new = np.array(new_key, dtype=bool, copy=True)
    new[0] = True
    new[1:] |= np.asarray(starts)[1:] > running_end[:-1]
    return np.cumsum(new, dtype=np.int64) - 1
