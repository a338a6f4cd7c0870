"""A task moved to another worker with ``place`` takes its sink's open transaction
along: files written before the move are committed with the next checkpoint, exactly
once, even when a worker is SIGKILLed after the move."""

import os
import signal
import time
from pathlib import Path

import pyarrow.dataset as ds

import rheostat as rs

STEP = "counts"


def job(out: Path, rate: float | None) -> rs.Flow:
    flow = rs.Flow("place-faults")
    source = rs.sources.synthetic(events=300_000, keys=3000, seed=6, events_per_ms=20,
                                  start_ms=0)
    ev = flow.source("ev", source, timestamp="ts", out_of_order="1s", rate=rate,
                     parallelism=2, batch_size=2000)
    (ev.key_by("key").window(rs.windows.tumbling("2s"))
       .aggregate(name=STEP, n=rs.agg.count(), hi=rs.agg.max("value"))
       .sink("out", rs.sinks.parquet(str(out))))  # chained with the aggregate: it moves too
    return flow


def committed(out: Path) -> list[tuple]:
    table = ds.dataset(str(out), format="parquet").to_table()
    return sorted(tuple(r.values()) for r in table.to_pylist())


def wait_for_checkpoint(job_handle, n):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = job_handle.sql("select count(*) from checkpoints where state = 'completed'")
        if done.column(0)[0].as_py() >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} checkpoints completed")


def test_a_placed_task_then_a_killed_worker_commit_every_row_once(tmp_path):
    straight = tmp_path / "straight"
    rs.run(job(straight, None), backend="inline", parallelism=2)
    out = tmp_path / "out"
    handle = rs.start(job(out, 60_000), parallelism=2, workers=2,
                      checkpoint_interval="200ms", checkpoint_dir=str(tmp_path / "chk"),
                      restart=rs.RestartPolicy(attempts=3, backoff_s=0.05))
    wait_for_checkpoint(handle, 1)
    assert handle.place(f"{STEP}#1", 0)["status"] == "done"
    before = handle.sql("select count(*) from checkpoints where state = 'completed'")
    wait_for_checkpoint(handle, before.column(0)[0].as_py() + 1)
    os.kill(handle.controller.backend._procs[1].pid, signal.SIGKILL)
    result = handle.wait()
    assert result.restarts == 1
    assert committed(out) == committed(straight)
