"""The sensors end to end on the inline backend: a stepped job (fake clock, one report a
turn) and the control plane's metrics snapshot, checked against what the source sent."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pyarrow as pa
import pytest

import rheostat as rs
from rheostat.runtime.keys import key_groups
from rheostat.testing import SteppedJob

DATA = [{"k": i % 37, "x": i} for i in range(5000)]
TICK = 0.001


def job_of(parallelism: int = 2, data=DATA) -> SteppedJob:
    flow = rs.Flow("sensors_stepped")
    (flow.source("src", rs.testing.rows(data, batch_size=10))
         .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
         .sink("out", rs.sinks.collect()))
    job = SteppedJob(flow, parallelism=parallelism, tick=TICK)
    # A report every turn, so the history is the same every run.
    job.backend.config = dataclasses.replace(job.backend.config, metrics_interval_s=0.0)
    return job


def test_the_snapshot_counts_what_the_source_sent():
    job = job_of()
    job.step(20)
    brain = job.controller.brain
    first = {t: brain.history.reports(t)[0] for t in ("src#0", "src#1")}
    last = {t: brain.history.reports(t)[-1] for t in ("src#0", "src#1")}
    span = last["src#0"].at - first["src#0"].at
    snap = brain.metrics_snapshot(window_s=1.0)  # the whole history
    src, count = snap.steps["src"], snap.steps["count"]
    assert src.is_source and count.inputs == ("src",) and count.parallelism == 2

    # Each source task reads one half in order; the window holds what it read between
    # its first report and its last.
    sent = []
    for i, t in enumerate(("src#0", "src#1")):
        lo, hi = first[t].metrics.rows_in, last[t].metrics.rows_in
        sent += DATA[i * 2500 + lo: i * 2500 + hi]
    assert round(src.input_rate * span) == len(sent) > 0

    want = Counter(key_groups(pa.Table.from_pylist(sent), ("k",), 4096).tolist())
    got = {g: round(rate * span) for g, rate in count.group_loads.items()}
    assert got == dict(want)
    owners = count.key_group_owner
    for i, task in enumerate(count.tasks):
        assert all(owners[g] == i for g in task.key_group_rows)
    per_task = [sum(n for g, n in want.items() if owners[g] == i) for i in range(2)]
    assert count.skew_index == pytest.approx(max(per_task) / (sum(per_task) / 2))
    assert all(0.0 <= t.useful_fraction <= 1.0 for t in src.tasks + count.tasks)


def test_after_a_rescale_the_snapshot_follows_the_new_plan():
    job = job_of(data=DATA * 8)  # the sources still read after the rescale
    job.step(10)
    assert job.settle(job.rescale("count", 3))["status"] == "done"
    job.step(10)
    brain = job.controller.brain
    snap = brain.metrics_snapshot(window_s=5 * TICK)
    count = snap.steps["count"]
    assert count.parallelism == 3 and count.key_group_owner == tuple(
        brain.plan.key_group_owners["count"])
    for i, task in enumerate(count.tasks):
        assert task.key_group_rows is not None
        assert all(count.key_group_owner[g] == i for g in task.key_group_rows)
        assert task.rows_in_per_s >= 0
    assert sum(count.group_loads.values()) > 0
    result = job.finish()
    assert result.state == "finished"
