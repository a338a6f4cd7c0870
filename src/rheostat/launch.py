"""Running a flow: ``rs.run(flow, parallelism=2)``.

>>> import rheostat as rs
>>> flow = rs.Flow("doc")
>>> out = rs.sinks.collect()
>>> flow.source("n", rs.testing.rows([{"x": 1}, {"x": 2}])).sink("out", out)
>>> _ = rs.run(flow, backend="inline")
>>> out.to_pylist()
[{'x': 1}, {'x': 2}]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from rheostat.api.checks import check_serialisable
from rheostat.api.durations import to_ms
from rheostat.api.flow import Flow
from rheostat.backends.base import Backend, RestoreFrom, RunConfig
from rheostat.control.autoscale import Autoscale
from rheostat.control.controller import Controller, JobResult, ProgressCallback, RestartPolicy
from rheostat.control.handle import Job
from rheostat.control.http_api import HttpApiSettings
from rheostat.control.tables import JobTables
from rheostat.plan.errors import FlowError
from rheostat.plan.keygroups import DEFAULT_MAX_PARALLELISM
from rheostat.plan.physical import PhysicalPlan, lower
from rheostat.runtime.checkpoint import CheckpointStore
from rheostat.runtime.snapshots import TASK_PART

BackendName = Literal["local", "inline", "ray"]


def run(flow: Flow, **options: Any) -> JobResult:
    """Run ``flow`` to completion (or until Ctrl-C) and return its result.

    ``backend="local"`` runs worker processes on this machine (``workers`` of them, by
    default one per core, at most ``parallelism``); ``"inline"`` runs every task in this
    process in a fixed order (deterministic, for tests and debugging); ``"ray"`` runs the
    workers (``workers``, default ``parallelism``) as actors on the Ray cluster at
    ``ray_address`` (``"auto"``, ``"ray://head:10001"``; default: the running one, or a
    new Ray instance on this machine). Pass a :class:`~rheostat.backends.ray.backend.
    RayBackend` as ``backend`` for its other options.

    ``checkpoint_interval`` (e.g. ``"1s"``) turns on aligned checkpoints, kept in
    ``checkpoint_dir`` (a directory or fsspec URL; default ``.rheostat/checkpoints/<flow>``).
    A failed task or worker then restarts the job from the latest complete checkpoint
    (``restart``: 3 attempts by default). ``resume=True`` starts from the latest
    checkpoint in ``checkpoint_dir`` (a stopped or crashed earlier run), ``resume="name"``
    from that savepoint; keyed state is redistributed if the parallelism changed. State of
    a step the flow no longer has is an error unless ``allow_dropped_state``.
    Checkpoints are signed with the deployment's checkpoint secret
    (``RHEOSTAT_CHECKPOINT_SECRET``, ``RHEOSTAT_CHECKPOINT_SECRET_FILE``,
    ``~/.rheostat/checkpoint-secret``, or pass a ``CheckpointStore(secret=...)`` as
    ``checkpoint_dir``); resuming a checkpoint that does not verify with it raises
    :class:`~rheostat.runtime.checkpoint.UnauthenticatedCheckpointError` (docs/security.md).

    The controller keeps the job's state as SQL tables: in memory (``result.sql(...)``),
    or also in the SQLite file ``tables`` for other processes (``rheostat sql``).

    ``http_port`` (0: any free port) serves the job's HTTP API on ``http_host`` while it
    runs: ``GET /v1/job``, ``GET /v1/sql?q=...``, ``GET /metrics`` (Prometheus),
    ``POST /v1/savepoint`` and ``POST /v1/reconfigure``. Requests need
    ``Authorization: Bearer <token>``: the admin token, or the read-only token (GETs
    only). The tokens are random unless given in ``http_tokens`` (``{"admin": ...,
    "read": ...}``) and never logged. While the job runs they are in a file of mode 0600
    (``result.http.tokens_file``): with a ``tables`` file, ``<flow>.tokens.json`` next to
    it; otherwise, unless both were given, in ``<tmp>/rheostat-<uid>/<pid>/``, a
    directory private to this user. ``result.http`` holds them and the URL.

    ``autoscale=True`` (or an :class:`~rheostat.control.autoscale.Autoscale` with its
    settings) turns on the closed loop: every ``interval_s`` the job's measured rates go
    through the rate and skew policies, which rescale steps and move key groups by
    themselves; every decision, "none" included, is a row of the ``decisions`` table
    (``rheostat decisions <flow>``). A person's request always goes first: while one is
    queued or running the loop carries out nothing.

    To change the job while it runs, use :func:`start` instead. A live migration moves at
    most ``reconfig_batch_groups`` key groups at a time (0: all at once), so rows of only
    those wait while their state moves.
    """
    return controller_for(flow, **options).run()


def start(flow: Flow, **options: Any) -> Job:
    """Start ``flow`` in the background (options as for :func:`run`) and return its
    :class:`Job`, which reconfigures it while it runs.

    >>> import rheostat as rs
    >>> flow = rs.Flow("doc_start")
    >>> out = rs.sinks.collect()
    >>> flow.source("n", rs.testing.rows([{"x": 1}])).sink("out", out)
    >>> job = rs.start(flow, backend="inline")
    >>> job.wait().state
    'finished'
    """
    return Job(controller_for(flow, **options))


def controller_for(
    flow: Flow,
    *,
    parallelism: int = 1,
    backend: BackendName | Backend = "local",
    workers: int | None = None,
    max_parallelism: int = DEFAULT_MAX_PARALLELISM,
    channel_capacity_bytes: int = 8 << 20,
    progress: bool | ProgressCallback = False,
    checkpoint_interval: str | float | None = None,
    checkpoint_dir: str | CheckpointStore | None = None,
    keep_checkpoints: int = 3,
    restart: RestartPolicy | None = None,
    resume: bool | str = False,
    allow_dropped_state: bool = False,
    tolerable_checkpoint_failures: int = 3,
    tables: str | None = None,
    http_port: int | None = None,
    http_host: str = "127.0.0.1",
    http_tokens: Mapping[str, str] | None = None,
    reconfig_batch_groups: int = 512,
    ray_address: str | None = None,
    clock: Callable[[], float] | None = None,
    autoscale: bool | Autoscale | None = None,
) -> Controller:
    """The controller that will run ``flow`` (see :func:`run` for the options)."""
    flow.validate()
    check_serialisable(flow.steps)
    plan = lower(flow.steps, parallelism, max_parallelism, flow.name)
    if isinstance(backend, str):
        backend_obj, n_workers = _make_backend(backend, parallelism, workers, ray_address)
    else:
        backend_obj, n_workers = backend, workers or 1
    store = None
    interval_s = None
    if checkpoint_interval is not None or resume:
        interval_s = to_ms(checkpoint_interval or "1s", "checkpoint_interval") / 1000
        store = checkpoint_dir if isinstance(checkpoint_dir, CheckpointStore) else (
            CheckpointStore(
                checkpoint_dir or os.path.join(".rheostat", "checkpoints", flow.name),
                keep=keep_checkpoints,
            )
        )
        if restart is None:
            restart = RestartPolicy()
        store.key(create=True)  # no usable secret: say so now, not at the first commit
    restore_from = None
    if resume and store is not None:
        point = store.load_savepoint(resume) if isinstance(resume, str) else store.latest()
        if point is not None:
            check_restorable(plan, point.part_names, allow_dropped_state)
            restore_from = RestoreFrom(point, point.job["parallelism"])
    config = RunConfig(workers=n_workers, channel_capacity_bytes=channel_capacity_bytes,
                       store=store)
    callback: ProgressCallback | None
    if progress is True:
        from rheostat.observe.progress import TerminalProgress

        callback = TerminalProgress()
    else:
        callback = progress or None
    http = None
    if http_port is not None:
        if not 0 <= http_port <= 65535:
            raise ValueError(f"http_port must be 0..65535, got {http_port!r}")
        http = HttpApiSettings(http_port, http_host, http_tokens)
    job_tables = JobTables(tables, job=flow.name)
    return Controller(plan, backend_obj, config, callback, interval_s, restart,
                      restore_from, tolerable_checkpoint_failures, job_tables, http,
                      reconfig_batch_groups, clock or time.monotonic,
                      autoscale=Autoscale() if autoscale is True else autoscale or None)


def check_restorable(plan: PhysicalPlan, part_names: list[str], allow_dropped: bool) -> None:
    """Refuse a checkpoint holding state of steps this flow no longer has."""
    steps_with_state = {name.split("/", 1)[1] for name in part_names} - {TASK_PART}
    gone = sorted(s for s in steps_with_state if s not in plan.steps)
    if gone and not allow_dropped:
        raise FlowError(
            f"the checkpoint holds state of step(s) {gone} that flow {plan.flow_name!r} no "
            "longer has (renamed or removed?); restore with allow_dropped_state=True "
            "(--allow-dropped-state) to drop that state"
        )


def _make_backend(
    name: str, parallelism: int, workers: int | None, ray_address: str | None = None
) -> tuple[Backend, int]:
    if name == "inline":
        from rheostat.backends.inline import InlineBackend

        return InlineBackend(), 1
    if name == "local":
        from rheostat.backends.local.backend import LocalBackend

        n = workers or max(1, min(parallelism, os.cpu_count() or 1))
        return LocalBackend(), n
    if name == "ray":
        try:
            from rheostat.backends.ray.backend import RayBackend
        except ImportError as exc:
            raise ImportError(
                f"backend='ray' needs Ray ({exc}); install it with: pip install 'rheostat[ray]'"
            ) from exc
        return RayBackend(address=ray_address), workers or parallelism
    raise ValueError(f"unknown backend {name!r}; use 'local', 'inline' or 'ray'")
