"""Random sequences of rescales, key-group moves, checkpoints and task crashes, stepped
deterministically in one thread (``rs.testing.SteppedJob``): the committed Parquet output
always equals DuckDB's windows of the input. Hypothesis shrinks a failure to the shortest
sequence that shows it; ``RHEOSTAT_PROPERTY_EXAMPLES`` runs more examples."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rheostat as rs
from rheostat.testing import SteppedJob

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))
from windowed_job import STEP, committed, compare, events, flow, reference

DATA = events(n=8_000, keys=60, seed=3)
EXPECTED = reference(DATA)

turns = st.tuples(st.just("turns"), st.integers(1, 40))
rescale = st.tuples(st.just("rescale"), st.integers(1, 4))
rescale_async = st.tuples(st.just("rescale_async"), st.integers(1, 4))
move = st.tuples(st.just("move"), st.integers(0, 4095 - 64), st.integers(1, 600),
                 st.integers(0, 3))
checkpoint = st.tuples(st.just("checkpoint"))
crash = st.tuples(st.just("crash"), st.integers(0, 7))
actions = st.lists(st.one_of(turns, rescale, rescale_async, move, checkpoint, crash),
                   min_size=1, max_size=8)


def play(schedule: list[tuple], root: Path) -> rs.JobResult:
    job = SteppedJob(flow(DATA, root / "out", rate=None, batch_size=40), parallelism=2,
                     checkpoint_interval=0.01, checkpoint_dir=str(root / "chk"),
                     restart_attempts=20, reconfig_batch_groups=256)
    for action in schedule:
        if job.done:
            break
        kind = action[0]
        try:
            if kind == "turns":
                job.step(action[1])
            elif kind == "rescale":
                job.settle(job.rescale(STEP, action[1]))
            elif kind == "rescale_async":  # what follows happens while it runs
                job.rescale(STEP, action[1])
            elif kind == "move":
                _, start, length, to = action
                p = job.controller.plan.parallelism[STEP]
                job.settle(job.move_key_groups(STEP, range(start, start + length), to % p))
            elif kind == "checkpoint":
                job.checkpoint()
            elif kind == "crash":
                ids = job.task_ids
                job.fail(ids[action[1] % len(ids)])
        except rs.ReconfigError:
            pass  # refused (a task left without key groups, the job ended) or failed
        except AssertionError:
            if not job.done:  # only "the job ended first" is expected
                raise
    return job.finish()


@settings(max_examples=int(os.environ.get("RHEOSTAT_PROPERTY_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_any_schedule_commits_exactly_the_windows_of_no_change(schedule):
    with tempfile.TemporaryDirectory() as root:
        result = play(schedule, Path(root))
        assert result.state == "finished"
        diff = compare(EXPECTED, committed(Path(root) / "out"))
        assert diff.exact, f"{schedule}: {diff}"


@pytest.mark.parametrize("schedule", [
    [("turns", 5), ("rescale", 4), ("rescale", 1), ("rescale", 2)],
    [("turns", 5), ("checkpoint",), ("rescale", 1), ("checkpoint",), ("checkpoint",),
     ("rescale", 2), ("crash", 1)],
    [("turns", 3), ("rescale_async", 4), ("turns", 2), ("crash", 0), ("rescale", 3)],
    [("turns", 3), ("checkpoint",), ("rescale", 3), ("crash", 4), ("rescale", 1),
     ("checkpoint",), ("crash", 0)],
], ids=["2-4-1-2", "retired-index-back-then-crash", "crash-during-rescale",
        "rescale-crash-rescale"])
def test_schedules_that_once_lost_windows(schedule, tmp_path):
    result = play(schedule, tmp_path)
    diff = compare(EXPECTED, committed(tmp_path / "out"))
    assert result.state == "finished" and diff.exact, diff
