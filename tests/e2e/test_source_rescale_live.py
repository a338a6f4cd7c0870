"""Source steps rescaled on real worker processes: live (``job.rescale("ev", n)``, also
with a worker SIGKILLed in between) and on resume at another parallelism. The committed
Parquet windows equal DuckDB's over the input: no row read twice or skipped, none late.
Sleeps only pace the changes; nothing asserts on time."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

import rheostat as rs

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))
from windowed_job import (
    STEP,
    WINDOW_MS,
    checkpoints_done,
    committed,
    compare,
    events,
    reference,
    rescale_after_restart,
    wait_until,
)

SPLITS = 12


class FailWhenArmed:
    """Raises on the first batch once the file ``arm`` exists (once: ``done`` remembers)."""

    def __init__(self, arm: Path, done: Path) -> None:
        self.arm, self.done = str(arm), str(done)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if os.path.exists(self.arm) and not os.path.exists(self.done):
            open(self.done, "w").close()
            raise RuntimeError("injected crash")
        return batch


def flow(data, out: Path, rate: float | None = 30_000,
         fail: FailWhenArmed | None = None) -> rs.Flow:
    """Rows in 12 fixed splits (paced at ``rate`` rows/s) -> key_by(k) -> tumbling 500 ms
    count and sum -> Parquet files in ``out``."""
    f = rs.Flow("source-rescale")
    ev = f.source("ev", rs.testing.rows(data, batch_size=300, splits=SPLITS), timestamp="ts",
                  out_of_order="10ms", rate=rate)
    if fail is not None:
        ev = ev.map_batches(fail, name="crash")
    (ev.key_by("k").window(rs.windows.tumbling(f"{WINDOW_MS}ms"))
     .aggregate(name=STEP, n=rs.agg.count(), total=rs.agg.sum("v"))
     .sink("out", rs.sinks.parquet(str(out))))
    return f


def start(tmp_path: Path, data, out: Path) -> rs.Job:
    return rs.start(flow(data, out), backend="local", parallelism=2, workers=2,
                    checkpoint_interval="300ms", checkpoint_dir=str(tmp_path / "chk"),
                    restart=rs.RestartPolicy(attempts=3, backoff_s=0.05))


def assert_exact(result: rs.JobResult, data, out: Path) -> None:
    assert result.state == "finished"
    assert result.counters().get("late", 0) == 0
    diff = compare(reference(data), committed(out))
    assert diff.exact, diff


def test_a_source_rescaled_live_up_and_down_reads_every_row_once(tmp_path):
    data = events(n=120_000, seed=41)
    out = tmp_path / "out"
    job = start(tmp_path, data, out)
    try:
        wait_until(lambda: checkpoints_done(job) >= 1)
        assert job.rescale("ev", 3)["status"] == "done"
        time.sleep(0.3)
        assert job.rescale("ev", 1)["status"] == "done"
        result = job.wait()
    finally:
        job.cancel()
    assert_exact(result, data, out)


def test_rescale_kill_rescale_of_a_source_reads_every_row_once(tmp_path, local_workers):
    data = events(n=120_000, seed=43)
    out = tmp_path / "out"
    job = start(tmp_path, data, out)
    try:
        wait_until(lambda: checkpoints_done(job) >= 1)
        assert job.rescale("ev", 3)["status"] == "done"
        done = checkpoints_done(job)
        wait_until(lambda: checkpoints_done(job) > done)  # the new plan's first checkpoint
        os.kill(local_workers()[0].pid, signal.SIGKILL)
        wait_until(lambda: job.controller.job.restarts >= 1 and job.controller.job.state ==
                   "running")
        rescale_after_restart(job, "ev", 2)
        result = job.wait()
    finally:
        job.cancel()
    assert result.restarts >= 1
    assert_exact(result, data, out)


def stop_midway(tmp_path: Path, data, fail: FailWhenArmed) -> tuple[Path, str]:
    """Run at parallelism 2 until two checkpoints are done, then crash, with no restart:
    the job stops with checkpoints and committed windows."""
    out, chk = tmp_path / "out", str(tmp_path / "chk")
    job = rs.start(flow(data, out, fail=fail), backend="local", parallelism=2, workers=2,
                   checkpoint_interval="200ms", checkpoint_dir=chk,
                   restart=rs.RestartPolicy(attempts=0))
    try:
        wait_until(lambda: checkpoints_done(job) >= 2 and bool(committed(out)))
        open(fail.arm, "w").close()
        with pytest.raises(rs.JobFailed, match="injected crash"):
            job.wait()
    finally:
        job.cancel()
    assert committed(out), "the checkpoints should have committed windows before the crash"
    return out, chk


@pytest.mark.parametrize("parallelism, backend", [(3, "local"), (1, "inline")])
def test_stopped_at_two_and_resumed_at_another_parallelism(tmp_path, parallelism, backend):
    data = events(n=60_000, seed=47)
    fail = FailWhenArmed(tmp_path / "arm", tmp_path / "crashed")
    out, chk = stop_midway(tmp_path, data, fail)
    # Every source task of the resumed job gathers its splits' positions from the parts
    # of both old source tasks.
    result = rs.run(flow(data, out, rate=None, fail=fail), backend=backend,
                    parallelism=parallelism, checkpoint_interval="200ms", checkpoint_dir=chk,
                    resume=True)
    assert_exact(result, data, out)
