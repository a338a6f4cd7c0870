"""The checkpoint coordinator, driven by constructed events: no processes."""

from rheostat.control.checkpoints import CheckpointCoordinator
from rheostat.runtime.messages import FINAL_CHECKPOINT

TASKS = ["src#0", "src#1", "win#0"]


def test_triggers_on_the_interval_one_at_a_time():
    c = CheckpointCoordinator(TASKS, interval_s=2.0, first_id=5)
    assert c.due(0.0) is None  # the first is one interval after the start
    assert c.due(1.0) is None
    assert c.due(2.0) == 5
    assert c.due(10.0) is None  # 5 is still in flight
    for t in TASKS:
        c.on_ack(t, 5, (f"{t}-part",), {})
    assert c.completed == [5]
    assert c.due(3.0) is None and c.due(4.0) == 6


def test_completes_when_every_task_answered_with_all_parts_in_task_order():
    c = CheckpointCoordinator(TASKS, interval_s=0)
    n = c.due(0.0)
    assert c.on_ack("win#0", n, ("w",), {}) is None
    assert c.on_ack("src#1", n, ("s1",), {}) is None
    done = c.on_ack("src#0", n, ("s0",), {})
    assert done is not None and done.checkpoint_id == n
    assert done.parts == ("s0", "s1", "w") and not done.final


def test_a_finished_task_answers_with_its_final_snapshot_now_and_later():
    c = CheckpointCoordinator(TASKS, interval_s=0)
    n = c.due(0.0)
    c.on_ack("src#0", FINAL_CHECKPOINT, (), {"src#0/_task": b"done"})
    c.on_ack("src#1", n, ("s1",), {})
    done = c.on_ack("win#0", n, ("w",), {})
    assert done.inline == {"src#0/_task": b"done"} and done.parts == ("s1", "w")
    m = c.due(1.0)  # the next checkpoint carries the finished task's final state again
    c.on_ack("src#1", m, ("s1b",), {})
    assert c.on_ack("win#0", m, ("wb",), {}).inline == {"src#0/_task": b"done"}


def test_a_task_acking_before_it_finishes_keeps_its_ack():
    c = CheckpointCoordinator(["a#0", "b#0"], interval_s=0)
    n = c.due(0.0)
    c.on_ack("a#0", n, ("a",), {})
    c.on_ack("a#0", FINAL_CHECKPOINT, (), {"a#0/_task": b"final"})
    done = c.on_ack("b#0", n, ("b",), {})
    assert done.parts == ("a", "b") and done.inline == {}


def test_final_checkpoint_gathers_every_final_snapshot():
    c = CheckpointCoordinator(["a#0", "b#0"], interval_s=0, first_id=3)
    c.on_ack("a#0", FINAL_CHECKPOINT, (), {"a#0/x": b"1"})
    assert not c.all_final and c.due(0.0) == 3
    c.abort()
    c.on_ack("b#0", FINAL_CHECKPOINT, (), {"b#0/y": b"2"})
    assert c.all_final and c.due(5.0) is None  # nothing left to checkpoint but the final
    final = c.final()
    assert final.final and final.checkpoint_id == 4
    assert final.inline == {"a#0/x": b"1", "b#0/y": b"2"}


def test_acks_for_an_aborted_checkpoint_are_ignored_and_failures_are_tolerated():
    c = CheckpointCoordinator(["a#0"], interval_s=0, tolerable_failures=1)
    n = c.due(0.0)
    assert c.failed(n) is False  # first failure: tolerated
    assert c.failed(n) is None  # reported again by another task: counted once
    assert c.on_ack("a#0", n, ("late",), {}) is None and c.completed == []
    c.due(1.0)
    assert c.failed(n + 1) is True  # two in a row: more than tolerated
    m = c.due(2.0)
    c.on_ack("a#0", m, ("ok",), {})
    assert c.completed == [m]
    assert c.failed(m) is True and c.completed == []  # its manifest could not be written
    k = c.due(3.0)
    c.on_ack("a#0", k, ("ok",), {})
    c.written(k)  # durable: the run of failures ends
    assert c.consecutive_failures == 0 and c.completed == [k]


def test_timeout_and_restart():
    c = CheckpointCoordinator(["a#0"], interval_s=0, timeout_s=10)
    n = c.due(0.0)
    assert c.timed_out(5.0) is None and c.timed_out(11.0) == n
    c.on_ack("a#0", FINAL_CHECKPOINT, (), {"a#0/_task": b"x"})
    c.restart(["a#0"])
    assert c.in_flight is None and not c.all_final
    assert c.due(1.0) == n + 1  # ids never repeat


def test_a_completed_checkpoint_names_the_final_snapshots_it_holds():
    """A finished task (one a rescale retired, say) commits what its final snapshot staged
    once a checkpoint holding that snapshot is durable, not at the end of the job."""
    c = CheckpointCoordinator(["a#0", "b#0", "c#0"], interval_s=0)
    n = c.due(0.0)
    c.on_ack("a#0", n, ("a",), {})
    c.on_ack("a#0", FINAL_CHECKPOINT, (), {"a#0/x": b"final"})  # acked n before finishing
    c.on_ack("b#0", FINAL_CHECKPOINT, (), {"b#0/x": b"final"})  # finished instead of acking
    done = c.on_ack("c#0", n, ("c",), {})
    assert done.finals == ("b#0",)  # a#0's final snapshot is not in checkpoint n
    m = c.due(1.0)
    assert c.on_ack("c#0", m, ("c2",), {}).finals == ("a#0", "b#0")
    c.on_ack("c#0", FINAL_CHECKPOINT, (), {})
    assert c.final().finals == ("a#0", "b#0", "c#0")
