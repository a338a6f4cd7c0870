"""Live rescales of a step chained to a file sink, with checkpoints: the committed files
hold exactly the failure-free output (DuckDB's), also when a worker is SIGKILLed between
rescales. Before sink transactions survived plan changes, 2 -> 4 and 2 -> 1 -> 2 lost
committed windows. Sleeps only pace the changes; nothing asserts on time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from windowed_job import (
    STEP,
    checkpoints_done,
    committed,
    compare,
    events,
    flow,
    reference,
    rescale_after_restart,
    wait_until,
)

import rheostat as rs


def start(tmp_path: Path, data, sink_dir: Path, **kw) -> rs.Job:
    return rs.start(flow(data, sink_dir, **kw), parallelism=2, workers=2,
                    checkpoint_interval="300ms", checkpoint_dir=str(tmp_path / "chk"),
                    restart=rs.RestartPolicy(attempts=3, backoff_s=0.05))


def rows_flowing(job: rs.Job) -> bool:
    return any(m.rows_in for m in list(job.controller.job.metrics.values()))


@pytest.mark.parametrize("changes", [(4,), (1, 2), (3, 1, 4)], ids=["2-4", "2-1-2", "2-3-1-4"])
def test_live_rescales_commit_exactly_the_failure_free_windows(tmp_path, changes):
    data = events(seed=len(changes))
    out = tmp_path / "out"
    gate = rs.testing.Gate()  # the input ends once the rescales are done
    job = start(tmp_path, data, out, hold_end=gate)
    try:
        wait_until(lambda: checkpoints_done(job) >= 1)
        for n in changes:
            assert job.rescale(STEP, n)["status"] == "done"
            time.sleep(0.3)
        gate.open()
        result = job.wait()
    finally:
        job.cancel()
    assert result.state == "finished"
    diff = compare(reference(data), committed(out))
    assert diff.exact, diff


def test_a_jsonl_sink_survives_a_rescale_up_too(tmp_path):
    data = events(n=60_000, seed=9)
    out = tmp_path / "out"
    gate = rs.testing.Gate()
    job = start(tmp_path, data, out, fmt="jsonl", hold_end=gate)
    try:
        wait_until(lambda: checkpoints_done(job) >= 1)
        assert job.rescale(STEP, 4)["status"] == "done"
        gate.open()
        result = job.wait()
    finally:
        job.cancel()
    assert result.state == "finished"
    diff = compare(reference(data), committed(out, fmt="jsonl"))
    assert diff.exact, diff


def test_rescale_kill_rescale_commits_exactly_the_failure_free_windows(tmp_path, local_workers):
    data = events(n=150_000, seed=11)
    out = tmp_path / "out"
    job = start(tmp_path, data, out)
    try:
        wait_until(lambda: checkpoints_done(job) >= 1)
        assert job.rescale(STEP, 3)["status"] == "done"
        seen = checkpoints_done(job)
        wait_until(lambda: checkpoints_done(job) > seen)
        os.kill(local_workers()[1].pid, signal.SIGKILL)
        wait_until(lambda: job.controller.job.restarts >= 1
                   and job.controller.job.state == "running" and rows_flowing(job))
        rescale_after_restart(job, STEP, 1)
        result = job.wait()
    finally:
        job.cancel()
    assert result.state == "finished" and result.restarts >= 1
    diff = compare(reference(data), committed(out))
    assert diff.exact, diff
