"""The reconfiguration protocol through the interleavings that matter, each put at an
exact point with ``rs.testing.SteppedJob`` (one thread, a fake clock, no processes): a
crash in each stage of a rescale, a rescale asked for during a checkpoint, a barrier
right behind a marker, the end of the stream during a hand-over, an index retired and
added back. Every run commits exactly DuckDB's windows, and after every turn no
checkpoint and no reconfiguration stage are in flight together."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import rheostat as rs
from rheostat.testing import SteppedJob

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))
from windowed_job import STEP, committed, compare, events, flow, reference

DATA = events(n=12_000, keys=80, seed=8)
EXPECTED = reference(DATA)


def stepped(root: Path, **kw) -> SteppedJob:
    options = {"parallelism": 2, "checkpoint_interval": 0.01, "reconfig_batch_groups": 1024,
               "channel_capacity_bytes": 4 << 10, **kw}
    return SteppedJob(flow(DATA, root / "out", rate=None, batch_size=20),
                      checkpoint_dir=str(root / "chk"), **options)


def step(job: SteppedJob, turns: int = 1) -> None:
    """Step, checking the controller's invariant after every turn."""
    for _ in range(turns):
        job.step()
        c = job.controller
        in_checkpoint = c.checkpoints is not None and c.checkpoints.in_flight is not None
        stage = c.reconfigs.in_flight
        assert not (in_checkpoint and stage is not None and stage.phase == "apply"), \
            f"turn {job.turns}: checkpoint and reconfiguration {stage.epoch} overlap"


def until(job: SteppedJob, condition, what: str) -> None:
    for _ in range(job.max_turns):
        if condition():
            return
        assert not job.done, f"the job ended before {what}"
        step(job)
    raise AssertionError(f"no {what} within {job.max_turns} turns")


def stage_in_flight(job: SteppedJob, k: int) -> bool:
    """Stage ``k`` (1-based, counted over the run) is applied and in flight."""
    f = job.controller.reconfigs.in_flight
    return f is not None and f.phase == "apply" and f.epoch == k


def settle(job: SteppedJob, reply) -> dict:
    until(job, lambda: reply.done(), "the reconfiguration's end")
    return reply.result()


def finish_exact(job: SteppedJob, root: Path) -> rs.JobResult:
    until(job, lambda: job.done, "the end of the job")
    result = job.finish()
    diff = compare(EXPECTED, committed(root / "out"))
    assert result.state == "finished" and diff.exact, diff
    return result


@pytest.mark.parametrize("where", ["queued", "stage-1", "stage-1-parts", "stage-2"])
def test_a_crash_in_each_stage_of_a_rescale(tmp_path, where):
    job = stepped(tmp_path)
    step(job, 15)
    job.checkpoint()
    reply = job.rescale(STEP, 4)  # two stages of at most 1024 key groups
    if where == "queued":
        pass  # the crash comes before the first stage starts
    elif where == "stage-1":
        until(job, lambda: stage_in_flight(job, 1), "stage 1")
    elif where == "stage-1-parts":
        until(job, lambda: stage_in_flight(job, 1) and job.controller.reconfigs.in_flight.done,
              "a part of stage 1 done")
    else:
        until(job, lambda: stage_in_flight(job, 2), "stage 2")
    job.fail(job.task_ids[-1])
    if where == "queued":  # not started: it runs once the job has restarted
        assert settle(job, reply)["status"] == "done"
    else:  # the job rolls back to the plan of the last completed stage
        with pytest.raises(rs.ReconfigError, match="failed"):
            settle(job, reply)
        assert job.controller.plan.parallelism[STEP] == (2 if where != "stage-2" else 4)
    assert job.restarts == 1
    finish_exact(job, tmp_path)


def test_a_rescale_asked_for_during_a_checkpoint_waits_for_it(tmp_path):
    job = stepped(tmp_path)
    step(job, 15)
    coordinator = job.controller.checkpoints
    coordinator.soon()
    until(job, lambda: coordinator.in_flight is not None, "a checkpoint in flight")
    in_flight = coordinator.in_flight.checkpoint_id
    reply = job.rescale(STEP, 3)
    until(job, lambda: job.controller.reconfigs.in_flight is not None, "the rescale's start")
    assert in_flight in coordinator.completed  # started only once the checkpoint was done
    assert settle(job, reply)["status"] == "done"
    finish_exact(job, tmp_path)


def test_a_barrier_right_behind_the_markers_then_a_crash(tmp_path):
    """The first checkpoint after a rescale is due at once: its barriers follow the
    markers on the same channels; the job then restores from it at the new parallelism."""
    job = stepped(tmp_path)
    step(job, 15)
    assert settle(job, job.rescale(STEP, 3))["status"] == "done"
    before = list(job.controller.checkpoints.completed)
    until(job, lambda: job.controller.checkpoints.completed != before, "the next checkpoint")
    job.fail(f"{STEP}#2")
    finish_exact(job, tmp_path)
    assert job.restarts == 1


@pytest.mark.parametrize("late", [0, 3, 6, 9])
def test_the_end_of_the_stream_during_a_hand_over(tmp_path, late):
    """The sources end while the key groups' state is on its way (the rescale is asked
    for a few turns before the input runs out, at several distances)."""
    job = stepped(tmp_path, channel_capacity_bytes=8 << 20)
    sources = [t for t in job.task_ids if t.startswith("ev#")]
    probe = stepped(tmp_path / "probe", channel_capacity_bytes=8 << 20)
    until(probe, lambda: all(t in probe.controller.job.finished_tasks for t in sources),
          "the sources' end")
    end = probe.turns
    probe.finish()
    step(job, max(end - late, 1))
    reply = job.rescale(STEP, 4)
    until(job, lambda: reply.done() or job.done, "the rescale or the end")
    finish_exact(job, tmp_path)


def test_an_index_retired_and_added_back_then_a_crash(tmp_path):
    job = stepped(tmp_path)
    step(job, 15)
    assert settle(job, job.rescale(STEP, 1))["status"] == "done"
    added_back = job.rescale(STEP, 2)  # waits until task 1's final state is committed
    step(job, 2)
    assert not added_back.done()
    assert settle(job, added_back)["status"] == "done"
    assert len(job.controller.checkpoints.completed) >= 2
    step(job, 5)
    job.fail(f"{STEP}#1")
    finish_exact(job, tmp_path)
