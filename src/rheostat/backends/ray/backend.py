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
import sys
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rheostat.backends.base import (
    Backend,
    Command,
    Event,
    RestoreFrom,
    RunConfig,
    StopWorker,
    WorkerDied,
)
from rheostat.backends.hosting import boot_blob, decode_event
from rheostat.backends.ray.actor import WorkerActor, kill_quietly
from rheostat.plan.physical import PhysicalPlan

log = logging.getLogger("rheostat.ray")

#: Seconds an actor's events call waits for its first event.
_POLL_S = 0.5


class ClusterTooSmall(RuntimeError):
    """The Ray cluster cannot host the job's workers."""


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
    """

    def __init__(
        self, address: str | None = None, *, worker_cpus: float = 1.0,
        placement_strategy: str = "PACK", runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None, schedule_timeout_s: float = 60.0,
        put_batches_from: int = 0,
    ) -> None:
        self.put_batches_from = put_batches_from
        self.address = address
        self.worker_cpus = worker_cpus
        self.placement_strategy = placement_strategy
        self.runtime_env = dict(runtime_env or {})
        self.init_options = dict(init_options or {})
        self.schedule_timeout_s = schedule_timeout_s
        self._started_ray = False
        self._actors: list[Any] = []
        self._polls: dict[int, Any] = {}
        self._command_seq: list[itertools.count[int]] = []
        self._gone: set[int] = set()
        self._stopping = False
        self._pg: Any = None
        #: Where each worker runs: node id, pid, assigned resources (from the last start).
        self.workers_info: list[dict[str, Any]] = []

    # --- the seam -----------------------------------------------------------------

    def start(
        self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
        restore: RestoreFrom | None = None,
    ) -> None:
        self._gone, self._stopping = set(), False
        n = config.workers
        bundles = [self._bundle(plan, placement, w) for w in range(n)]
        self._connect(sum(b.get("CPU", 0) for b in bundles))
        self._pg = placement_group(bundles, strategy=self.placement_strategy)
        ready, _ = ray.wait([self._pg.ready()], timeout=self.schedule_timeout_s)
        if not ready:
            remove_placement_group(self._pg)
            raise ClusterTooSmall(
                f"the Ray cluster could not host {n} workers asking for {bundles} "
                f"({self.placement_strategy}) within {self.schedule_timeout_s:.0f} s; it "
                f"has {ray.available_resources()} free. Use fewer workers, a smaller "
                "worker_cpus, or a bigger cluster."
            )
        boot = boot_blob(plan, placement, config.channel_capacity_bytes,
                         config.metrics_interval_s, config.store, restore, list(sys.path))
        boot["cwd"] = os.getcwd()
        self._actors = [
            WorkerActor.options(
                num_cpus=bundles[w].get("CPU", 0), num_gpus=bundles[w].get("GPU", 0),
                resources={k: v for k, v in bundles[w].items() if k not in ("CPU", "GPU")},
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self._pg, placement_group_bundle_index=w),
                runtime_env=self.runtime_env or None, max_restarts=0,
                name=None,
            ).remote(w, boot)
            for w in range(n)
        ]
        self._command_seq = [itertools.count() for _ in range(n)]
        self.workers_info = ray.get([
            actor.connect.remote({p: h for p, h in enumerate(self._actors) if p != w},
                                 self.put_batches_from)
            for w, actor in enumerate(self._actors)
        ])
        self._polls = {w: a.events.remote(_POLL_S) for w, a in enumerate(self._actors)}

    def send(self, worker: int, command: Command) -> None:
        if isinstance(command, StopWorker):
            self._stopping = True
        if worker not in self._gone and worker < len(self._actors):
            self._actors[worker].command.remote(next(self._command_seq[worker]), command)

    def events(self, timeout: float) -> list[Event]:
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
            if self._stopping:
                return []
            log.warning("worker %d (a Ray actor) died: %s", w, str(exc).splitlines()[0])
            return [WorkerDied(w, None)]
        events = []
        said_bye = False
        for message in messages:
            event = decode_event(w, message)
            if event is not None:
                events.append(event)
            said_bye = said_bye or message[0] == "bye"
        if said_bye:
            self._gone.add(w)
        else:
            self._polls[w] = self._actors[w].events.remote(_POLL_S)
        return events

    def stop(self) -> list[Event]:
        self._stopping = True
        for w in range(len(self._actors)):
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
        for actor in self._actors:
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

    def _release(self) -> None:
        for actor in self._actors:
            kill_quietly(actor)
        self._actors, self._polls = [], {}
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
        options: dict[str, Any] = {"log_to_driver": True, **self.init_options}
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        if local and "num_cpus" not in options:
            options["num_cpus"] = max(os.cpu_count() or 1, math.ceil(cpus_wanted))
        ray.init(address=self.address, **options)
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


def task_resources(plan: PhysicalPlan, task_id: str) -> dict[str, float]:
    """What one task asks for: per resource, the most any step of its chain asks."""
    chain_id = task_id.rsplit("#", 1)[0]
    chain = next(c for c in plan.chains if c.chain_id == chain_id)
    wants: dict[str, float] = {}
    for step_id in chain.steps:
        for name, amount in plan.steps[step_id].resources.items():
            wants[name] = max(wants.get(name, 0.0), amount)
    return wants
