"""Stateless flows on real workers against a plain-Python reference."""

import random

import pyarrow as pa
import pyarrow.compute as pc

import rheostat as rs


def make_rows(n=5000, seed=1):
    rnd = random.Random(seed)
    return [{"id": i, "k": rnd.choice("abcdefg"), "v": rnd.randint(-100, 100), "t": i}
            for i in range(n)]


def test_record_functions_match_a_python_reference(mode):
    data = make_rows()
    flow = rs.Flow("stateless")
    out = rs.sinks.collect()
    (flow.source("rows", rs.testing.rows(data, batch_size=333), timestamp="t")
        .map(lambda r: {**r, "v2": r["v"] * 2})
        .filter(lambda r: r["v2"] % 3 != 0)
        .flat_map(lambda r: [r, {**r, "id": -r["id"]}] if r["k"] == "a" else [r])
        .sink("out", out))
    mode.run(flow)
    expected = []
    for r in data:
        r = {**r, "v2": r["v"] * 2}
        if r["v2"] % 3 != 0:
            expected += [r, {**r, "id": -r["id"]}] if r["k"] == "a" else [r]
    got = sorted(out.to_pylist(), key=lambda r: r["id"])
    assert got == sorted(expected, key=lambda r: r["id"])


def test_vectorised_steps_across_a_hash_exchange_and_a_union(mode):
    data = make_rows(20_000, seed=2)
    flow = rs.Flow("vectorised")
    out = rs.sinks.collect()
    rows = flow.source("rows", rs.testing.rows(data, batch_size=1000), timestamp="t")
    pos = rows.map_batches(lambda b: b.filter(pc.greater(b["v"], 0)), name="pos")
    neg = rows.map_batches(lambda b: b.filter(pc.less(b["v"], -50)), name="neg")
    (pos.union(neg).key_by("k")
        .map_batches(lambda b: b.append_column("w", pc.multiply(b["v"], 10)), name="scale")
        .rebalance()
        .sink("out", out))
    mode.run(flow)
    expected = sorted(
        (r["id"], r["v"] * 10) for r in data if r["v"] > 0 or r["v"] < -50
    )
    got = sorted(zip(out.table()["id"].to_pylist(), out.table()["w"].to_pylist()))
    assert got == expected
    assert "_ts" not in out.table().column_names  # sinks never see the hidden column


def test_keyed_exchange_puts_every_key_on_exactly_one_task(mode):
    data = make_rows(6000, seed=3)
    flow = rs.Flow("keyed")
    out = rs.sinks.collect()

    def tag(batch: pa.RecordBatch) -> pa.RecordBatch:
        import os
        return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows))

    flow.source("rows", rs.testing.rows(data, batch_size=100)).key_by("k").map_batches(
        tag, name="tag").sink("out", out)
    mode.run(flow)
    table = out.table()
    assert table.num_rows == len(data)
    owners: dict[str, set] = {}
    for k, pid in zip(table["k"].to_pylist(), table["pid"].to_pylist()):
        owners.setdefault(k, set()).add(pid)
    assert all(len(p) == 1 for p in owners.values())


def test_broadcast_delivers_every_row_to_every_task(mode):
    flow = rs.Flow("broadcast")
    out = rs.sinks.collect()
    flow.source("rows", rs.testing.rows(make_rows(100), splits=1)).broadcast().map(
        lambda r: r, name="copy").sink("out", out)
    mode.run(flow)
    assert out.table().num_rows == 100 * mode.parallelism
