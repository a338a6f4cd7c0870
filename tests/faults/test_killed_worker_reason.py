"""A local worker SIGKILLed mid-job: the restart reason names the worker, never a step
failing with BrokenPipeError on the rows it was sending to the dead worker."""

import os
import signal
import threading
import time

import psutil

import rheostat as rs


def test_a_sigkilled_worker_is_the_restart_reason_not_a_step(tmp_path):
    flow = rs.Flow("killed-mid-job")
    rows = rs.testing.rows([{"k": i % 97, "t": i} for i in range(60_000)], batch_size=200)
    (flow.source("rows", rows, rate=10_000).with_timestamp("t")
        .key_by("k").window(rs.windows.tumbling("1s")).aggregate(n=rs.agg.count(), name="win")
        .sink("out", rs.sinks.null()))
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = [p for p in psutil.Process().children()
                       if "rheostat.backends.local.worker" in " ".join(p.cmdline())]
            if len(workers) == 2:
                time.sleep(1.5)  # rows flow between the two workers by now
                os.kill(workers[1].pid, signal.SIGKILL)
                killed.append(workers[1].pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    result = rs.run(flow, backend="local", parallelism=2, checkpoint_interval="0.5s",
                    checkpoint_dir=str(tmp_path / "ckpt"))
    killer.join()
    assert killed, "the job never started two workers"
    reasons = result.sql("select reason from restarts").column("reason").to_pylist()
    assert reasons, "the killed worker caused no restart"
    for reason in reasons:
        assert reason.startswith("worker "), reason
        assert "died" in reason and "BrokenPipe" not in reason and "step " not in reason
