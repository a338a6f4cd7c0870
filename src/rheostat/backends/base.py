"""The seam between the controller and whatever runs the tasks.

A backend starts workers hosting the plan's tasks, delivers commands to them, reports
what happens as events, and stops them. The controller never learns whether the workers
are threads, processes or Ray actors.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from rheostat.plan.physical import PhysicalPlan
from rheostat.protocol import (  # noqa: F401 - the seam's names, re-exported
    CheckpointAck,
    CheckpointFailed,
    CheckUpdate,
    Command,
    CompleteCheckpoint,
    Event,
    FinalCommitted,
    InstallState,
    MetricsReport,
    PartDone,
    Reconfigure,
    SinkData,
    StateHandedOver,
    StopWorker,
    TaskFailed,
    TaskFinished,
    TriggerCheckpoint,
    WorkerDied,
    WorkerStopped,
)
from rheostat.runtime.channels import InputEndpoint, OutputEndpoint
from rheostat.runtime.host import TaskHost
from rheostat.runtime.messages import FINAL_CHECKPOINT


@dataclass(frozen=True)
class RunConfig:
    workers: int = 1
    channel_capacity_bytes: int = 8 << 20
    metrics_interval_s: float = 0.5
    #: Where task snapshots go (a CheckpointStore); None: the job takes no checkpoints.
    store: Any = None

    @property
    def checkpointing(self) -> bool:
        return self.store is not None


class BackendUnavailable(RuntimeError):
    """The backend cannot run the job's workers (no cluster, too small, refused); the
    message says what to do."""


@dataclass(frozen=True)
class RestoreFrom:
    """Start the tasks from a verified checkpoint."""

    #: The store's RestorePoint: picklable; hands out verified part bytes by name.
    point: Any
    #: The parallelism of each chain when the checkpoint was taken.
    parallelism: dict[str, int]


#: Makes the endpoints of some new channels on one worker: (plan, placement, channel ids)
#: -> (inputs, outputs), keyed by channel id.
MakeEndpoints = Callable[
    [PhysicalPlan, dict[str, int], Iterable[int]],
    tuple[dict[int, InputEndpoint], dict[int, OutputEndpoint]],
]


def carry_out(
    host: TaskHost, command: Command, worker: int = 0,
    make_endpoints: MakeEndpoints | None = None,
) -> bool:
    """A command on a worker's tasks (every backend's workers do the same); True when it
    committed the job's final checkpoint, which the controller must hear."""
    if isinstance(command, TriggerCheckpoint):
        host.trigger_checkpoint(command.checkpoint_id)
    elif isinstance(command, CompleteCheckpoint):
        host.checkpoint_complete(command.checkpoint_id, command.finals)
        return command.checkpoint_id == FINAL_CHECKPOINT
    elif isinstance(command, Reconfigure):
        assert make_endpoints is not None, "this backend cannot reconfigure"
        plan: PhysicalPlan = cloudpickle.loads(command.plan)
        inputs, outputs = make_endpoints(plan, command.placement, command.spec.new_channels)
        mine = [t for t in plan.task_ids if command.placement[t] == worker]
        host.reconfigure(plan, command.spec, mine, inputs, outputs)
    elif isinstance(command, CheckUpdate):
        host.check_update(cloudpickle.loads(command.plan), command.reconfig_id, command.steps)
    elif isinstance(command, InstallState):
        h = command.handoff
        state = pickle.loads(h.state) if isinstance(h.state, bytes) else h.state
        host.install_state(h.to_task, h.step_id, h.from_task, state)
    return False


class Backend(ABC):
    #: The backend can start and stop workers while the job runs (``add_workers``,
    #: ``release_workers``): tasks a rescale adds then get workers of their own.
    elastic: bool = False

    @abstractmethod
    def start(
        self, plan: PhysicalPlan, placement: dict[str, int], config: RunConfig,
        restore: RestoreFrom | None = None,
    ) -> None:
        """Start ``config.workers`` workers; task ``t`` runs on worker ``placement[t]``,
        from the state in ``restore`` when given."""

    @abstractmethod
    def send(self, worker: int, command: Command) -> None: ...

    @abstractmethod
    def events(self, timeout: float) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` seconds for the first."""

    @abstractmethod
    def stop(self) -> list[Event]:
        """Stop every worker (idempotent); no process is left behind. Returns the events
        the workers sent while stopping (sinks committing their last transaction)."""

    def add_workers(
        self, plan: PhysicalPlan, placement: dict[str, int], workers: list[int],
        nodes: dict[int, str] | None = None,
    ) -> None:
        """Begin starting ``workers`` (new ids), hosting no task yet; ``placement`` says
        which tasks they will get (a ``Reconfigure`` that follows hands them over);
        ``nodes`` pins some to a node. Returns at once: the job runs on while they start
        (see ``workers_ready``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot add workers")

    def workers_ready(self, workers: list[int]) -> bool:
        """True once ``workers`` (from ``add_workers``) run and are connected to every
        live worker; raises, having stopped them, when the cluster cannot host them."""
        raise NotImplementedError(f"{type(self).__name__} cannot add workers")

    def release_workers(self, workers: list[int]) -> None:
        """Stop ``workers``, which host no task any more."""
        raise NotImplementedError(f"{type(self).__name__} cannot release workers")

    def close(self) -> None:  # noqa: B027 - most backends have nothing more to release
        """The job is over: release what outlives a restart (a Ray instance started for
        the job). ``stop`` was called before."""
