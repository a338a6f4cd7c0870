"""The synthetic generator: seeded, Zipf-skewed, splittable and replayable."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from rheostat import sources
from rheostat.connectors.synthetic import below, chance, mix64, zipf_ranks


def read_all(reader) -> list[pa.RecordBatch]:
    batches = []
    while (batch := reader.read()) is not None:
        batches.append(batch)
    return batches


def test_columns_types_and_schema():
    src = sources.synthetic(1000, value_columns=3)
    t = src.to_table()
    assert t.column_names == ["key", "value", "value_1", "value_2", "ts"]
    assert t.schema == src.schema()
    assert t.schema.field("ts").type == pa.timestamp("ms")
    assert sources.synthetic(10, value_columns=0).to_table().column_names == ["key", "ts"]
    values = t["value"].to_numpy()
    assert values.min() >= 0 and values.max() < 1 and 0.45 < values.mean() < 0.55


def test_deterministic_and_chunks_made_alone_equal_the_whole():
    whole = sources.synthetic(10_000, seed=5).to_table(batch_size=10_000)
    for batch_size in (7, 1000, 1 << 16):
        assert sources.synthetic(10_000, seed=5).to_table(batch_size=batch_size).equals(whole)
    assert not sources.synthetic(10_000, seed=6).to_table().equals(whole)


def test_zipf_skew_and_uniform_keys():
    keys = sources.synthetic(50_000, keys=100, zipf=1.1).to_table()["key"].to_numpy()
    counts = np.bincount(keys, minlength=100)
    assert keys.min() >= 0 and keys.max() < 100
    assert counts.argmax() == 0 and counts[0] > 5 * counts[10] > 0
    weights = np.arange(1, 101) ** -1.1
    assert counts[0] / len(keys) == pytest.approx(weights[0] / weights.sum(), rel=0.05)
    flat = np.bincount(sources.synthetic(50_000, keys=10, zipf=0).to_table()["key"].to_numpy())
    assert len(flat) == 10 and flat.min() > 0.9 * 5000 and flat.max() < 1.1 * 5000


@pytest.mark.parametrize("exponent", [0.8, 1.0, 1.2])
def test_zipf_with_many_keys_is_exact_at_the_head_and_close_in_the_tail(exponent):
    keys = 10**6  # more than the exactly tabulated head
    u = np.linspace(0, 1, 200_001)[:-1]
    ranks = zipf_ranks(u, keys, exponent)
    assert ranks.min() == 0 and ranks.max() < keys and (np.diff(ranks) >= 0).all()
    p = np.arange(1, keys + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    assert (ranks == 0).mean() == pytest.approx(p[0], rel=0.01)
    assert (ranks >= 100_000).mean() == pytest.approx(p[100_000:].sum(), rel=0.02)
    assert zipf_ranks(u, 10**12, 1.1).max() < 10**12


def test_event_time():
    t = sources.synthetic(5000, start_ms=1000, events_per_ms=10).to_table()
    ts = t["ts"].cast(pa.int64()).to_numpy()
    assert (ts == 1000 + np.arange(5000) // 10).all()
    slow = sources.synthetic(4, start_ms=0, events_per_ms=0.5).to_table()
    assert slow["ts"].cast(pa.int64()).to_pylist() == [0, 2, 4, 6]


def test_splits_and_resume_by_position():
    src = pickle.loads(pickle.dumps(sources.synthetic(10_000, seed=1)))
    whole = src.to_table(batch_size=100)
    splits = src.splits(4)
    chunks = {}
    for i, split in enumerate(splits):
        for j, batch in enumerate(read_all(src.open(split, batch_size=100))):
            chunks[i + 4 * j] = batch
    assert pa.Table.from_batches([chunks[c] for c in sorted(chunks)]).equals(whole)

    reader = src.open(splits[2], batch_size=100)
    head = [reader.read() for _ in range(5)]
    rest = read_all(src.open(splits[2], position=reader.position(), batch_size=100))
    straight = read_all(src.open(splits[2], batch_size=100))
    assert pa.Table.from_batches(head + rest).equals(pa.Table.from_batches(straight))


def test_endless():
    src = sources.synthetic(None)
    assert not src.bounded
    reader = src.open(src.splits(1)[0], batch_size=10)
    assert all(reader.read().num_rows == 10 for _ in range(5))


def test_counter_based_randomness_helpers():
    h = mix64(np.arange(100_000, dtype=np.uint64))
    assert len(np.unique(h)) == 100_000
    draws = below(h, 7)
    assert draws.min() == 0 and draws.max() == 6
    assert np.bincount(draws).min() > 0.9 * 100_000 / 7
    assert (chance(h, 4) == (below(h, 4, high=False) > 0)).all()
    assert not chance(h, 1).any()
    per_row = below(h, np.arange(1, 100_001))
    assert (per_row < np.arange(1, 100_001)).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"events": -5}, ValueError, "events must be >= 0"),
        ({"events": 10, "keys": 0}, ValueError, "keys must be >= 1"),
        ({"events": 10, "zipf": -1}, ValueError, "zipf must be a number >= 0"),
        ({"events": 10, "events_per_ms": 0}, ValueError, "events_per_ms"),
        ({"events": 10, "value_columns": -1}, ValueError, "value_columns"),
        ({"events": True}, TypeError, "events must be an integer"),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs, error, match):
    with pytest.raises(error, match=match):
        sources.synthetic(**kwargs)
