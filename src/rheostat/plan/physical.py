"""Logical graph -> physical plan: parallelism, chains of fused steps, channels, key groups.

The physical plan is plain frozen data, so a reconfiguration can later be expressed as the
difference between two plans.

>>> from rheostat.plan.logical import SourceStep, SinkStep, Input, Port
>>> steps = (SourceStep("src", ()), SinkStep("out", (Input(Port("src")),)))
>>> plan = lower(steps, parallelism=2)
>>> [c.steps for c in plan.chains]
[('src', 'out')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rheostat.plan.errors import FlowError
from rheostat.plan.ids import TaskId
from rheostat.plan.keygroups import DEFAULT_MAX_PARALLELISM, default_owners
from rheostat.plan.logical import FORWARD, REBALANCE, Routing, SinkStep, SourceStep, Step


@dataclass(frozen=True)
class Edge:
    """A logical edge with its routing resolved."""

    src_step: str
    src_port: str
    dst_step: str
    dst_input: int
    routing: Routing


@dataclass(frozen=True)
class Chain:
    """Steps fused into one task: forward edges, equal parallelism, one consumer each."""

    chain_id: str
    steps: tuple[str, ...]
    parallelism: int

    def task_id(self, index: int) -> TaskId:
        return TaskId.of(self.chain_id, index)


@dataclass(frozen=True)
class Channel:
    """One physical channel between a task of ``edge.src_step`` and one of ``edge.dst_step``."""

    channel_id: int
    edge: Edge
    src_task: TaskId
    src_index: int
    dst_task: TaskId
    dst_index: int


@dataclass(frozen=True)
class PhysicalPlan:
    flow_name: str
    steps: dict[str, Step]
    order: tuple[str, ...]  # topological order of step ids
    parallelism: dict[str, int]
    chains: tuple[Chain, ...]
    edges: tuple[Edge, ...]
    channels: tuple[Channel, ...]
    max_parallelism: int = DEFAULT_MAX_PARALLELISM
    # For every step with a hash-routed input: key group -> index of the owning task.
    key_group_owners: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: The lowest channel id never used by this plan or one before it: a reconfiguration
    #: numbers new channels from here, so an id is never reused (a worker may still hold
    #: the endpoint of a removed channel). -1: one past the highest id in ``channels``.
    next_channel_id: int = -1

    def chain_of(self, step_id: str) -> Chain:
        for chain in self.chains:
            if step_id in chain.steps:
                return chain
        raise KeyError(step_id)

    @property
    def task_ids(self) -> list[TaskId]:
        return [c.task_id(i) for c in self.chains for i in range(c.parallelism)]

    def inputs_of(self, task_id: str) -> list[Channel]:
        return [c for c in self.channels if c.dst_task == task_id]

    def outputs_of(self, task_id: str) -> list[Channel]:
        return [c for c in self.channels if c.src_task == task_id]

    def consumers(self, step_id: str, port: str) -> list[Edge]:
        return [e for e in self.edges if e.src_step == step_id and e.src_port == port]


def topological_order(steps: Sequence[Step]) -> tuple[str, ...]:
    by_id = {s.step_id: s for s in steps}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(step_id: str) -> None:
        if state.get(step_id) == 2:
            return
        if state.get(step_id) == 1:
            raise FlowError(f"the flow has a cycle through step {step_id!r}")
        state[step_id] = 1
        for inp in by_id[step_id].inputs:
            if inp.port.step_id not in by_id:
                raise FlowError(
                    f"step {step_id!r} reads from unknown step {inp.port.step_id!r}"
                )
            visit(inp.port.step_id)
        state[step_id] = 2
        order.append(step_id)

    for s in steps:
        visit(s.step_id)
    return tuple(order)


def _resolve_parallelism(step: Step, default: int, by_id: dict[str, Step]) -> int:
    if step.parallelism is not None:
        if step.parallelism < 1:
            raise FlowError(f"step {step.step_id!r}: parallelism must be >= 1")
        return step.parallelism
    return default


def lower(
    steps: Sequence[Step],
    parallelism: int = 1,
    max_parallelism: int = DEFAULT_MAX_PARALLELISM,
    flow_name: str = "flow",
    chaining: bool = True,
) -> PhysicalPlan:
    """Turn a validated logical graph into a physical plan."""
    if parallelism < 1:
        raise FlowError("parallelism must be >= 1")
    by_id = {s.step_id: s for s in steps}
    order = topological_order(steps)
    par = {sid: _resolve_parallelism(by_id[sid], parallelism, by_id) for sid in order}
    for sid, p in par.items():
        if p > max_parallelism:
            raise FlowError(
                f"step {sid!r}: parallelism {p} exceeds max_parallelism {max_parallelism}"
            )

    edges: list[Edge] = []
    for sid in order:
        for i, inp in enumerate(by_id[sid].inputs):
            routing = inp.routing
            if routing is None:
                routing = FORWARD if par[inp.port.step_id] == par[sid] else REBALANCE
            elif routing.kind == "forward" and par[inp.port.step_id] != par[sid]:
                raise FlowError(
                    f"step {sid!r}: a forward edge from {inp.port.step_id!r} needs equal "
                    f"parallelism ({par[inp.port.step_id]} != {par[sid]}); use rebalance()"
                )
            edges.append(Edge(inp.port.step_id, inp.port.name, sid, i, routing))

    chains = _chain(order, by_id, par, edges) if chaining else [
        Chain(sid, (sid,), par[sid]) for sid in order
    ]
    chain_of = {sid: c for c in chains for sid in c.steps}
    channels: list[Channel] = []
    for e in edges:
        src_chain, dst_chain = chain_of[e.src_step], chain_of[e.dst_step]
        if src_chain is dst_chain:
            continue  # fused: a direct call inside one task
        pairs = (
            [(i, i) for i in range(par[e.src_step])]
            if e.routing.kind == "forward"
            else [(i, j) for i in range(par[e.src_step]) for j in range(par[e.dst_step])]
        )
        for i, j in pairs:
            channels.append(
                Channel(len(channels), e, src_chain.task_id(i), i, dst_chain.task_id(j), j)
            )
    owners = {
        sid: default_owners(par[sid], max_parallelism)
        for sid in order
        if by_id[sid].is_keyed
    }
    return PhysicalPlan(
        flow_name=flow_name,
        steps=dict(by_id),
        order=order,
        parallelism=par,
        chains=tuple(chains),
        edges=tuple(edges),
        channels=tuple(channels),
        max_parallelism=max_parallelism,
        key_group_owners=owners,
    )


def _chain(
    order: Sequence[str], by_id: dict[str, Step], par: dict[str, int], edges: list[Edge]
) -> list[Chain]:
    """Fuse a step into its producer's chain when the edge between them is a private pipe."""
    consumers: dict[tuple[str, str], list[Edge]] = {}
    for e in edges:
        consumers.setdefault((e.src_step, e.src_port), []).append(e)
    head_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for sid in order:
        step = by_id[sid]
        head = sid
        if len(step.inputs) == 1 and not isinstance(step, SourceStep):
            (e,) = [e for e in edges if e.dst_step == sid]
            up = e.src_step
            fusable = (
                e.routing.kind == "forward"
                and e.src_port == "main"
                and par[up] == par[sid]
                and len(consumers[(up, "main")]) == 1
                and not isinstance(by_id[up], SinkStep)
            )
            if fusable:
                head = head_of[up]
        head_of[sid] = head
        members.setdefault(head, []).append(sid)
    return [Chain(head, tuple(m), par[head]) for head, m in members.items()]


def assign_workers(plan: PhysicalPlan, workers: int) -> dict[str, int]:
    """Place task ``i`` of every chain on worker ``i % workers``, so forward edges stay local."""
    return {c.task_id(i): i % workers for c in plan.chains for i in range(c.parallelism)}
