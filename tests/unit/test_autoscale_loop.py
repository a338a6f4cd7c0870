"""The closed loop wired into a running job (the inline backend, stepped): it evaluates
on its interval, records every verdict as a row, carries its decisions out through the
ordinary reconfiguration path (the output stays exact), and holds while a person's
request is in progress."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import rheostat as rs
from rheostat.policy.rate import Limits, RateConfig
from rheostat.testing import SteppedJob

DATA = [{"k": i % 37, "x": i} for i in range(20_000)]


def job_of(autoscale: rs.Autoscale, parallelism: int = 1) -> tuple[SteppedJob, Any]:
    out = rs.sinks.collect()
    flow = rs.Flow("autoscale_loop")
    (flow.source("src", rs.testing.rows(DATA, batch_size=20))
         .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
         .sink("out", out))
    job = SteppedJob(flow, parallelism=parallelism, autoscale=autoscale)
    job.backend.config = dataclasses.replace(job.backend.config, metrics_interval_s=0.0)
    return job, out


def decisions(job: SteppedJob) -> list[dict]:
    return job.controller.tables.query(
        "select evaluated_s, step_id, policy, action, done, reason from decisions "
        "order by evaluated_s").to_pylist()


def test_every_evaluation_is_recorded_and_what_it_carries_out_keeps_the_output_exact():
    # Pin "count" to 2 tasks: the rate policy must rescale 1 -> 2 whatever it measures.
    pinned = RateConfig(limits={"count": Limits(min_parallelism=2, max_parallelism=2)})
    job, out = job_of(rs.Autoscale(interval_s=0.01, window_s=0.01, cooldown_s=0.01,
                                   rate=pinned, move_key_groups=False))
    job.step(200)
    rows = decisions(job)
    assert rows and all(r["reason"] and r["done"] for r in rows)
    assert {r["step_id"] for r in rows} >= {"src", "count"}
    carried = [r for r in rows if r["done"] == "carried out"]
    assert [(r["step_id"], r["action"]) for r in carried] == [("count", "rescale")]
    result = job.finish()
    assert result.state == "finished"
    assert result.plan.chain_of("count").parallelism == 2
    done = result.sql("select state from reconfigurations").column("state").to_pylist()
    assert done == ["done"]
    counts = Counter(r["k"] for r in out.to_pylist())
    assert counts == Counter(r["k"] for r in DATA)  # every row once, across the rescale


def test_the_loop_holds_while_a_persons_request_is_in_progress():
    pinned = RateConfig(limits={"count": Limits(min_parallelism=3, max_parallelism=3)})
    job, _ = job_of(rs.Autoscale(interval_s=0.005, window_s=0.005, rate=pinned,
                                 move_key_groups=False))
    job.step(2)  # before the loop's first evaluation
    reply = job.rescale("count", 2)  # a person asks
    during: list[dict] = []  # the verdicts of turns that ended with it still running
    while not reply.done():
        before = len(decisions(job))
        job.step(1)
        if not reply.done():
            during += decisions(job)[before:]
    assert reply.result()["status"] == "done"
    assert all(r["done"] != "carried out" for r in during)
    assert any(r["done"] == "held: a reconfiguration is queued or running" for r in during)
    job.step(100)
    job.finish()
    requests = job.controller.tables.query(
        "select request from reconfigurations order by reconfig_id").column(0).to_pylist()
    assert requests == ["rescale count to 2", "rescale count to 3"]  # the person's first
