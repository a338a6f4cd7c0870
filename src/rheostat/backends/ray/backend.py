"""The Ray backend: each worker is a Ray actor; the controller stays in the driver.

The actors of one run are gang-scheduled in one placement group (a bundle per worker,
sized by the resources of the steps whose tasks it hosts), so a job either gets all its
workers or fails at once with what the cluster lacks. The controller long-polls every
actor for its events; a poll that fails with an actor error is the worker's death (killed,
out of memory, its node lost), which the controller answers by restarting the job from its
last checkpoint, as on the local backend.

>>> backend = RayBackend(address="auto", worker_cpus=1)  # doctest: +SKIP
>>> rs.run(flow, backend=backend, workers=4)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from rheostat.backends.base import (
    Backend,
    BackendUnavailable,
    Command,
    Event,
    RestoreFrom,
    RunConfig,
    StopWorker,
    WorkerDied,
    WorkerStopped,
)
from rheostat.backends.hosting import boot_blob
from rheostat.backends.ray.actor import WorkerActor, kill_quietly
from rheostat.plan.physical import PhysicalPlan
from rheostat.protocol import TaskId

log = logging.getLogger("rheostat.ray")

#: Resources Ray takes as options of their own, not in ``resources=``.
_OWN_OPTIONS = ("CPU", "GPU", "memory")
#: Seconds an actor's events call waits for its first event.
_POLL_S = 0.5


class ClusterTooSmall(BackendUnavailable):
    """The Ray cluster cannot host the job's workers."""


@dataclass
class _Starting:
    """Workers ``add_workers`` started, until they are connected."""

    actors: dict[int, Any]
    connects: list[Any]
    deadline: float
    bundles: list[dict[str, float]]


class RayBackend(Backend):
    """Workers as Ray actors.

    ``address``: the cluster (``"auto"``, ``"ray://host:10001"``; None starts a Ray
    instance on this machine unless one is running or ``RAY_ADDRESS`` is set).
    ``worker_cpus``: CPUs each worker asks for, on top of what its steps ask for.
    ``placement_strategy``: how the workers' bundles spread over nodes (``PACK``,
    ``SPREAD``, ``STRICT_PACK``, ``STRICT_SPREAD``). ``runtime_env`` is passed to Ray
    (``working_dir``, ``pip`` ...) so the flow's modules reach other nodes.
    ``init_options`` go to ``ray.init`` when this backend starts Ray.
    ``put_batches_from``: batches of at least this many bytes travel between workers as
    object-store references (``ray.put``) instead of inside the actor call (0: never).

    The backend is elastic: tasks a live rescale adds get new actors of their own, and
    an actor left without tasks is stopped.
    """

    elastic = True

    def __init__(
        self, address: str | None = None, *, worker_cpus: float = 1.0,
        placement_strategy: str = "PACK", runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None, schedule_timeout_s: float = 60.0,
        put_batches_from: int = 0,
    ) -> None:
        self.address = address
        self.worker_cpus = worker_cpus
        self.placement_strategy = placement_strategy
        self.runtime_env = dict(runtime_env or {})
        self.init_options = dict(init_options or {})
        self.schedule_timeout_s = schedule_timeout_s
        self.put_batches_from = put_batches_from
        self._started_ray = False
        self._actors: dict[int, Any] = {}
        self._polls: dict[int, Any] = {}
        self._command_seq: dict[int, itertools.count[int]] = {}
        self._gone: set[int] = set()
        self._releasing: set[int] = set()
        self._stopping = False
        self._pg: Any = None
        self._starting: dict[tuple[int, ...], _Starting] = {}
        self._early: list[Event] = []
        self._config = RunConfig()
        #: Where each worker runs: node id, pid and assigned resources, by worker.
        self.workers_info: dict[int, dict[str, Any]] = {}

    # --- the seam -----------------------------------------------------------------

    def start(
        self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
        restore: RestoreFrom | None = None,
    ) -> None:
        self._gone, self._releasing, self._stopping = set(), set(), False
        self._early: list[Event] = []  # deaths seen while starting, for the next events()
        self._config = config
        n = config.workers
        bundles = [self._bundle(plan, placement, w) for w in range(n)]
        self._connect(sum(b.get("CPU", 0) for b in bundles))
        self._pg = placement_group(bundles, strategy=self.placement_strategy)
        ready, _ = ray.wait([self._pg.ready()], timeout=self.schedule_timeout_s)
        if not ready:
            remove_placement_group(self._pg)
            self._pg = None
            raise ClusterTooSmall(
                f"the Ray cluster could not host {n} workers asking for {bundles} "
                f"({self.placement_strategy}) within {self.schedule_timeout_s:.0f} s; it "
                f"has {ray.available_resources()} free. Use fewer workers, a smaller "
                "worker_cpus, or a bigger cluster."
            )
        boot = self._boot(plan, placement, restore)
        strategies = {w: PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=w)
                      for w in range(n)}
        self._actors = {w: self._actor(w, bundles[w], boot, strategies[w]) for w in range(n)}
        self._command_seq = {w: itertools.count() for w in range(n)}
        live = dict(self._actors)
        connects = {w: a.connect.remote({p: h for p, h in live.items() if p != w},
                                        self.put_batches_from) for w, a in live.items()}
        self.workers_info = {}
        for w, ref in connects.items():
            try:
                self.workers_info[w] = ray.get(ref)
            except ray.exceptions.RayError as exc:  # e.g. its node was lost meanwhile
                self._gone.add(w)
                self._early.append(WorkerDied(w, None))
                log.warning("worker %d (a Ray actor) died while starting: %s", w,
                            str(exc).splitlines()[0])
        self._polls = {w: a.events.remote(_POLL_S) for w, a in live.items()
                       if w not in self._gone}

    def add_workers(
        self, plan: PhysicalPlan, placement: dict[str, int], workers: list[int],
        nodes: dict[int, str] | None = None,
    ) -> None:
        boot = self._boot(plan, placement, None, joining=True)
        bundles = [self._bundle(plan, placement, w) for w in workers]
        where = {w: NodeAffinitySchedulingStrategy(node_id(n), soft=False)
                 for w, n in (nodes or {}).items()}
        new = {w: self._actor(w, b, boot, where.get(w, "DEFAULT"))
               for w, b in zip(workers, bundles)}
        live = {w: a for w, a in self._actors.items() if w not in self._gone} | new
        connects = [a.connect.remote({p: h for p, h in live.items() if p != w},
                                     self.put_batches_from) for w, a in new.items()]
        self._starting[tuple(workers)] = _Starting(
            new, connects, time.monotonic() + self.schedule_timeout_s, bundles)

    def workers_ready(self, workers: list[int]) -> bool:
        starting = self._starting[tuple(workers)]
        ready, _ = ray.wait(starting.connects, num_returns=len(starting.connects), timeout=0)
        if len(ready) < len(starting.connects):
            if time.monotonic() < starting.deadline:
                return False
            del self._starting[tuple(workers)]
            for actor in starting.actors.values():
                kill_quietly(actor)
            raise ClusterTooSmall(
                f"the Ray cluster could not start {len(workers)} more worker(s) asking for "
                f"{starting.bundles} within {self.schedule_timeout_s:.0f} s; it has "
                f"{ray.available_resources()} free"
            )
        del self._starting[tuple(workers)]
        infos = ray.get(starting.connects)
        old = [a for w, a in self._actors.items() if w not in self._gone]
        ray.get([a.add_peers.remote(starting.actors, self.put_batches_from) for a in old])
        self._actors.update(starting.actors)
        self.workers_info.update(zip(workers, infos, strict=True))
        for w, actor in starting.actors.items():
            self._command_seq[w] = itertools.count()
            self._polls[w] = actor.events.remote(_POLL_S)
        return True

    def release_workers(self, workers: list[int]) -> None:
        for w in workers:
            if w in self._actors and w not in self._gone:
                self._releasing.add(w)
                self.send(w, StopWorker())  # it says bye, then _collect kills it

    def send(self, worker: int, command: Command) -> None:
        if isinstance(command, StopWorker) and worker not in self._releasing:
            self._stopping = True
        if worker not in self._gone and worker in self._actors:
            self._actors[worker].command.remote(next(self._command_seq[worker]), command)

    def events(self, timeout: float) -> list[Event]:
        if self._early:
            early, self._early = self._early, []
            return early
        if not self._polls:
            time.sleep(timeout)
            return []
        refs = list(self._polls.values())
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        events: list[Event] = []
        for ref in ready:
            w = next(w for w, r in self._polls.items() if r == ref)
            events += self._collect(w, ref)
        return events

    def _collect(self, w: int, ref: Any) -> list[Event]:
        del self._polls[w]
        try:
            messages = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._gone.add(w)
            if self._stopping or w in self._releasing:
                return []
            log.warning("worker %d (a Ray actor) died: %s", w, str(exc).splitlines()[0])
            return [WorkerDied(w, None)]
        events = []
        said_bye = False
        for event in messages:
            if isinstance(event, WorkerStopped):
                said_bye = True
            else:
                events.append(event)
        if not said_bye:
            self._polls[w] = self._actors[w].events.remote(_POLL_S)
        else:
            self._gone.add(w)
            if w in self._releasing:
                kill_quietly(self._actors[w])
        return events

    def stop(self) -> list[Event]:
        self._stopping = True
        for w in list(self._actors):
            self.send(w, StopWorker())
        events: list[Event] = []
        deadline = time.monotonic() + 5
        while self._polls and time.monotonic() < deadline:
            events += self.events(timeout=0.1)  # until each worker said bye
        self._release()
        return events

    def kill(self) -> None:
        """Kill every worker at once (a restart does not wait for a clean stop)."""
        self._stopping = True
        for actor in self._actors.values():
            kill_quietly(actor)

    def close(self) -> None:
        """Stop the Ray instance this backend started, if it started one."""
        self._release()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # --- helpers ------------------------------------------------------------------

    def actor(self, worker: int) -> Any:
        """The actor handle of ``worker`` (tests kill it with ``ray.kill``)."""
        return self._actors[worker]

    def _boot(
        self, plan: PhysicalPlan, placement: dict[str, int], restore: RestoreFrom | None,
        joining: bool = False,
    ) -> dict[str, Any]:
        c = self._config
        boot = boot_blob(plan, placement, c.channel_capacity_bytes, c.metrics_interval_s,
                         c.store, restore, list(sys.path), joining)
        boot["cwd"] = os.getcwd()
        return boot

    def _actor(self, w: int, bundle: dict[str, float], boot: dict[str, Any], where: Any) -> Any:
        return WorkerActor.options(
            num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
            memory=bundle.get("memory") or None,
            resources={k: v for k, v in bundle.items() if k not in _OWN_OPTIONS},
            scheduling_strategy=where, runtime_env=self.runtime_env or None, max_restarts=0,
        ).remote(w, boot)

    def _release(self) -> None:
        starting = [a for s in self._starting.values() for a in s.actors.values()]
        for actor in [*self._actors.values(), *starting]:
            kill_quietly(actor)
        self._actors, self._polls, self._starting = {}, {}, {}
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception as exc:  # the cluster may already be gone
                log.debug("could not remove the placement group: %s", exc)
            self._pg = None

    def _connect(self, cpus_wanted: float) -> None:
        """Join the cluster, or start a Ray instance here with at least the logical CPUs
        the workers ask for (like the local backend, it may run more workers than cores)."""
        if ray.is_initialized():
            return
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        options = ray_init_options(self.init_options, cpus_wanted, local=local)
        if local and os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            log.warning("RAY_AUTH_MODE=disabled: the Ray instance rheostat starts will run "
                        "code for anyone who can reach its ports; unset it to keep "
                        "Ray's token authentication on (docs/security.md#ray)")
        elif local:
            private_ray_token(os.environ, Path.home())
        where = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        try:
            try:
                ray.init(address=self.address, **options)
            except ValueError as exc:  # address None found a `ray start` cluster here
                if "existing cluster" not in str(exc) or "num_cpus" in self.init_options:
                    raise
                options.pop("num_cpus")
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = ""
            if "auth" in str(exc).lower() or "token" in str(exc).lower():
                hint = (" The cluster checks tokens: set RAY_AUTH_MODE=token and the "
                        "cluster's token in RAY_AUTH_TOKEN (or ~/.ray/auth_token); see "
                        "docs/ray.md.")
            raise BackendUnavailable(
                f"could not connect to the Ray cluster ({where}): "
                f"{type(exc).__name__}: {exc}.{hint}") from exc
        self._started_ray = True

    def _bundle(
        self, plan: PhysicalPlan, placement: dict[str, int], worker: int
    ) -> dict[str, float]:
        """What worker ``worker`` asks of the cluster: ``worker_cpus`` plus the resources
        of the steps of the tasks it hosts."""
        wants: dict[str, float] = {"CPU": self.worker_cpus}
        for task_id, w in placement.items():
            if w == worker:
                for name, amount in task_resources(plan, task_id).items():
                    wants[name] = wants.get(name, 0) + amount
        return {k: v for k, v in wants.items() if v > 0} or {"CPU": 0.001}


def ray_init_options(
    init_options: Mapping[str, Any], cpus_wanted: float, *, local: bool,
) -> dict[str, Any]:
    """The keyword arguments of ``ray.init``: ``init_options`` over rheostat's defaults.

    A Ray instance started here (``local``) gets the logical CPUs the workers ask for and
    no dashboard (its job API runs shell commands); a dashboard asked for listens on
    127.0.0.1. Token authentication is Ray's default for such an instance and nothing
    here turns it off. Ray 2.x cannot bind its GCS, raylet and worker ports to 127.0.0.1
    (it replaces a loopback ``_node_ip_address`` with the node's address), so none is set.

    >>> ray_init_options({}, 2, local=True)["include_dashboard"]
    False
    """
    options: dict[str, Any] = {"log_to_driver": True, **init_options}
    if local:
        if "num_cpus" not in options:
            options["num_cpus"] = max(os.cpu_count() or 1, math.ceil(cpus_wanted))
        options.setdefault("include_dashboard", False)
        options.setdefault("dashboard_host", "127.0.0.1")
    return options


def private_ray_token(environ: Mapping[str, str], home: Path) -> Path | None:
    """Keep the Ray token file private (0600) to this user; returns its path, or None
    when the token comes from ``RAY_AUTH_TOKEN``.

    Ray (2.60) writes the ``~/.ray/auth_token`` a new instance makes with the default
    mode, readable by every local user under the usual umask, which would let them past
    its token authentication. So a missing one is made here first, the way Ray makes it
    (``secrets.token_hex(32)``), mode 0600 in a directory made 0700; an existing one that
    others can read is made 0600, with a warning.
    """
    if environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(environ.get("RAY_AUTH_TOKEN_PATH") or home / ".ray" / "auth_token")
    if path.exists():
        if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(0o600)
            log.warning("the Ray token %s was readable by other users; it is now 0600, "
                        "but they may have it: remove it to have a new one made", path)
        return path
    if "RAY_AUTH_TOKEN_PATH" in environ:
        return path  # Ray's to report
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
    finally:
        os.close(fd)
    return path


def node_id(node: str) -> str:
    """The Ray node id of ``node``: a node id, or the IP address of a live node."""
    live = [n for n in ray.nodes() if n.get("Alive")]
    for n in live:
        if node in (n["NodeID"], n.get("NodeManagerAddress"), n.get("NodeName")):
            return n["NodeID"]
    known = [(n["NodeID"][:12], n.get("NodeManagerAddress")) for n in live]
    raise ValueError(f"the Ray cluster has no live node {node!r}; its nodes (id, address): "
                     f"{known}")


def task_resources(plan: PhysicalPlan, task_id: str) -> dict[str, float]:
    """What one task asks for: per resource, the most any step of its chain asks."""
    chain_id = TaskId(task_id).chain
    chain = next(c for c in plan.chains if c.chain_id == chain_id)
    wants: dict[str, float] = {}
    for step_id in chain.steps:
        for name, amount in plan.steps[step_id].resources.items():
            wants[name] = max(wants.get(name, 0.0), amount)
    return wants
