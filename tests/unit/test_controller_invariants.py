"""``Controller.validate``: the invariants SteppedJob checks after every turn, and that
each one is caught when broken by hand."""

import pytest

import rheostat as rs
from rheostat.control.checkpoints import _InFlight
from rheostat.control.controller import InvariantViolated
from rheostat.testing import SteppedJob


def job(tmp_path):
    flow = rs.Flow("invariants")
    (flow.source("n", rs.testing.rows([{"k": i % 7, "x": i} for i in range(3000)],
                                      batch_size=10))
     .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
     .sink("out", rs.sinks.collect()))
    j = SteppedJob(flow, parallelism=2, checkpoint_interval=0.01,
                   checkpoint_dir=str(tmp_path / "chk"))
    j.step(3)
    return j


def test_a_running_job_keeps_its_invariants(tmp_path):
    j = job(tmp_path)
    j.settle(j.rescale("count", 3))
    j.controller.validate()
    assert j.finish().state == "finished"


def test_a_checkpoint_and_a_reconfiguration_stage_in_flight_together_are_caught(tmp_path):
    j = job(tmp_path)
    j.rescale("count", 3)
    j.run_until(lambda: j.controller.reconfigs.in_flight is not None, "the rescale")
    j.controller.checkpoints.in_flight = _InFlight(99, 0.0)
    with pytest.raises(InvariantViolated, match="checkpoint 99 and reconfiguration"):
        j.controller.validate()


def test_a_task_missing_from_the_placement_or_the_checkpoints_is_caught(tmp_path):
    j = job(tmp_path)
    del j.controller.placement["count#1"]
    j.controller.checkpoints.task_ids.remove("count#0")
    with pytest.raises(InvariantViolated) as caught:
        j.controller.validate()
    assert "placement covers" in str(caught.value)
    assert "do not wait for running task(s) ['count#0']" in str(caught.value)


def test_a_retired_task_back_in_the_plan_too_early_is_caught(tmp_path):
    j = job(tmp_path)
    j.controller.brain.retired["count#1"] = 2
    with pytest.raises(InvariantViolated, match="retired task"):
        j.controller.validate()
