"""Exactly-once under real SIGKILLs: random workers die at random moments, the job
restores its latest checkpoint, and the committed output equals the failure-free run."""

import os
import random
import signal
import threading

import pytest

import rheostat as rs
from rheostat import RestartPolicy

EVENTS = 1_000_000
RATE = 400_000  # rows/s: the run lasts long enough to be killed several times


def windowed(out, seed, *, rate=None, dead=None, fail_once_flag=None):
    flow = rs.Flow("exactly-once")
    ev = flow.source(
        "ev", rs.sources.synthetic(events=EVENTS, keys=5000, seed=seed, events_per_ms=50),
        timestamp="ts", out_of_order="1s", rate=rate, parallelism=2,
    )
    if dead is not None:
        ev = ev.map_batches(reject_poison, name="check", on_error="dead_letter")
        ev.errors.sink("dead", dead)
    if fail_once_flag is not None:
        ev = ev.map_batches(FailOnce(fail_once_flag), name="fail-once")
    (ev.key_by("key").window(rs.windows.tumbling("1s"))
       .aggregate(n=rs.agg.count(), hi=rs.agg.max("value"), lo=rs.agg.min("value"))
       .sink("out", out))
    return flow


def reject_poison(batch):
    """Rows of key 7 with a tiny value are poison: a handful, the same in every run."""
    import pyarrow.compute as pc

    if pc.any(pc.and_(pc.equal(batch["key"], 7), pc.less(batch["value"], 0.002))).as_py():
        raise ValueError("poison")
    return batch


class FailOnce:
    """Raises on the first batch it ever sees (a flag file remembers across restarts)."""

    def __init__(self, flag):
        self.flag = flag

    def __call__(self, batch):
        if not os.path.exists(self.flag):
            open(self.flag, "w").close()
            raise RuntimeError("first attempt fails")
        return batch


def rows(sink):
    return sorted(tuple(r.values()) for r in sink.to_pylist())


class Killer(threading.Thread):
    """SIGKILLs a random worker of this process at random moments, ``kills`` times
    (``workers()`` lists them)."""

    def __init__(self, seed, kills, workers):
        super().__init__(daemon=True)
        self.workers = workers
        self.rnd = random.Random(seed)
        self.kills = kills
        self.done = 0
        self.stop = threading.Event()

    def run(self):
        for _ in range(self.kills):
            if self.stop.wait(self.rnd.uniform(0.4, 1.2)):
                return
            workers = self.workers()
            if workers:
                victim = self.rnd.choice(workers)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    self.done += 1
                except ProcessLookupError:
                    pass


@pytest.mark.parametrize("seed", range(10))
def test_random_worker_kills_neither_lose_nor_duplicate_output(seed, tmp_path, local_workers):
    reference = rs.sinks.collect()
    rs.run(windowed(reference, seed), backend="inline")
    out = rs.sinks.collect()
    killer = Killer(seed, kills=3, workers=local_workers)
    killer.start()
    try:
        result = rs.run(windowed(out, seed, rate=RATE), parallelism=2,
                        checkpoint_interval="200ms", checkpoint_dir=str(tmp_path / "chk"),
                        restart=RestartPolicy(attempts=20, backoff_s=0.05))
    finally:
        killer.stop.set()
        killer.join()
    assert killer.done >= 1 and result.restarts >= 1
    assert rows(out) == rows(reference)
    assert local_workers() == []


def test_a_poison_record_is_dead_lettered_exactly_once_across_crashes(tmp_path, local_workers):
    reference, ref_dead = rs.sinks.collect(), rs.sinks.collect()
    rs.run(windowed(reference, 3, dead=ref_dead), backend="inline")
    assert ref_dead.rows >= 1
    out, dead = rs.sinks.collect(), rs.sinks.collect()
    killer = Killer(11, kills=2, workers=local_workers)
    killer.start()
    try:
        result = rs.run(windowed(out, 3, rate=RATE, dead=dead), parallelism=2,
                        checkpoint_interval="200ms", checkpoint_dir=str(tmp_path / "chk"),
                        restart=RestartPolicy(attempts=20, backoff_s=0.05))
    finally:
        killer.stop.set()
        killer.join()
    assert result.restarts >= 1
    assert rows(dead) == rows(ref_dead)
    assert rows(out) == rows(reference)


def test_without_checkpoints_a_restart_replays_from_the_start_exactly_once(tmp_path):
    reference = rs.sinks.collect()
    rs.run(windowed(reference, 5), backend="inline")
    out = rs.sinks.collect()
    flow = windowed(out, 5, fail_once_flag=str(tmp_path / "failed-once"))
    result = rs.run(flow, parallelism=2, restart=RestartPolicy(attempts=1, backoff_s=0))
    assert result.restarts == 1
    assert rows(out) == rows(reference)
