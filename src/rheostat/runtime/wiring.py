"""A task's outputs: where each step of its chain sends what it emits.

An output port leads to the next operator of the chain (:class:`NextOp`) or, through a
router, to one outbox per downstream task (:class:`OutEdge`). A reconfiguration rewires
the edges into a changed step (:func:`rewire_outputs`): a marker on each old channel,
then routing by the new owner table, with outboxes for the new channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rheostat.plan.physical import Edge, PhysicalPlan
from rheostat.plan.reconfig import ReconfigSpec
from rheostat.runtime.channels import Outbox, OutputEndpoint
from rheostat.runtime.messages import EndOfStream, Marker
from rheostat.runtime.operator import Operator
from rheostat.runtime.routing import HashRouter, Router, make_router


@dataclass
class OutEdge:
    edge: Edge
    router: Router
    outboxes: dict[int, Outbox]  # downstream task index -> outbox


@dataclass
class NextOp:
    op: Operator
    input_index: int


Targets = dict[tuple[str, str], list[OutEdge | NextOp]]  # (step, port) -> where it goes


def hash_keys(edge: Edge) -> tuple[str, ...] | None:
    """The key columns an edge hashes on, or None."""
    return edge.routing.keys if edge.routing.kind == "hash" else None


def _router(plan: PhysicalPlan, edge: Edge, index: int) -> Router:
    return make_router(edge.routing, index, plan.parallelism[edge.dst_step],
                       plan.key_group_owners.get(edge.dst_step), plan.max_parallelism)


def wire_outputs(
    plan: PhysicalPlan, task_id: str, index: int, ops: Mapping[str, Operator],
    steps: tuple[str, ...], outputs: Mapping[int, OutputEndpoint],
) -> tuple[Targets, list[OutEdge]]:
    """Where each of ``steps`` (a chain, run by ``ops``) sends each port; its out edges."""
    my_channels = plan.outputs_of(task_id)
    targets: Targets = {}
    edges: list[OutEdge] = []
    for sid in steps:
        for edge in [e for e in plan.edges if e.src_step == sid]:
            to = targets.setdefault((sid, edge.src_port), [])
            if edge.dst_step in steps:
                to.append(NextOp(ops[edge.dst_step], edge.dst_input))
                continue
            chans = [c for c in my_channels if c.edge == edge]
            out = OutEdge(edge, _router(plan, edge, index),
                          {c.dst_index: Outbox(outputs[c.channel_id]) for c in chans})
            to.append(out)
            edges.append(out)
    return targets, edges


def rewire_outputs(
    edges: list[OutEdge], plan: PhysicalPlan, task_id: str, index: int, spec: ReconfigSpec,
    outputs: Mapping[int, OutputEndpoint], ended: bool,
) -> list[Outbox]:
    """Route ``edges`` by ``plan`` from now on: a marker on each old channel into a changed
    step (unless the task ``ended`` its outputs: an end of stream counts as one), outboxes
    for the new channels. Returns the outboxes the new plan dropped: they still flush."""
    mine = plan.outputs_of(task_id)
    marker = Marker(spec.reconfig_id)
    dropped: list[Outbox] = []
    for out in edges:
        chans = [c for c in mine if c.edge == out.edge]
        into_changed = plan.chain_of(out.edge.dst_step).chain_id in spec.affected_chains
        if not into_changed and not any(c.channel_id in spec.new_channels for c in chans):
            continue
        boxes: dict[int, Outbox] = {}
        for c in chans:
            if c.channel_id in spec.new_channels:
                boxes[c.dst_index] = Outbox(outputs[c.channel_id])
                if ended:  # its end of stream went out already
                    boxes[c.dst_index].put(EndOfStream())
            else:
                boxes[c.dst_index] = out.outboxes[c.dst_index]
        for dst, box in out.outboxes.items():
            if into_changed and not ended:
                box.put(marker)
            if dst not in boxes or boxes[dst] is not box:
                dropped.append(box)
        out.outboxes = boxes
        router = _router(plan, out.edge, index)
        if isinstance(router, HashRouter) and isinstance(out.router, HashRouter):
            router.group_rows = out.router.group_rows  # the counts go on
        out.router = router
    return dropped


def replace_operator(targets: Targets, old: Operator, new: Operator) -> None:
    """The chain's operator ``old`` is ``new`` from now on."""
    for to in targets.values():
        for i, t in enumerate(to):
            if isinstance(t, NextOp) and t.op is old:
                to[i] = NextOp(new, t.input_index)
