"""The controller's state as SQL tables (SQLite), queryable while the job runs.

Tables: ``jobs``, ``steps``, ``tasks``, ``key_groups`` (which task owns each key group of
each keyed step), ``checkpoints``, ``restarts`` and ``metrics`` (one row per task per
report). The controller is the only writer; readers in other processes open the same
file (WAL mode lets them read while it writes).

>>> from rheostat.plan.logical import Input, Port, SinkStep, SourceStep
>>> from rheostat.plan.physical import lower
>>> tables = JobTables()
>>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=2)
>>> tables.record_plan(plan, {"s#0": 0, "s#1": 1})
>>> tables.query("select task_id, worker from tasks order by task_id").to_pylist()
[{'task_id': 's#0', 'worker': 0}, {'task_id': 's#1', 'worker': 1}]
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pyarrow as pa

from rheostat.plan.physical import PhysicalPlan
from rheostat.protocol import TaskMetrics

SCHEMA = """
create table if not exists jobs (
    job text primary key, flow text, state text, started_at real, ended_at real,
    restarts integer default 0, error text);
create table if not exists steps (
    job text, step_id text, kind text, parallelism integer, chain_id text,
    keyed integer);
create table if not exists tasks (
    job text, task_id text, chain_id text, task_index integer, worker integer,
    steps text);
create table if not exists key_groups (
    job text, step_id text, key_group integer, task_index integer);
create table if not exists checkpoints (
    job text, checkpoint_id integer, state text, triggered_at real, completed_at real,
    parts integer, bytes integer, reason text);
create table if not exists restarts (
    job text, attempt integer, at real, reason text, restored_checkpoint integer);
create table if not exists reconfigurations (
    job text, reconfig_id integer, request text, state text, requested_at real,
    started_at real, finished_at real, duration_ms real, stages integer,
    moved_key_groups integer, tasks_added integer, tasks_removed integer, reason text);
create table if not exists metrics (
    job text, task_id text, at real, rows_in integer, rows_out integer,
    batches_in integer, busy_s real, backpressure_s real, watermark integer);
"""


def default_path(flow_name: str, root: str | os.PathLike[str] = ".rheostat") -> Path:
    """Where a job's tables live unless told otherwise: ``.rheostat/jobs/<flow>.sqlite``."""
    return Path(root) / "jobs" / f"{flow_name}.sqlite"


class JobTables:
    """The tables of one job, in a file or in memory (``path=None``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, job: str = "job") -> None:
        self.job = job
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)  # a new run of the job starts new tables
        self._db = sqlite3.connect(
            ":memory:" if self.path is None else str(self.path), check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock, self._db:
            if self.path is not None:
                self._db.execute("pragma journal_mode=wal")
            self._db.executescript(SCHEMA)

    # --- writes (the controller) ------------------------------------------------------

    def record_plan(self, plan: PhysicalPlan, placement: dict[str, int]) -> None:
        """The job, its steps, tasks and key-group owners, as planned."""
        with self._lock, self._db:
            self._db.execute("delete from jobs where job = ?", (self.job,))
            self._db.execute(
                "insert into jobs (job, flow, state, started_at) values (?, ?, 'running', ?)",
                (self.job, plan.flow_name, time.time()),
            )
            self._layout(plan, placement)

    def plan_changed(self, plan: PhysicalPlan, placement: dict[str, int]) -> None:
        """Steps, tasks and key-group owners after a reconfiguration."""
        with self._lock, self._db:
            self._layout(plan, placement)

    def _layout(self, plan: PhysicalPlan, placement: dict[str, int]) -> None:
        chain_of = {sid: c for c in plan.chains for sid in c.steps}
        for table in ("steps", "tasks", "key_groups"):
            self._db.execute(f"delete from {table} where job = ?", (self.job,))
        self._db.executemany("insert into steps values (?, ?, ?, ?, ?, ?)", [
            (self.job, sid, plan.steps[sid].kind, plan.parallelism[sid],
             chain_of[sid].chain_id, int(sid in plan.key_group_owners))
            for sid in plan.order
        ])
        self._db.executemany("insert into tasks values (?, ?, ?, ?, ?, ?)", [
            (self.job, c.task_id(i), c.chain_id, i, placement.get(c.task_id(i)),
             ",".join(c.steps))
            for c in plan.chains for i in range(c.parallelism)
        ])
        self._db.executemany("insert into key_groups values (?, ?, ?, ?)", [
            (self.job, sid, group, owner)
            for sid, owners in plan.key_group_owners.items()
            for group, owner in enumerate(owners)
        ])

    def job_state(self, state: str, error: BaseException | None = None) -> None:
        ended = time.time() if state in ("finished", "failed", "cancelled") else None
        with self._lock, self._db:
            self._db.execute(
                "update jobs set state = ?, ended_at = coalesce(?, ended_at), "
                "error = coalesce(?, error) where job = ?",
                (state, ended, None if error is None else str(error).splitlines()[0],
                 self.job),
            )

    def checkpoint_triggered(self, checkpoint_id: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "insert into checkpoints (job, checkpoint_id, state, triggered_at) "
                "values (?, ?, 'in progress', ?)", (self.job, checkpoint_id, time.time()),
            )

    def checkpoint_done(
        self, checkpoint_id: int, state: str, parts: int = 0, size: int = 0,
        reason: str | None = None,
    ) -> None:
        now = time.time()
        with self._lock, self._db:
            updated = self._db.execute(
                "update checkpoints set state = ?, completed_at = ?, parts = ?, bytes = ?, "
                "reason = ? where job = ? and checkpoint_id = ?",
                (state, now, parts, size, reason, self.job, checkpoint_id),
            ).rowcount
            if not updated:  # the final checkpoint is never triggered: it is just taken
                self._db.execute(
                    "insert into checkpoints values (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.job, checkpoint_id, state, now, now, parts, size, reason),
                )

    def reconfig_requested(self, reconfig_id: int, request: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "insert into reconfigurations (job, reconfig_id, request, state, requested_at) "
                "values (?, ?, ?, 'requested', ?)", (self.job, reconfig_id, request, time.time()))

    def reconfig_started(self, reconfig_id: int, stages: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "update reconfigurations set state = 'running', started_at = ?, stages = ?, "
                "moved_key_groups = 0, tasks_added = 0, tasks_removed = 0 "
                "where job = ? and reconfig_id = ?",
                (time.time(), stages, self.job, reconfig_id))

    def reconfig_progress(self, reconfig_id: int, moved: int, added: int, removed: int) -> None:
        """A stage is done: add what it moved, added and retired."""
        with self._lock, self._db:
            self._db.execute(
                "update reconfigurations set moved_key_groups = moved_key_groups + ?, "
                "tasks_added = tasks_added + ?, tasks_removed = tasks_removed + ? "
                "where job = ? and reconfig_id = ?",
                (moved, added, removed, self.job, reconfig_id))

    def reconfig_done(self, reconfig_id: int, state: str, duration_s: float | None = None,
                      reason: str | None = None) -> None:
        """``state``: done, refused (never started) or failed (rolled back)."""
        with self._lock, self._db:
            self._db.execute(
                "update reconfigurations set state = ?, finished_at = ?, duration_ms = ?, "
                "reason = ? where job = ? and reconfig_id = ?",
                (state, time.time(), None if duration_s is None else duration_s * 1000,
                 reason, self.job, reconfig_id))

    def restarted(self, attempt: int, reason: str, restored: int | None) -> None:
        with self._lock, self._db:
            self._db.execute("insert into restarts values (?, ?, ?, ?, ?)",
                             (self.job, attempt, time.time(), reason, restored))
            self._db.execute("update jobs set restarts = ? where job = ?", (attempt, self.job))

    def metrics(self, tasks: dict[str, TaskMetrics]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany("insert into metrics values (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (self.job, t, now, m.rows_in, m.rows_out, m.batches_in, m.busy_s,
                 m.backpressure_s, m.watermark)
                for t, m in tasks.items()
            ])

    # --- reads ------------------------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> pa.Table:
        """Run a read-only query; the result as an Arrow table."""
        with self._lock:
            return query_connection(self._db, sql, params)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def query_connection(db: sqlite3.Connection, sql: str, params: tuple = ()) -> pa.Table:
    """``sql`` on ``db`` (read-only: anything but a query is refused) as an Arrow table."""
    if not sql.lstrip().lower().startswith(("select", "with", "values", "pragma table_info")):
        raise ValueError("the job tables are read-only: only queries (select ...) are allowed")
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description or ()]
    rows = cursor.fetchall()
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def query_file(path: str | os.PathLike[str], sql: str) -> pa.Table:
    """Query a job's tables file from another process (read-only)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no job tables at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return query_connection(db, sql)
    finally:
        db.close()
