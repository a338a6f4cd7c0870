"""``rs.testing.script``: sentinels that end, crash, pause and mark a flow's input, used
with SteppedJob to put a change at an exact row."""

import pickle

import pytest

import rheostat as rs
from rheostat.testing import ABORT, END, Mark, Pause, SteppedJob, script


def counting_flow(src, out):
    flow = rs.Flow("scripted")
    (flow.source("n", src).key_by("k")
     .process(rs.stateful_map(lambda s, r: ((s or 0) + 1, {"k": r["k"], "seen": (s or 0) + 1})),
              name="count")
     .sink("out", out))
    return flow


def rows(lo, hi):
    return [{"k": i % 3, "x": i} for i in range(lo, hi)]


def test_end_stops_the_input_there():
    out = rs.sinks.collect()
    rs.run(counting_flow(script([*rows(0, 5), END, *rows(5, 9)]), out), backend="inline")
    assert len(out) == 5


def test_a_mark_lets_a_test_rescale_at_an_exact_row(tmp_path):
    src = script([*rows(0, 300), Mark("rescale-here"), *rows(300, 600)])
    out = rs.sinks.collect()
    job = SteppedJob(counting_flow(src, out), parallelism=2)
    job.run_until(lambda: src.reached("rescale-here"), "the mark")
    assert not src.reached("never")
    assert job.settle(job.rescale("count", 3))["status"] == "done"
    job.finish()
    seen = sorted(r["seen"] for r in out.to_pylist() if r["k"] == 0)
    assert seen == list(range(1, 201))  # every key's count went on across the rescale


def test_abort_crashes_once_and_the_restored_job_goes_on_exactly_once(tmp_path):
    src = script([*rows(0, 200), ABORT, *rows(200, 400)])
    out = rs.sinks.collect()
    job = SteppedJob(counting_flow(src, out), parallelism=2, checkpoint_interval=0.005,
                     checkpoint_dir=str(tmp_path / "chk"))
    result = job.finish()
    assert result.restarts == 1
    assert sorted(r["seen"] for r in out.to_pylist() if r["k"] == 1) == list(range(1, 134))


def test_abort_without_a_restart_fails_the_job_naming_it():
    out = rs.sinks.collect()
    with pytest.raises(rs.JobFailed, match="ABORT at item 3"):
        rs.run(counting_flow(script([*rows(0, 3), ABORT]), out), backend="inline")


def test_pause_returns_nothing_for_a_while_then_goes_on():
    src = script([{"x": 1}, Pause(3), {"x": 2}])
    reader = src.open(0)
    assert [reader.read().num_rows for _ in range(5)] == [1, 0, 0, 0, 1]
    assert reader.read() is None and reader.position() == 3


def test_positions_resume_exactly_and_copies_share_the_marks():
    src = script([{"x": i} for i in range(4)] + [Mark("m")], splits=2)
    copy = pickle.loads(pickle.dumps(src))  # a worker's copy
    reader = copy.open(1, position=1)  # split 1 reads items 1, 3: resume after item 1
    assert reader.read().to_pylist() == [{"x": 3}] and reader.read() is None
    zero = copy.open(0, position=2)
    assert zero.read().num_rows == 0 and src.reached("m")  # item 4, the mark


def test_bad_items_are_refused_with_what_to_give():
    with pytest.raises(TypeError, match="give dicts"):
        script([{"x": 1}, 42])
    with pytest.raises(ValueError, match="a mark's name"):
        Mark("no spaces")
