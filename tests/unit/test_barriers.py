"""Barrier alignment inside one task, driven by hand through local channels."""

import pyarrow as pa

from rheostat.plan.logical import REBALANCE, Input, MapStep, Port, SinkStep, SourceStep
from rheostat.plan.physical import lower
from rheostat.runtime.channels import LocalChannel
from rheostat.runtime.messages import Barrier, Batch, EndOfStream
from rheostat.runtime.task import Task


def two_input_task(at_least_once=False):
    steps = (
        SourceStep("a", ()), SourceStep("b", ()),
        MapStep("m", (Input(Port("a"), REBALANCE), Input(Port("b"), REBALANCE)),
                fn=lambda b: b, mode="map_batches", at_least_once=at_least_once, parallelism=1),
        # chained into the same task: it must declare it too, or the task aligns
        SinkStep("out", (Input(Port("m")),), parallelism=1, at_least_once=at_least_once),
    )
    plan = lower(steps, parallelism=1)
    channels = {c.channel_id: LocalChannel() for c in plan.channels}
    task = Task(plan, "m#0", channels, channels, checkpointing=True)
    ins = {c.edge.src_step: channels[c.channel_id] for c in plan.inputs_of("m#0")}
    return task, ins


def batch(x):
    return Batch(pa.record_batch({"x": [x]}))


def test_an_input_that_delivered_the_barrier_is_held_back_until_all_have():
    task, ins = two_input_task()
    ins["a"].send(batch(1))
    ins["a"].send(Barrier(7))
    ins["a"].send(batch(2))  # after the barrier: must wait for the snapshot
    ins["b"].send(batch(10))
    task.step(budget=10)
    assert task.metrics.rows_in == 2 and task.snapshots == []
    ins["b"].send(Barrier(7))
    task.step(budget=10)
    (snap,) = task.snapshots
    assert snap.checkpoint_id == 7
    assert task.metrics.rows_in == 3  # row 2 only after the snapshot


def test_an_ended_input_counts_as_aligned():
    task, ins = two_input_task()
    ins["b"].send(EndOfStream())
    ins["a"].send(Barrier(3))
    task.step(budget=10)
    assert [s.checkpoint_id for s in task.snapshots] == [3]


def test_at_least_once_steps_do_not_hold_inputs_back():
    task, ins = two_input_task(at_least_once=True)
    ins["a"].send(Barrier(7))
    ins["a"].send(batch(2))
    task.step(budget=10)
    assert task.metrics.rows_in == 1 and task.snapshots == []  # processed before the snapshot
    ins["b"].send(Barrier(7))
    task.step(budget=10)
    assert [s.checkpoint_id for s in task.snapshots] == [7]


def test_a_finished_task_commits_its_final_snapshot_when_a_checkpoint_holding_it_completes():
    from rheostat import sinks
    from rheostat.runtime.host import TaskHost
    from rheostat.runtime.messages import FINAL_CHECKPOINT

    out = sinks.collect()
    steps = (SourceStep("a", ()),
             SinkStep("out", (Input(Port("a"), REBALANCE),), sink=out, parallelism=1))
    plan = lower(steps, parallelism=1)
    channels = {c.channel_id: LocalChannel() for c in plan.channels}
    sent = []
    host = TaskHost(plan, ["out#0"], channels, channels,
                    lambda step, batch, key=None: sent.append(batch), checkpointing=True)
    (ch,) = [channels[c.channel_id] for c in plan.inputs_of("out#0")]
    ch.send(batch(1))
    ch.send(EndOfStream())
    host.run_round()
    (task,) = host.tasks
    assert task.finished and [s.checkpoint_id for s in task.snapshots] == [FINAL_CHECKPOINT]
    host.checkpoint_complete(4)  # a checkpoint without its final snapshot: nothing yet
    assert sent == []
    host.checkpoint_complete(5, finals=("out#0",))
    assert [b.num_rows for b in sent] == [1]
    host.checkpoint_complete(FINAL_CHECKPOINT)  # the job's end: committed once
    assert [b.num_rows for b in sent] == [1]
