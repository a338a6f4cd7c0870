"""The control plane's brain driven directly: events in, actions out, no processes.

Each test plays the workers' side by hand (acks, parts done, deaths) at the exact point
that matters, and checks the actions that come back and ``validate()`` after each input.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import rheostat as rs
from rheostat.control.plane import (
    AbortCheckpoint,
    CheckpointWriteFailed,
    CheckpointWritten,
    ControlPlane,
    Deliver,
    JobRestarted,
    Record,
    Reply,
    RestartJob,
    Send,
    WriteCheckpoint,
)
from rheostat.plan.physical import lower
from rheostat.plan.reconfig import ReconfigError
from rheostat.protocol import (
    CheckpointAck,
    CheckpointFailed,
    CompleteCheckpoint,
    PartDone,
    Reconfigure,
    SinkData,
    StopWorker,
    TaskFinished,
    TaskReconfigured,
    TriggerCheckpoint,
    WorkerDied,
)

STEP = "count"


def plane(parallelism: int = 2, workers: int = 2, checkpoints: bool = True,
          restarts: int = 3) -> ControlPlane:
    flow = rs.Flow("plane")
    (flow.source("n", rs.testing.rows([{"k": i % 7} for i in range(100)]))
     .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name=STEP)
     .sink("out", rs.sinks.null()))
    return ControlPlane(lower(flow.steps, parallelism, flow_name=flow.name), workers,
                        checkpoint_interval_s=1.0 if checkpoints else None,
                        first_checkpoint_id=1 if checkpoints else None,
                        restart_attempts=restarts)


class Driver:
    """Feeds the brain and answers the actions whose outcome it waits for, the way the
    controller does (a checkpoint write succeeds, a restart comes back running)."""

    def __init__(self, brain: ControlPlane, fail_writes: bool = False) -> None:
        self.brain, self.now, self.fail_writes = brain, 0.0, fail_writes
        self.log: list[Any] = []
        self.tick(0.0)  # the job starts: checkpoints are due one interval from now

    def feed(self, event: Any) -> list[Any]:
        return self._logged(self._run(self.brain.handle(event, self.now)))

    def tick(self, dt: float = 0.0) -> list[Any]:
        self.now += dt
        return self._logged(self._run(self.brain.tick(self.now)))

    def _logged(self, actions: list[Any]) -> list[Any]:
        self.brain.validate()
        self.log += actions
        return actions

    def _run(self, actions: list[Any]) -> list[Any]:
        out = []
        for a in actions:
            out.append(a)
            outcome = None
            if isinstance(a, WriteCheckpoint):
                outcome = (CheckpointWriteFailed(a.done.checkpoint_id, "disk full")
                           if self.fail_writes else CheckpointWritten(a.done, a.done.parts))
            elif isinstance(a, RestartJob):
                outcome = JobRestarted()
            if outcome is not None:
                out += self._run(self.brain.handle(outcome, self.now))
        return out


def sent(actions: list[Any], kind: type) -> list[Any]:
    return [a.command for a in actions if isinstance(a, Send) and isinstance(a.command, kind)]


def records(actions: list[Any], what: str) -> list[tuple[Any, ...]]:
    return [a.args for a in actions if isinstance(a, Record) and a.what == what]


def checkpoint(d: Driver, tasks: list[str] | None = None) -> int:
    """Acknowledge the checkpoint in flight, or the next one triggered, from ``tasks``
    (default: every task it waits for)."""
    if d.brain.checkpoints.in_flight is not None:
        cid = d.brain.checkpoints.in_flight.checkpoint_id
    else:
        triggers = sent(d.tick(1.0), TriggerCheckpoint)
        assert triggers, "a checkpoint was due"
        cid = triggers[0].checkpoint_id
    for t in d.brain.checkpoints.task_ids if tasks is None else tasks:
        d.feed(CheckpointAck(t, cid, (f"{t}/{cid}",)))
    return cid


def finish_stage(d: Driver) -> list[Any]:
    """Every task each stage in flight waits for reports its part done, stage after
    stage (a migration runs in stages of at most 512 key groups), until none is left."""
    out: list[Any] = []
    while (f := d.brain.reconfigs.in_flight) is not None:
        for t in sorted(f.expected):
            out += d.feed(PartDone(TaskReconfigured(f.epoch, t)))
    return out


def test_a_checkpoint_is_triggered_on_every_worker_and_committed_once_all_tasks_ack():
    d = Driver(plane())
    assert sent(d.tick(0.5), TriggerCheckpoint) == []  # the first is one interval in
    triggers = d.tick(0.6)
    assert [a.worker for a in triggers if isinstance(a, Send)] == [0, 1]
    tasks = d.brain.checkpoints.task_ids
    for t in tasks[:-1]:
        assert d.feed(CheckpointAck(t, 1, (t,))) == []
    out = d.feed(CheckpointAck(tasks[-1], 1, (tasks[-1],)))
    write = [a for a in out if isinstance(a, WriteCheckpoint)]
    assert write[0].done.parts == tuple(tasks)
    assert write[0].metadata["parallelism"]["n"] == 2
    assert sent(out, CompleteCheckpoint) == [CompleteCheckpoint(1)] * 2
    assert records(out, "checkpoint_done") == [(1, "completed", len(tasks), 0)]


def test_a_failed_manifest_write_aborts_the_checkpoint_and_too_many_fail_the_job():
    brain = plane()
    brain.checkpoints.tolerable_failures = 1
    d = Driver(brain, fail_writes=True)
    out = []
    checkpoint(d)
    out += d.log
    assert [a.checkpoint_id for a in out if isinstance(a, AbortCheckpoint)] == [1]
    assert sent(out, CompleteCheckpoint) == []  # nothing commits a checkpoint that failed
    assert brain.job.state == "running"
    checkpoint(d)
    assert brain.job.state == "failed"
    assert "2 checkpoints failed in a row" in str(brain.job.error)


def test_a_reconfiguration_waits_for_the_checkpoint_in_flight_and_none_starts_during_it():
    d = Driver(plane())
    sent(d.tick(1.0), TriggerCheckpoint)
    reply = d.brain.submit([rs.Rescale(STEP, 3)])
    assert sent(d.tick(0.1), Reconfigure) == []  # checkpoint 1 is in flight
    for t in d.brain.checkpoints.task_ids:
        d.feed(CheckpointAck(t, 1, ()))
    stage = sent(d.tick(0.0), Reconfigure)
    assert len(stage) == 2  # to both workers
    assert sent(d.tick(5.0), TriggerCheckpoint) == []  # none while the stage runs
    out = finish_stage(d)
    assert [a.result["status"] for a in out if isinstance(a, Reply)] == ["done"]
    assert reply.done() is False  # the shell settles the future, not the brain
    assert d.brain.plan.chain_of(STEP).parallelism == 3
    assert sent(d.tick(0.0), TriggerCheckpoint), "the new configuration's first checkpoint"


@pytest.mark.parametrize("when", ["queued", "applying", "half_reported"])
def test_a_worker_death_during_a_rescale_restarts_on_the_old_plan_and_fails_the_request(when):
    d = Driver(plane())
    checkpoint(d)
    old = d.brain.plan
    d.brain.submit([rs.Rescale(STEP, 4)])
    if when != "queued":
        d.tick(0.0)
    if when == "half_reported":
        f = d.brain.reconfigs.in_flight
        d.feed(PartDone(TaskReconfigured(f.epoch, sorted(f.expected)[0])))
    out = d.feed(WorkerDied(1, -9))
    restart = [a for a in out if isinstance(a, RestartJob)]
    assert len(restart) == 1 and restart[0].plan is old and restart[0].abort is None
    assert d.brain.job.state == "running" and d.brain.job.restarts == 1
    failed = [a for a in out if isinstance(a, Reply)]
    if when == "queued":
        assert failed == []  # it starts after the restart, on the restored job
        assert sent(d.tick(0.0), Reconfigure)
    else:
        assert "restarted" in str(failed[0].error)
        assert d.brain.reconfigs.in_flight is None


def test_events_of_workers_a_restart_replaced_are_ignored_but_their_sink_data_is_not():
    d = Driver(plane())
    before = d.brain.incarnation
    d.feed(WorkerDied(0, -9))
    assert d.brain.handle(TaskFinished("n#0"), d.now, incarnation=before) == []
    assert "n#0" not in d.brain.job.finished_tasks
    data = SinkData("out", pa.record_batch({"x": [1]}), key=("out", 1))
    assert d.brain.handle(data, d.now, incarnation=before) == [Deliver(data)]
    assert d.brain.handle(data, d.now) == []  # a committed transaction is delivered once


def test_a_checkpoint_in_flight_at_a_restart_is_aborted_there():
    d = Driver(plane())
    sent(d.tick(1.0), TriggerCheckpoint)
    out = d.feed(WorkerDied(0, -9))
    assert [a.abort for a in out if isinstance(a, RestartJob)] == [1]
    assert d.brain.checkpoints.in_flight is None


def test_a_retired_index_comes_back_only_after_two_checkpoints_hold_its_final_state():
    d = Driver(plane())
    d.brain.submit([rs.Rescale(STEP, 1)])
    d.tick(0.0)
    finish_stage(d)
    assert d.brain.retired == {f"{STEP}#1": 2}
    d.feed(TaskFinished(f"{STEP}#1"))  # the retired task ends
    d.brain.submit([rs.Rescale(STEP, 2)])
    assert sent(d.tick(0.0), Reconfigure) == []  # count#1 may not be reused yet
    checkpoint(d)
    assert sent(d.tick(0.0), Reconfigure) == []
    checkpoint(d)
    assert d.brain.retired == {}
    assert sent(d.tick(0.0), Reconfigure)
    finish_stage(d)
    assert f"{STEP}#1" in d.brain.plan.task_ids


def test_a_finished_retired_task_commits_with_the_checkpoint_holding_its_final_state():
    d = Driver(plane())
    d.brain.submit([rs.Rescale(STEP, 1)])
    d.tick(0.0)
    finish_stage(d)
    gone = f"{STEP}#1"
    d.feed(CheckpointAck(gone, rs.runtime.messages.FINAL_CHECKPOINT, (), {"p": b"x"}))
    d.feed(TaskFinished(gone))
    live = [t for t in d.brain.checkpoints.task_ids if t != gone]
    checkpoint(d, live)  # the retired task's final snapshot stands for it
    completes = sent(d.log, CompleteCheckpoint)
    assert completes[-1].finals == (gone,)


def test_refused_requests_are_recorded_and_answered_and_the_job_runs_on():
    d = Driver(plane())
    d.brain.submit([rs.Rescale("nope", 3)])
    out = d.tick(0.0)
    assert [r[1] for r in records(out, "reconfig_done")] == ["refused"]
    assert isinstance(next(a for a in out if isinstance(a, Reply)).error, ReconfigError)
    assert d.brain.job.state == "running"


def test_the_job_ends_after_every_task_finished_and_every_worker_committed_the_last():
    from rheostat.protocol import FinalCommitted

    d = Driver(plane())
    tasks = list(d.brain.job.task_ids)
    for t in tasks:
        d.feed(CheckpointAck(t, rs.runtime.messages.FINAL_CHECKPOINT, (), {t: b""}))
    out = []
    for t in tasks:
        out += d.feed(TaskFinished(t))
    assert d.brain.job.state == "committing"
    final = [a for a in out if isinstance(a, WriteCheckpoint)]
    assert final[0].done.final and set(final[0].done.finals) == set(tasks)
    d.feed(FinalCommitted(0))
    out = d.feed(FinalCommitted(1))
    assert d.brain.job.state == "finished"
    assert sent(out, StopWorker) == [StopWorker()] * 2


def test_a_task_reporting_a_failed_checkpoint_counts_once():
    d = Driver(plane())
    sent(d.tick(1.0), TriggerCheckpoint)
    out = d.feed(CheckpointFailed("n#0", 1, "no space"))
    out += d.feed(CheckpointFailed("n#1", 1, "no space"))
    assert [a.checkpoint_id for a in out if isinstance(a, AbortCheckpoint)] == [1]
    assert d.brain.checkpoints.consecutive_failures == 1


def elastic_plane() -> ControlPlane:
    brain = plane(checkpoints=False)
    brain.elastic = True
    return brain


def test_on_an_elastic_backend_added_tasks_wait_for_their_new_workers():
    from rheostat.control.plane import AddWorkers, PollWorkers, WorkersPolled

    d = Driver(elastic_plane())
    d.brain.submit([rs.Rescale(STEP, 3)])
    out = d.tick(0.0)
    grow = [a for a in out if isinstance(a, AddWorkers)]
    assert len(grow) == 1 and grow[0].workers == [2]  # ids are never reused
    assert sent(out, Reconfigure) == []
    assert [a.workers for a in d.tick(0.1) if isinstance(a, PollWorkers)] == [[2]]
    d.feed(WorkersPolled(False))  # still starting: the job runs on
    assert d.brain.reconfigs.in_flight is None
    out = d.feed(WorkersPolled(True))
    assert len(sent(out, Reconfigure)) == 3  # workers 0, 1 and the new 2
    assert d.brain.worker_ids == [0, 1, 2]
    finish_stage(d)
    assert d.brain.placement[f"{STEP}#2"] == 2


def test_workers_that_cannot_start_refuse_the_request_and_the_job_runs_on():
    from rheostat.control.plane import WorkersPolled

    d = Driver(elastic_plane())
    d.brain.submit([rs.Rescale(STEP, 3)])
    d.tick(0.0)
    out = d.feed(WorkersPolled(False, RuntimeError("the cluster has no room")))
    replies = [a for a in out if isinstance(a, Reply)]
    assert "no room" in str(replies[0].error)
    assert records(out, "reconfig_done")[0][1] == "refused"
    assert d.brain.growing is None and d.brain.worker_ids == [0, 1]
    assert d.brain.job.state == "running"


def test_a_worker_left_without_tasks_is_released_once_its_retired_task_ended():
    from rheostat.control.plane import ReleaseWorkers, WorkersPolled

    brain = elastic_plane()
    d = Driver(brain)
    brain.submit([rs.Rescale(STEP, 3)])
    d.tick(0.0)
    d.feed(WorkersPolled(True))
    finish_stage(d)  # count#2 runs on the new worker 2
    brain.submit([rs.Rescale(STEP, 2)])
    d.tick(0.0)
    finish_stage(d)  # count#2 retires, still on worker 2 until it ends
    assert [a for a in d.tick(0.0) if isinstance(a, ReleaseWorkers)] == []
    d.feed(TaskFinished(f"{STEP}#2"))
    assert [a.workers for a in d.tick(0.0) if isinstance(a, ReleaseWorkers)] == [[2]]
    assert brain.worker_ids == [0, 1] and brain.retired == {}


def test_the_final_checkpoint_waits_for_a_retired_task_that_has_not_ended_yet():
    from rheostat.protocol import FinalCommitted
    from rheostat.runtime.messages import FINAL_CHECKPOINT

    d = Driver(plane())
    d.brain.submit([rs.Rescale(STEP, 1)])
    d.tick(0.0)
    finish_stage(d)
    gone = f"{STEP}#1"
    out = []
    for t in d.brain.job.task_ids:  # every running task ends; the retired one lags
        d.feed(CheckpointAck(t, FINAL_CHECKPOINT, (), {t: b""}))
        out += d.feed(TaskFinished(t))
    assert d.brain.job.state == "committing"
    assert [a for a in out if isinstance(a, WriteCheckpoint)] == []
    out = d.feed(CheckpointAck(gone, FINAL_CHECKPOINT, (), {gone: b"last"}))
    final = [a.done for a in out if isinstance(a, WriteCheckpoint)]
    assert len(final) == 1 and final[0].final and gone in final[0].finals
    assert final[0].inline[gone] == b"last"
    for w in (0, 1):
        d.feed(FinalCommitted(w))
    assert d.brain.job.state == "finished"


def test_a_restart_that_finds_no_checkpoint_it_may_restore_fails_the_job():
    from rheostat.control.plane import RestoreFailed
    from rheostat.runtime.checkpoint.errors import UnauthenticatedCheckpointError

    brain = plane()
    brain.handle(WorkerDied(0, -9), 0.0)  # the shell now restarts, and finds ...
    error = UnauthenticatedCheckpointError("checkpoint 3", "it was signed with another secret")
    out = brain.handle(RestoreFailed(error), 0.0)
    assert brain.job.state == "failed" and brain.job.error is error
    assert [a for a in out if isinstance(a, Send)] == []  # its workers are stopped already
    assert records(out, "job_state") == [("failed", error)]
