"""Key groups handed between two window operators at different watermarks.

Whichever side lags, every window fires exactly once, on one side or the other, with all
its rows: the same windows as one operator that saw every row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rheostat.plan.logical import Agg, Sliding, Tumbling, WindowAggregateStep
from rheostat.runtime.keys import key_groups
from rheostat.runtime.operator import OperatorContext
from rheostat.runtime.operators.windows import WindowAggregate

MAXP = 64


def operator(window) -> tuple[WindowAggregate, list[pa.RecordBatch]]:
    step = WindowAggregateStep("w", (), keys=("k",), window=window,
                               aggs=(("n", Agg("count")),))
    out: list[pa.RecordBatch] = []
    op = WindowAggregate(step)
    op.open(OperatorContext.for_test(step, out.append, max_parallelism=MAXP))
    return op, out


def rows(keys: list[int], t0: int, t1: int) -> pa.RecordBatch:
    ks, ts = np.meshgrid(np.array(keys), np.arange(t0, t1))
    return pa.record_batch({"k": ks.ravel(), "_ts": ts.ravel().astype(np.int64)})


def split(batch: pa.RecordBatch, groups: list[int]) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """The rows of key groups ``groups``, and the others."""
    mask = np.isin(key_groups(batch, ("k",), MAXP), groups)
    return batch.filter(pa.array(mask)), batch.filter(pa.array(~mask))


def windows(batches: list[pa.RecordBatch]) -> list[tuple]:
    table = pa.Table.from_batches(batches) if batches else None
    if table is None:
        return []
    return sorted(zip(table["k"].to_pylist(), table["window_end"].cast(pa.int64()).to_pylist(),
                      table["n"].to_pylist(), strict=True))


@pytest.mark.parametrize("window", [Tumbling(10), Sliding(20, 10)])
@pytest.mark.parametrize("receiver_ahead", [True, False])
def test_handed_over_groups_fire_every_window_once(window, receiver_ahead):
    keys = list(range(60))
    kg = key_groups(pa.table({"k": keys}), ("k",), MAXP)
    givers = sorted({int(g) for g in kg if g < 32})  # the giver's groups; the taker's: >= 32
    moving = givers[: len(givers) // 2]
    whole, whole_out = operator(window)
    giver, giver_out = operator(window)
    taker, taker_out = operator(window)
    early = rows(keys, 0, 60)
    whole.on_batch(early, 0)
    to_giver, to_taker = split(early, givers)
    giver.on_batch(to_giver, 0)
    taker.on_batch(to_taker, 0)
    whole.on_watermark(19)
    fast, slow = (taker, giver) if receiver_ahead else (giver, taker)
    fast.on_watermark(49)  # the two tasks have drained their inputs to different points
    slow.on_watermark(19)
    taker.take_over(giver.snapshot_state(moving))
    giver.drop_state(moving)
    late = rows(keys, 60, 100)  # after the markers: later than both watermarks
    whole.on_batch(late, 0)
    to_taker, to_giver = split(late, [g for g in range(MAXP) if g not in givers or g in moving])
    taker.on_batch(to_taker, 0)
    giver.on_batch(to_giver, 0)
    for op in (whole, giver, taker):
        op.on_watermark(200)
    assert windows(giver_out + taker_out) == windows(whole_out)


def test_dropping_key_groups_leaves_no_empty_panes():
    op, out = operator(Sliding(20, 10))
    op.on_batch(rows([0, 1, 2, 3], 0, 30), 0)
    groups = sorted({int(g) for g in key_groups(pa.table({"k": [0, 1, 2, 3]}), ("k",), MAXP)})
    op.drop_state(groups)
    assert op.store.panes == {}
    op.on_watermark(100)
    assert out == []
