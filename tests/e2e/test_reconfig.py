"""Live reconfiguration on real flows: output identical to the run with no change.

A keyed windowed job gets a random sequence of reconfigurations while it runs (rescale up
and down, key-group moves, several at once); its output must equal an independent
reference computed in DuckDB. Pacing uses sleeps; nothing asserts on time.
"""

import os
import random
import signal
import time
from collections import Counter

import duckdb
import pyarrow as pa
import pytest

import rheostat as rs
from rheostat.runtime.keys import key_groups

STEP = "ev.aggregate"
N_ROWS = 120_000
RATE = 30_000  # rows/s: about 4 s of input, time for several reconfigurations


def events(n=N_ROWS, keys=300, seed=5):
    rnd = random.Random(seed)
    return [{"k": f"k{rnd.randint(0, keys)}", "v": rnd.randint(0, 100), "ts": 1_000_000 + i * 2}
            for i in range(n)]


WINDOWS = {"tumbling": rs.windows.tumbling("500ms"),
           "sliding": rs.windows.sliding(size="1s", slide="500ms")}


def windowed_flow(data, out, rate=RATE, window="tumbling", hold_end=None):
    flow = rs.Flow("reconf")
    (flow.source("ev", rs.testing.rows(data, batch_size=300, hold_end=hold_end),
                 timestamp="ts", out_of_order="10ms", rate=rate)
     .key_by("k").window(WINDOWS[window])
     .aggregate(n=rs.agg.count(), total=rs.agg.sum("v"))
     .sink("out", out))
    return flow


def reference(data, window="tumbling"):
    """(key, window end in ms, count, sum) of every window, computed by DuckDB."""
    ev = pa.Table.from_pylist(data)  # noqa: F841 - read by DuckDB
    starts = ("[ts // 500 * 500]" if window == "tumbling"
              else "[ts // 500 * 500 - 500, ts // 500 * 500]")
    size = 500 if window == "tumbling" else 1000
    return sorted(duckdb.sql(f"""
        with w as (select k, v, unnest({starts}) as ws from ev)
        select k, ws + {size} as we, count(*) as n, sum(v) as total from w group by all
    """).fetchall())


def produced(out):
    return sorted((r["k"], int(r["window_end"].timestamp() * 1000), r["n"], r["total"])
                  for r in out.to_pylist())


def assert_same_windows(got, want):
    """``got`` holds exactly the windows of ``want``; else a short account of the
    difference (a diff of two lists of 120,000 windows takes pytest minutes)."""
    have, need = Counter(got), Counter(want)
    lost, extra = need - have, have - need
    if lost or extra:
        pytest.fail(f"of {len(want)} windows {lost.total()} lost, e.g. {sorted(lost)[:5]}; "
                    f"{extra.total()} not expected, e.g. {sorted(extra)[:5]}")


def random_ops(rnd, parallelism):
    """One request: a rescale, a move, or both at once."""
    kind = rnd.choice(["rescale", "move", "both"])
    ops = []
    if kind in ("move", "both"):
        start = rnd.randrange(0, 4096 - 512)
        ops.append(rs.MoveKeyGroups(STEP, tuple(range(start, start + rnd.randint(1, 512))),
                                    rnd.randrange(parallelism)))
    if kind in ("rescale", "both"):
        parallelism = rnd.choice([p for p in (1, 2, 3, 4) if p != parallelism])
        ops.append(rs.Rescale(STEP, parallelism))
    return ops, parallelism


def wait_for_rows(job, timeout=60):
    """Pacing only (no assertion on time): until the job's tasks report input."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.rows_in for m in list(job.controller.job.metrics.values())):
            return
        time.sleep(0.02)


def reshape_while_running(job, seed, changes=5):
    wait_for_rows(job)
    rnd = random.Random(seed)
    parallelism, done = 2, []
    for _ in range(changes):
        time.sleep(rnd.uniform(0.05, 0.3))
        ops, target = random_ops(rnd, parallelism)
        try:
            answer = job.reconfigure(*ops)
        except rs.ReconfigError as exc:
            assert "ended" in str(exc) or "own no key group" in str(exc), exc
            if "ended" in str(exc):
                break
            continue
        assert answer["status"] == "done"
        parallelism = target
        done.append(answer)
    return done


@pytest.mark.parametrize("backend,seed,window", [
    ("inline", 1, "tumbling"), ("inline", 2, "sliding"), ("local", 3, "tumbling"),
    ("local", 4, "tumbling"), ("local", 5, "sliding"), ("local", 6, "sliding"),
    ("ray", 7, "tumbling"), ("ray", 8, "sliding")])
def test_random_reconfigurations_give_the_output_of_no_reconfiguration(
    backend, seed, window, use_backend
):
    data = events(seed=seed)
    out = rs.sinks.collect()
    # On Ray a rescale up starts new actors first, seconds on this machine: slower input.
    rate = RATE if backend != "ray" else RATE // 4
    gate = rs.testing.Gate()  # the input ends once the reconfigurations are done
    job = rs.start(windowed_flow(data, out, rate=rate, window=window, hold_end=gate),
                   backend=use_backend(backend), parallelism=2)
    done = reshape_while_running(job, seed)
    gate.open()
    result = job.wait()
    assert len(done) >= 3, done  # only a move to a task that owns no group is refused
    assert result.counters().get("late", 0) == 0
    assert_same_windows(produced(out), reference(data, window))
    table = result.sql("select state, moved_key_groups from reconfigurations "
                       "where state = 'done'").to_pylist()
    assert len(table) == len(done)
    owners = result.sql(f"select task_index, count(*) as n from key_groups "
                        f"where step_id = '{STEP}' group by task_index").to_pylist()
    assert sum(r["n"] for r in owners) == 4096


def test_only_rows_of_moving_key_groups_are_held_back():
    data = events(seed=9)
    out = rs.sinks.collect()
    job = rs.start(windowed_flow(data, out), backend="inline", parallelism=2)
    wait_for_rows(job)
    moved = range(0, 1024)  # half of task 0's groups go to task 1
    assert job.move_key_groups(STEP, moved, 1)["status"] == "done"
    result = job.wait()
    assert_same_windows(produced(out), reference(data))
    kg = key_groups(pa.Table.from_pylist(data), ("k",), 4096)
    rows_of_moved = int((kg < 1024).sum())
    held = result.counters().get("reconfig_held_rows", 0)
    assert held <= rows_of_moved  # rows of other key groups never wait


def tagged_flow(out, data, fn, hold_end=None):
    flow = rs.Flow("update")
    (flow.source("ev", rs.testing.rows(data, batch_size=200, hold_end=hold_end), rate=20_000)
     .map(fn, name="tag", knobs={"factor": 1})
     .sink("out", out))
    return flow


def version_one(row, factor):
    return {"i": row["i"], "version": 1, "factor": factor}


def version_two(row, factor):
    return {"i": row["i"], "version": 2, "factor": factor}


def switch_points(rows, column):
    """Rows by ``i``: the values of ``column`` in input order, collapsed into runs."""
    runs = []
    for r in sorted(rows, key=lambda r: r["i"]):
        if not runs or runs[-1] != r[column]:
            runs.append(r[column])
    return runs


@pytest.mark.parametrize("backend", ["inline", "local", "ray"])
def test_function_and_knob_updates_switch_once_with_every_row_processed_once(
    backend, use_backend
):
    data = [{"i": i} for i in range(60_000)]
    out = rs.sinks.collect()
    gate = rs.testing.Gate()  # the input ends once the updates are done
    job = rs.start(tagged_flow(out, data, version_one, hold_end=gate),
                   backend=use_backend(backend), parallelism=1)
    wait_for_rows(job)
    assert job.update_function("tag", version_two)["status"] == "done"
    time.sleep(0.2)
    assert job.set_knob("tag", "factor", 7)["status"] == "done"
    with pytest.raises(rs.ReconfigError, match="declares no knob"):
        job.set_knob("tag", "nope", 1)
    gate.open()
    job.wait()
    rows = out.to_pylist()
    assert sorted(r["i"] for r in rows) == list(range(60_000))
    assert switch_points(rows, "version") == [1, 2]
    assert switch_points(rows, "factor") == [1, 7]


def test_refused_requests_leave_the_job_running():
    data = events(n=20_000)
    out = rs.sinks.collect()
    job = rs.start(windowed_flow(data, out, rate=10_000), backend="inline", parallelism=2)
    with pytest.raises(rs.ReconfigError, match="makes its splits from the parallelism"):
        job.rescale("ev", 3)  # rows() without splits=N: one split per task
    with pytest.raises(rs.ReconfigError, match="no step"):
        job.rescale("nope", 3)
    with pytest.raises(rs.ReconfigError, match="no function"):
        job.update_function(STEP, version_two)
    result = job.wait()
    assert_same_windows(produced(out), reference(data))
    states = result.sql("select state from reconfigurations").column("state").to_pylist()
    assert states == ["refused"] * 3


def test_a_worker_killed_during_reconfigurations_loses_and_duplicates_nothing(tmp_path):
    data = events(seed=21)
    out = rs.sinks.collect()
    job = rs.start(windowed_flow(data, out), backend="local", parallelism=2,
                   checkpoint_interval="300ms", checkpoint_dir=str(tmp_path))
    wait_for_rows(job)
    pending = job.reconfigure(rs.Rescale(STEP, 4), wait=False)
    time.sleep(0.05)
    victim = job.controller.backend._procs[1]
    os.kill(victim.pid, signal.SIGKILL)
    try:
        pending.result(120)
    except rs.ReconfigError as exc:  # it was rolled back by the restart
        assert "restarted" in str(exc) or "failed" in str(exc)
    try:
        job.rescale(STEP, 3)
    except rs.ReconfigError as exc:
        assert "ended" in str(exc)
    result = job.wait()
    assert result.restarts >= 1
    assert_same_windows(produced(out), reference(data))
    states = set(result.sql("select state from reconfigurations").column("state").to_pylist())
    assert states <= {"done", "failed", "refused"}


class CountV1(rs.KeyedProcess):
    version = 1

    def process(self, key, rows, ctx):
        n = ctx.state.get(0) + len(rows)
        ctx.state.set(n)
        return [{"k": key, "n": n, "version": self.version}]


class CountV2(CountV1):
    version = 2

    def check_state(self, key, state):
        if not isinstance(state, int):
            raise TypeError(f"a count is an int, got {state!r}")


class WantsDicts(CountV1):
    version = 3

    def check_state(self, key, state):
        if not isinstance(state, dict):
            raise TypeError(f"this version keeps a dict per key, got {type(state).__name__}")


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_a_function_update_that_refuses_the_state_leaves_the_old_one_running(backend):
    data = [{"k": i % 97, "i": i} for i in range(60_000)]
    out = rs.sinks.collect()
    flow = rs.Flow("update-check")
    (flow.source("ev", rs.testing.rows(data, batch_size=200), rate=20_000)
     .key_by("k").process(CountV1(), name="count").sink("out", out))
    job = rs.start(flow, backend=backend, parallelism=2)
    wait_for_rows(job)
    with pytest.raises(rs.ReconfigError, match="this version keeps a dict"):
        job.update_function("count", WantsDicts())
    assert job.update_function("count", CountV2())["status"] == "done"
    result = job.wait()
    rows = out.to_pylist()
    assert {r["version"] for r in rows} <= {1, 2}
    totals = {}
    for r in rows:
        totals[r["k"]] = max(totals.get(r["k"], 0), r["n"])
    assert totals == {k: sum(1 for d in data if d["k"] == k) for k in range(97)}
    for k in range(97):  # each key switched once, its count carried over
        versions = [r["version"] for r in sorted(rows, key=lambda r: r["n"]) if r["k"] == k]
        assert versions == sorted(versions)
    states = result.sql("select state from reconfigurations order by reconfig_id")
    assert states.column("state").to_pylist() == ["refused", "done"]


@pytest.mark.parametrize("backend, checkpoints", [
    ("local", False), ("local", True), ("ray", False), ("ray", True)])
def test_a_task_placed_on_another_worker_and_back_keeps_the_output(
    backend, checkpoints, use_backend, tmp_path
):
    """The aggregate is chained with the sink: its open transaction moves along."""
    data = events(seed=31)
    out = rs.sinks.collect()
    options = {"checkpoint_interval": "300ms", "checkpoint_dir": str(tmp_path)} \
        if checkpoints else {}
    gate = rs.testing.Gate()  # the input ends once the placements are done
    job = rs.start(windowed_flow(data, out, rate=RATE // 2, hold_end=gate),
                   backend=use_backend(backend), parallelism=2, workers=2, **options)
    wait_for_rows(job)
    task = f"{STEP}#1"

    def worker_of(t):
        return job.sql(f"select worker from tasks where task_id = '{t}'").column(0)[0].as_py()

    with pytest.raises(rs.ReconfigError, match="no worker 7"):
        job.place(task, 7)
    assert job.place("ev#0", 1)["status"] == "done"  # a source task takes its splits along
    assert worker_of("ev#0") == 1
    assert worker_of(task) == 1
    assert job.place(task, 0)["status"] == "done"
    assert worker_of(task) == 0
    time.sleep(0.4)  # a checkpoint in between, when they are on
    assert job.place(task, 1)["status"] == "done"
    assert worker_of(task) == 1
    gate.open()
    result = job.wait()
    assert_same_windows(produced(out), reference(data))
    assert result.counters().get("late", 0) == 0
