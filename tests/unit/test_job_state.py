"""The job lifecycle state machine: finishing, failing, restarting, committing."""

import pytest

from rheostat.backends.base import (
    FinalCommitted,
    MetricsReport,
    StopWorker,
    TaskFailed,
    TaskFinished,
    WorkerDied,
)
from rheostat.control.job import JobStateMachine, Restart
from rheostat.protocol import TaskMetrics


def test_finishes_when_every_task_finished():
    job = JobStateMachine(["a#0", "a#1"], workers=2)
    assert job.handle(TaskFinished("a#0")) == []
    assert job.handle(TaskFinished("a#1")) == [StopWorker()]
    assert job.state == "finished" and job.is_final


def test_failure_without_restarts_fails_the_job():
    job = JobStateMachine(["a#0"], workers=1)
    error = ValueError("boom")
    assert job.handle(TaskFailed("a#0", error)) == [StopWorker()]
    assert job.state == "failed" and job.error is error and job.failed_task == "a#0"


def test_failures_restart_until_the_attempts_are_spent():
    job = JobStateMachine(["a#0"], workers=1, restart_attempts=2)
    (cmd,) = job.handle(WorkerDied(0, -9))
    assert isinstance(cmd, Restart) and cmd.attempt == 1 and "exit code -9" in cmd.reason
    assert job.state == "restarting"
    assert job.handle(TaskFinished("a#0")) == []  # events of the dead run are ignored
    job.restarted()
    assert job.state == "running" and job.finished_tasks == set()
    assert isinstance(job.handle(TaskFailed("a#0", RuntimeError("x")))[0], Restart)
    job.restarted()
    assert job.handle(TaskFailed("a#0", RuntimeError("third"))) == [StopWorker()]
    assert job.state == "failed" and job.restarts == 2


def test_with_checkpoints_the_job_ends_once_every_worker_committed_the_final_one():
    job = JobStateMachine(["a#0", "b#0"], workers=2, restart_attempts=1, checkpointing=True)
    job.handle(TaskFinished("a#0"))
    assert job.handle(TaskFinished("b#0")) == [] and job.state == "committing"
    assert job.handle(FinalCommitted(0)) == []
    # a worker dying before it committed restarts the job (from the final checkpoint)
    assert isinstance(job.handle(WorkerDied(1, -9))[0], Restart)
    job.restarted()
    job.handle(TaskFinished("a#0"))
    job.handle(TaskFinished("b#0"))
    job.handle(FinalCommitted(0))
    assert job.handle(FinalCommitted(1)) == [StopWorker()] and job.state == "finished"


def test_metrics_are_kept_even_after_the_end_and_illegal_moves_are_refused():
    job = JobStateMachine(["a#0"], workers=1)
    job.handle(TaskFinished("a#0"))
    job.handle(MetricsReport(0, {"a#0": TaskMetrics(rows_in=7)}))
    assert job.metrics["a#0"].rows_in == 7
    with pytest.raises(RuntimeError, match="illegal"):
        job.restarted()
    assert job.cancel() == [] and job.fail(RuntimeError("late")) == []
