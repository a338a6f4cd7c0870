"""The controller's state as SQL tables (SQLite), queryable while the job runs.

Tables: ``jobs``, ``steps``, ``tasks``, ``key_groups`` (which task owns each key group of
each keyed step), ``checkpoints``, ``restarts`` and ``metrics`` (one row per task per
report, kept for an hour and to 100,000 rows by default: ``metrics_keep_s``,
``metrics_keep_rows``). The controller is the only writer. Queries never share its
connection: each opens its own, read-only in SQLite itself (``mode=ro``, ``query_only``, and an
authorizer that allows reads, selects and functions only), so no statement can write,
however it is spelled, and a slow query never holds up the controller (WAL mode lets
readers read while it writes). Tables "in memory" (``path=None``) are a private
temporary file, removed with the tables, so that queries get their own connection too.

>>> from rheostat.plan.logical import Input, Port, SinkStep, SourceStep
>>> from rheostat.plan.physical import lower
>>> tables = JobTables()
>>> plan = lower((SourceStep("s", ()), SinkStep("o", (Input(Port("s")),))), parallelism=2)
>>> tables.record_plan(plan, {"s#0": 0, "s#1": 1})
>>> tables.query("select task_id, worker from tasks order by task_id").to_pylist()
[{'task_id': 's#0', 'worker': 0}, {'task_id': 's#1', 'worker': 1}]
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from rheostat.plan.physical import PhysicalPlan
from rheostat.protocol import TaskMetrics

if TYPE_CHECKING:
    from rheostat.control.autoscale import Verdict

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
create table if not exists decisions (
    job text, at real, evaluated_s real, step_id text, policy text, action text,
    parallelism integer, target_parallelism integer, ideal_parallelism integer,
    target_rate real, predicted_capacity real, model text, moved_key_groups integer,
    reason text, done text, observed_capacity real, inputs text);
create table if not exists metrics (
    job text, task_id text, at real, rows_in integer, rows_out integer,
    batches_in integer, busy_s real, backpressure_s real, watermark integer,
    queued_rows integer, backlog_rows integer);
create index if not exists metrics_by_time on metrics (job, at);
"""


def default_path(flow_name: str, root: str | os.PathLike[str] = ".rheostat") -> Path:
    """Where a job's tables live unless told otherwise: ``.rheostat/jobs/<flow>.sqlite``."""
    return Path(root) / "jobs" / f"{flow_name}.sqlite"


class JobTables:
    """The tables of one job, in a file or in memory (``path=None``).

    A file is readable by its owner only (0600, its ``-wal`` and ``-shm`` too), and the
    directories made for it are 0700; a directory that already existed keeps its mode.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, job: str = "job", *,
        metrics_keep_s: float | None = 3600.0, metrics_keep_rows: int | None = 100_000,
    ) -> None:
        if metrics_keep_s is not None and metrics_keep_s <= 0:
            raise ValueError(f"metrics_keep_s must be > 0 or None, got {metrics_keep_s}")
        if metrics_keep_rows is not None and metrics_keep_rows < 1:
            raise ValueError(f"metrics_keep_rows must be >= 1 or None, got {metrics_keep_rows}")
        self.job = job
        #: Retention of the ``metrics`` table: rows more than ``metrics_keep_s`` older than
        #: the newest go, and the oldest beyond ``metrics_keep_rows`` (``None``: no limit).
        self.metrics_keep_s = metrics_keep_s
        self.metrics_keep_rows = metrics_keep_rows
        self._metrics_rows = 0  # in the table now
        self._metrics_pruned_at: float | None = None
        self.path = None if path is None else Path(path)
        if self.path is not None:
            _make_private_dirs(self.path.parent)
            self.path.unlink(missing_ok=True)  # a new run of the job starts new tables
            _make_private_file(self.path)  # SQLite gives its -wal and -shm the same mode
            self._file = self.path
        else:  # a private directory (0700): the file, its -wal and -shm, gone with us
            self._file = Path(tempfile.mkdtemp(prefix="rheostat-tables-")) / "tables.sqlite"
        self._db = sqlite3.connect(str(self._file), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("pragma journal_mode=wal")
            if self.path is None:
                self._db.execute("pragma synchronous=off")  # nothing to keep after a crash
            self._db.executescript(SCHEMA)
        self._closer = weakref.finalize(self, _close, self._db,
                                        self._file.parent if self.path is None else None)

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

    def decision(self, verdict: Verdict) -> None:
        """One row per decision of the closed loop, "none" included; a verdict that
        follows up an earlier change fills in that row's observed capacity."""
        d = verdict.decision
        with self._lock, self._db:
            self._db.execute(
                "insert into decisions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.job, time.time(), verdict.time_s, d.step_id, d.policy, d.action,
                 d.parallelism, d.target_parallelism, d.ideal_parallelism,
                 d.target_rate_per_s, d.predicted_capacity_per_s, d.model, len(d.moves),
                 d.reason, verdict.done, None, json.dumps(dict(d.inputs))))
            if verdict.follows is not None:
                self._db.execute(
                    "update decisions set observed_capacity = ? where job = ? and "
                    "step_id = ? and evaluated_s = ? and done = 'carried out'",
                    (verdict.observed_capacity_per_s, self.job, d.step_id, verdict.follows))

    def metrics(self, tasks: dict[str, TaskMetrics], at: float | None = None) -> None:
        """One row per task of a report received at ``at`` (default: now), then the
        retention: pruned once the rows pass the limit by a tenth, or a tenth of
        ``metrics_keep_s`` after the last pruning, so the table stays within about 110%
        of its limits at the cost of one delete now and then."""
        now = time.time() if at is None else at
        with self._lock, self._db:
            self._db.executemany(
                "insert into metrics values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                    (self.job, t, now, m.rows_in, m.rows_out, m.batches_in, m.busy_s,
                     m.backpressure_s, m.watermark, m.queued_rows, m.backlog_rows)
                    for t, m in tasks.items()
                ])
            self._metrics_rows += len(tasks)
            self._prune_metrics(now)

    def _prune_metrics(self, now: float) -> None:
        keep_s, keep_rows = self.metrics_keep_s, self.metrics_keep_rows
        if self._metrics_pruned_at is None:
            self._metrics_pruned_at = now
        by_rows = keep_rows is not None and self._metrics_rows > keep_rows + keep_rows // 10
        by_age = keep_s is not None and now - self._metrics_pruned_at >= keep_s / 10
        if not (by_rows or by_age):
            return
        self._metrics_pruned_at = now
        if keep_s is not None:
            self._db.execute("delete from metrics where job = ? and at < ?",
                             (self.job, now - keep_s))
        if keep_rows is not None:
            self._db.execute(
                "delete from metrics where job = ? and rowid <= (select rowid from metrics "
                "where job = ? order by rowid desc limit 1 offset ?)",
                (self.job, self.job, keep_rows))
        self._metrics_rows = self._db.execute(
            "select count(*) from metrics where job = ?", (self.job,)).fetchone()[0]

    # --- reads ------------------------------------------------------------------------

    def query(
        self, sql: str, params: tuple = (), timeout_s: float | None = None,
        max_rows: int | None = None,
    ) -> pa.Table:
        """Run a read-only query on a connection of its own; the result as an Arrow table.

        ``timeout_s`` stops the query after that many seconds (:class:`QueryTimeout`);
        more than ``max_rows`` rows is an error. Anything but a read is refused
        (``ValueError``)."""
        if not self._closer.alive:
            raise ValueError("the job tables are closed")
        return _query_file(self._file, sql, params, timeout_s, max_rows)

    def close(self) -> None:
        with self._lock:
            self._closer()


def _make_private_dirs(directory: Path) -> None:
    """Make ``directory`` and its missing parents with mode 0700; those that exist keep
    their mode."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def _make_private_file(path: Path) -> None:
    """An empty file (an empty SQLite database) readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)


def _close(db: sqlite3.Connection, private_dir: Path | None) -> None:
    db.close()
    if private_dir is not None:
        shutil.rmtree(private_dir, ignore_errors=True)


class QueryTimeout(ValueError):
    """A query ran past its time limit and was stopped."""


#: What a read-only query may do (SQLite authorizer action codes).
_READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
#: Pragmas that only read the schema.
_READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list",
                           "index_info", "index_xinfo", "foreign_key_list"})
_ACTIONS = {getattr(sqlite3, name): name[len("SQLITE_"):].lower().replace("_", " ")
            for name in ("SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_ATTACH",
                         "SQLITE_DETACH", "SQLITE_PRAGMA", "SQLITE_TRANSACTION",
                         "SQLITE_CREATE_TABLE", "SQLITE_CREATE_INDEX", "SQLITE_CREATE_VIEW",
                         "SQLITE_CREATE_TRIGGER", "SQLITE_DROP_TABLE", "SQLITE_DROP_INDEX",
                         "SQLITE_DROP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_ALTER_TABLE",
                         "SQLITE_REINDEX", "SQLITE_ANALYZE", "SQLITE_SAVEPOINT")
            if hasattr(sqlite3, name)}
_READ_ONLY = "the job tables are read-only: only queries (select ...) are allowed"


def query_connection(
    db: sqlite3.Connection, sql: str, params: tuple = (), timeout_s: float | None = None,
    max_rows: int | None = None,
) -> pa.Table:
    """``sql`` on ``db`` as an Arrow table, refused by SQLite itself unless it only reads.

    The connection becomes read-only for good (``query_only``, an authorizer that allows
    reads, selects and functions only); open one for the purpose.
    """
    denied: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action in _READS and not (action == sqlite3.SQLITE_FUNCTION
                                     and (arg2 or "").lower() == "load_extension"):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
            return sqlite3.SQLITE_OK
        what = _ACTIONS.get(action, f"action {action}")
        if action == sqlite3.SQLITE_PRAGMA:
            what = f"{what} {arg1}"
        elif (arg1 or "").startswith("sqlite_"):  # CREATE, DROP: the schema table first
            what = "a change to the schema"
        denied.append(what)
        return sqlite3.SQLITE_DENY

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    db.execute("pragma query_only = 1")
    db.set_authorizer(authorize)
    if deadline is not None:
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        cursor = db.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows + 1)
    except sqlite3.ProgrammingError as exc:  # e.g. two statements
        raise ValueError(f"{_READ_ONLY}, one at a time ({exc})") from None
    except sqlite3.DatabaseError as exc:
        if denied:
            raise ValueError(f"{_READ_ONLY}, not {denied[0]}") from None
        if deadline is not None and time.monotonic() > deadline:
            raise QueryTimeout(f"the query ran past the time limit of {timeout_s:g} s "
                               "and was stopped; narrow it (where, limit)") from None
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise ValueError(f"{_READ_ONLY} ({exc})") from None
        raise
    if max_rows is not None and len(rows) > max_rows:
        raise ValueError(f"the query returns more than {max_rows} rows; add a limit")
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def query_file(
    path: str | os.PathLike[str], sql: str, timeout_s: float | None = None,
) -> pa.Table:
    """Query a job's tables file from another process (read-only)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no job tables at {path}")
    return _query_file(Path(path), sql, (), timeout_s, None)


def _query_file(
    path: Path, sql: str, params: tuple, timeout_s: float | None, max_rows: int | None,
) -> pa.Table:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                         check_same_thread=False)
    try:
        return query_connection(db, sql, params, timeout_s, max_rows)
    finally:
        db.close()
