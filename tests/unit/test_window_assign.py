"""Pure window-assignment functions against brute-force Python definitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from rheostat.runtime.window_assign import (
    key_codes,
    key_then_start_order,
    last_window_end,
    pane_size,
    segmented_cummax,
    session_ids,
    sliding_windows,
    tumbling_start,
    window_counts,
)


def brute_windows(ts: int, size: int, slide: int, offset: int) -> list[int]:
    """Starts s = offset + k * slide with s <= ts < s + size, latest first."""
    k = (ts - offset) // slide + 1
    out = []
    while offset + k * slide > ts - size:
        s = offset + k * slide
        if s <= ts < s + size:
            out.append(s)
        k -= 1
    return out


def test_tumbling_start_examples() -> None:
    ts = np.array([0, 1, 9, 10, 19, -1, -10, -11])
    assert tumbling_start(ts, 10).tolist() == [0, 0, 0, 10, 10, -10, -10, -20]
    assert tumbling_start(np.array([2, 3, 12, -8]), 10, offset=3).tolist() == [-7, 3, 3, -17]


@given(ts=st.integers(-10**12, 10**12), size=st.integers(1, 10**6), data=st.data())
def test_tumbling_start_matches_definition(ts: int, size: int, data: st.DataObject) -> None:
    offset = data.draw(st.integers(-size + 1, size - 1))
    start = int(tumbling_start(np.array([ts]), size, offset)[0])
    assert start <= ts < start + size
    assert (start - offset) % size == 0


def test_sliding_windows_example_and_negative_times() -> None:
    rows, starts = sliding_windows(np.array([7, -3]), size=10, slide=5)
    assert rows.tolist() == [0, 0, 1, 1]
    assert starts.tolist() == [5, 0, -5, -10]


def test_sliding_windows_with_offset() -> None:
    rows, starts = sliding_windows(np.array([10]), size=10_000, slide=2_000, offset=500)
    assert starts.tolist() == [-1500, -3500, -5500, -7500, -9500]
    assert rows.tolist() == [0] * 5


def test_slide_larger_than_size_leaves_gaps() -> None:
    ts = np.array([0, 1, 2, 4, 5])
    assert window_counts(ts, size=2, slide=5).tolist() == [1, 1, 0, 0, 1]
    rows, starts = sliding_windows(ts, size=2, slide=5)
    assert rows.tolist() == [0, 1, 4]
    assert starts.tolist() == [0, 0, 5]


@settings(max_examples=200)
@given(
    ts=st.lists(st.integers(-10_000, 10_000), max_size=30),
    size=st.integers(1, 60),
    slide=st.integers(1, 60),
    data=st.data(),
)
def test_sliding_windows_match_brute_force(
    ts: list[int], size: int, slide: int, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(-slide + 1, slide - 1))
    rows, starts = sliding_windows(np.array(ts, dtype=np.int64), size, slide, offset)
    got = [[int(s) for r, s in zip(rows, starts) if r == i] for i in range(len(ts))]
    assert got == [brute_windows(t, size, slide, offset) for t in ts]
    counts = window_counts(np.array(ts, dtype=np.int64), size, slide, offset)
    assert counts.tolist() == [len(w) for w in got]
    ends = last_window_end(np.array(ts, dtype=np.int64), size, slide, offset)
    for w, e in zip(got, ends):
        if w:
            assert e == max(w) + size


@given(size=st.integers(1, 100), slide=st.integers(1, 100), t=st.integers(-1000, 1000))
def test_panes_tile_every_window(size: int, slide: int, t: int) -> None:
    """Every window is a union of whole panes: both its bounds are pane boundaries."""
    g = pane_size(size, slide)
    for s in brute_windows(t, size, slide, 0):
        assert s % g == 0 and (s + size) % g == 0
    # a pane's start lies in exactly the windows that hold the whole pane
    p = int(tumbling_start(np.array([t]), g)[0])
    assert brute_windows(p, size, slide, 0) == brute_windows(p + g - 1, size, slide, 0)


def test_key_codes_multi_column_with_nulls() -> None:
    a = pa.array([1, 1, 1, None, None, 2])
    b = pa.array(["x", "x", "y", None, None, None])
    codes = key_codes([a, b], 6).tolist()
    assert codes[0] == codes[1] and codes[3] == codes[4]
    assert len({codes[0], codes[2], codes[3], codes[5]}) == 4
    assert key_codes([], 3).tolist() == [0, 0, 0]
    assert key_codes([pa.chunked_array([[1.5], [1.5, 2.0]])], 3).tolist() == [0, 0, 1]


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", None]),
                          st.integers(-50, 50)), max_size=40))
def test_key_then_start_order(rows: list[tuple]) -> None:
    codes = key_codes([pa.array([r[0] for r in rows], pa.int64()),
                       pa.array([r[1] for r in rows], pa.string())], len(rows))
    starts = np.array([r[2] for r in rows], dtype=np.int64)
    order, new_key = key_then_start_order(codes, starts)
    assert sorted(order.tolist()) == list(range(len(rows)))
    seen: set = set()
    for pos, i in enumerate(order.tolist()):
        k = rows[i][:2]
        if new_key[pos]:
            assert k not in seen  # every key forms one contiguous run...
            seen.add(k)
        else:
            prev = rows[order[pos - 1]]
            assert prev[:2] == k and prev[2] <= rows[i][2]  # ...sorted by start


@given(st.lists(st.tuples(st.integers(-50, 50), st.booleans()), min_size=1, max_size=40))
def test_segmented_cummax(values: list[tuple[int, bool]]) -> None:
    v = np.array([x for x, _ in values])
    flags = np.array([f for _, f in values])
    flags[0] = True
    expected, run = [], None
    for x, f in zip(v.tolist(), flags.tolist()):
        run = x if f else max(run, x)
        expected.append(run)
    assert segmented_cummax(v, flags).tolist() == expected


def test_sessions_merge_touching_and_bridging() -> None:
    gap = 10
    starts = np.array([0, 10, 21, 40, 45])  # 0 and 10 touch (10 <= 0 + gap): one session
    ends = starts + gap
    new_key = np.array([True, False, False, False, False])
    assert session_ids(new_key, starts, ends).tolist() == [0, 0, 1, 2, 2]
    # a long interval (a stored session) bridges two later ones
    starts, ends = np.array([0, 5, 30]), np.array([40, 15, 45])
    assert session_ids(np.array([True, False, False]), starts, ends).tolist() == [0, 0, 0]
    # a new key always starts a new session
    assert session_ids(np.array([True, True]), np.array([0, 1]), np.array([10, 11])).tolist() \
        == [0, 1]
    assert session_ids(np.array([], bool), np.array([]), np.array([])).tolist() == []


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(1, 30)),
                min_size=1, max_size=40))
def test_session_ids_match_brute_force(rows: list[tuple[int, int, int]]) -> None:
    rows = sorted(rows)
    keys = np.array([k for k, _, _ in rows])
    starts = np.array([s for _, s, _ in rows])
    ends = starts + np.array([d for _, _, d in rows])
    new_key = np.r_[True, keys[1:] != keys[:-1]]
    expected, sid, end, prev = [], -1, None, None
    for k, s, e in zip(keys.tolist(), starts.tolist(), ends.tolist()):
        if k != prev or s > end:
            sid, end = sid + 1, e
        else:
            end = max(end, e)
        prev = k
        expected.append(sid)
    assert session_ids(new_key, starts, ends).tolist() == expected
