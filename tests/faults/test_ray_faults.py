"""Faults on the Ray backend: actors killed with ``ray.kill`` or SIGKILL mid-run, and
during a live rescale; the committed output equals the failure-free run, and no actor
outlives its job."""

import os
import random
import signal
import time

import psutil
import pytest

import rheostat as rs
from rheostat import RestartPolicy

EVENTS = 400_000
STEP = "counts"


def windowed(out, seed, *, rate=None):
    flow = rs.Flow("ray-faults")
    ev = flow.source(
        "ev", rs.sources.synthetic(events=EVENTS, keys=3000, seed=seed, events_per_ms=40),
        timestamp="ts", out_of_order="1s", rate=rate, parallelism=2,
    )
    (ev.key_by("key").window(rs.windows.tumbling("1s"))
       .aggregate(name=STEP, n=rs.agg.count(), hi=rs.agg.max("value"))
       .sink("out", out))
    return flow


def rows(sink):
    return sorted(tuple(r.values()) for r in sink.to_pylist())


@pytest.fixture(scope="module")
def reference():
    out = rs.sinks.collect()
    rs.run(windowed(out, 3), backend="inline")
    return rows(out)


def kill_actor(backend, rnd: random.Random, how: str) -> bool:
    """Kill one of the job's actors, at random; False if there was none to kill."""
    try:
        worker = rnd.randrange(len(backend.workers_info))
        if how == "ray.kill":
            import ray

            ray.kill(backend.actor(worker), no_restart=True)
        else:
            os.kill(backend.workers_info[worker]["pid"], signal.SIGKILL)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    return True


def wait_for_checkpoint(job, n=1):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = job.sql("select count(*) as n from checkpoints where state = 'completed'")
        if done.column("n")[0].as_py() >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint completed")


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_a_killed_actor_recovers_with_the_output_of_a_failure_free_run(
    how, reference, tmp_path, ray_cluster
):
    out = rs.sinks.collect()
    job = rs.start(windowed(out, 3, rate=100_000), backend="ray", parallelism=2,
                   checkpoint_interval="200ms", checkpoint_dir=str(tmp_path / "chk"),
                   restart=RestartPolicy(attempts=5, backoff_s=0.05))
    rnd = random.Random(how)
    wait_for_checkpoint(job)
    killed = kill_actor(job.controller.backend, rnd, how)
    result = job.wait()
    assert killed and result.restarts >= 1
    assert rows(out) == reference


def test_an_actor_killed_during_a_live_rescale_loses_and_duplicates_nothing(
    reference, tmp_path, ray_cluster
):
    out = rs.sinks.collect()
    job = rs.start(windowed(out, 3, rate=50_000), backend="ray", parallelism=2,
                   checkpoint_interval="200ms", checkpoint_dir=str(tmp_path / "chk"),
                   restart=RestartPolicy(attempts=5, backoff_s=0.05))
    wait_for_checkpoint(job)
    pending = job.reconfigure(rs.Rescale(STEP, 4), wait=False)
    while job.controller.reconfigs.in_flight is None and not pending.done():
        time.sleep(0.01)  # the new actors start first; kill once the stages run
    kill_actor(job.controller.backend, random.Random(1), "ray.kill")
    try:
        pending.result(120)
    except rs.ReconfigError as exc:  # rolled back by the restart
        assert "restarted" in str(exc) or "failed" in str(exc)
    result = job.wait()
    assert result.restarts >= 1
    assert rows(out) == reference


def test_no_actor_outlives_its_job(ray_cluster):
    flow = rs.Flow("ray-done")
    flow.source("rows", rs.testing.rows([{"i": i} for i in range(5000)], batch_size=100)) \
        .map(lambda r: r).sink("out", rs.sinks.null())
    job = rs.start(flow, backend="ray", parallelism=2)
    job.wait()
    pids = [info["pid"] for info in job.controller.backend.workers_info.values()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert alive == []


def test_a_failing_step_on_ray_fails_the_job_with_its_traceback(ray_cluster):
    flow = rs.Flow("ray-bad")
    flow.source("rows", rs.testing.rows([{"i": i} for i in range(100)])) \
        .map(lambda r: 1 // 0, name="boom").sink("out", rs.sinks.null())
    with pytest.raises(rs.JobFailed, match="boom") as info:
        rs.run(flow, backend="ray", parallelism=2)
    assert "ZeroDivisionError" in str(info.value)
