"""A stateless step behind a key_by (its input is hashed, so it has a key-group owner
table) rescales live like a keyed one: only routing moves, no row is lost or doubled.
Before, its old owner refused to hand over groups it kept no state for."""

from __future__ import annotations

from collections import Counter

import rheostat as rs
from rheostat.testing import SteppedJob

DATA = [{"k": i % 41, "x": i} for i in range(6000)]


def test_a_stateless_step_after_a_key_by_rescales_up_and_down_exactly():
    out = rs.sinks.collect()
    flow = rs.Flow("stateless_keyed")
    gate = rs.testing.Gate()  # the input ends after both rescales
    (flow.source("src", rs.testing.rows(DATA, batch_size=20, hold_end=gate))
         .key_by("k").map(lambda r: {**r, "y": r["x"] * 2}, name="double")
         .sink("out", out))
    job = SteppedJob(flow, parallelism=1)
    job.step(20)
    assert job.settle(job.rescale("double", 3))["status"] == "done"
    job.step(20)
    assert job.settle(job.rescale("double", 2))["status"] == "done"
    gate.open()
    assert job.finish().state == "finished"
    rows = out.to_pylist()
    assert Counter(r["x"] for r in rows) == Counter(r["x"] for r in DATA)
    assert all(r["y"] == 2 * r["x"] for r in rows)
