"""Real processes: no strays after success or failure, a killed worker fails the job
clearly, and Ctrl-C stops a running job cleanly."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import rheostat as rs


def _rows(n=2000):
    return rs.testing.rows([{"i": i} for i in range(n)], batch_size=50)


def test_no_worker_outlives_a_finished_or_failed_job(local_workers):
    flow = rs.Flow("ok")
    flow.source("rows", _rows()).map(lambda r: r).sink("out", rs.sinks.null())
    rs.run(flow, backend="local", parallelism=2)
    assert local_workers() == []

    bad = rs.Flow("bad")
    bad.source("rows", _rows()).map(lambda r: 1 // 0, name="boom").sink("out", rs.sinks.null())
    with pytest.raises(rs.JobFailed, match="boom"):
        rs.run(bad, backend="local", parallelism=2)
    assert local_workers() == []


def kill_my_process_at(row):
    if row["i"] == 1500:
        os.kill(os.getpid(), signal.SIGKILL)
    return row


def test_a_killed_worker_fails_the_job_with_a_clear_error(local_workers):
    flow = rs.Flow("killed")
    flow.source("rows", _rows()).map(kill_my_process_at, name="killer").sink(
        "out", rs.sinks.null())
    with pytest.raises(rs.JobFailed, match=r"worker \d died \(exit code -9\)"):
        rs.run(flow, backend="local", parallelism=2)
    assert local_workers() == []


def test_ctrl_c_stops_the_job_and_its_workers(tmp_path):
    script = tmp_path / "endless.py"
    script.write_text(textwrap.dedent("""
        import rheostat as rs
        flow = rs.Flow("endless")
        rows = rs.testing.rows([{"i": i} for i in range(10_000_000)], batch_size=1000)
        flow.source("rows", rows, rate=2000).map(lambda r: r).sink("out", rs.sinks.null())
        rs.run(flow, parallelism=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = {p.pid for p in psutil.Process(proc.pid).children()}
        time.sleep(0.1)
    assert len(workers) == 2, "the job never started its workers"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert not [pid for pid in workers if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
