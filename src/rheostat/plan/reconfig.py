"""Live reconfiguration, planned: primitive operations -> a new physical plan and a spec.

The controller turns a request (one or several primitives, applied as one) into the plan
the job will run and a :class:`ReconfigSpec` that tells every task its part: which key
groups move from which task to which, which source splits change task, which tasks
appear or retire, which channels are new, and which steps swap their function or knobs.
Nothing here runs anything.

>>> from rheostat.plan.logical import SourceStep, SinkStep, KeyedProcessStep, Input, Port
>>> from rheostat.plan.logical import Routing
>>> from rheostat.plan.physical import lower
>>> steps = (SourceStep("src", ()),
...          KeyedProcessStep("p", (Input(Port("src"), Routing("hash", ("k",))),), keys=("k",)),
...          SinkStep("out", (Input(Port("p")),)))
>>> plan = lower(steps, parallelism=2, max_parallelism=8)
>>> r = plan_reconfiguration(plan, {t: 0 for t in plan.task_ids}, 1, [Rescale("p", 3)], 1)
>>> r.plan.parallelism["p"], r.spec.added, sorted(r.spec.moves["p"])
(3, ('p#2',), [3, 7])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from rheostat.plan.errors import FlowError
from rheostat.plan.ids import TaskId
from rheostat.plan.logical import STATEFUL_KINDS, SourceStep, Step
from rheostat.plan.physical import Chain, Channel, PhysicalPlan
from rheostat.plan.splits import split_moves, splits_of


class ReconfigError(FlowError):
    """A reconfiguration request that cannot be carried out; the job runs on unchanged."""


# --- the primitives -------------------------------------------------------------------


@dataclass(frozen=True)
class Rescale:
    """Run ``step`` (and the steps fused with it) on ``parallelism`` tasks."""

    step: str
    parallelism: int


@dataclass(frozen=True)
class MoveKeyGroups:
    """Give key groups ``groups`` of keyed step ``step`` to its task ``to_task``."""

    step: str
    groups: tuple[int, ...]
    to_task: int


@dataclass(frozen=True)
class UpdateFunction:
    """Run ``function`` instead of the step's function from now on."""

    step: str
    function: Any


@dataclass(frozen=True)
class SetKnob:
    """Set declared knob ``name`` of ``step`` to ``value``."""

    step: str
    name: str
    value: Any


@dataclass(frozen=True)
class Place:
    """Move ``task`` to worker ``worker``, or (on Ray) to a new worker on ``node`` (a
    Ray node id or a node's IP address)."""

    task: str
    worker: int = -1
    node: str | None = None


@dataclass(frozen=True)
class SetOwners:
    """Internal: the whole owner table of keyed step ``step`` (a stage of a migration)."""

    step: str
    owners: tuple[int, ...]


Operation = Rescale | MoveKeyGroups | UpdateFunction | SetKnob | Place | SetOwners

#: Steps whose function can be swapped while the job runs.
UPDATABLE_KINDS = frozenset({"map", "keyed_process"})


def describe(op: Operation) -> str:
    """One line for logs and the reconfigurations table."""
    if isinstance(op, Rescale):
        return f"rescale {op.step} to {op.parallelism}"
    if isinstance(op, MoveKeyGroups):
        return f"move {len(op.groups)} key groups of {op.step} to task {op.to_task}"
    if isinstance(op, UpdateFunction):
        name = getattr(op.function, "__qualname__", type(op.function).__name__)
        return f"update {op.step} to {name}"
    if isinstance(op, SetKnob):
        return f"knob {op.step}.{op.name} = {op.value!r}"
    if isinstance(op, SetOwners):
        return f"owners of {op.step}"
    if isinstance(op, Place) and op.node is not None:
        return f"place {op.task} on node {op.node}"
    return f"place {op.task} on worker {op.worker}"


# --- what the tasks are told ----------------------------------------------------------


@dataclass(frozen=True)
class ReconfigSpec:
    """Every task's part in reconfiguration ``reconfig_id``."""

    reconfig_id: int
    #: keyed step -> {key group: (old owner index, new owner index)} for moving groups.
    moves: Mapping[str, Mapping[int, tuple[int, int]]] = field(default_factory=dict)
    #: Chains whose old tasks wait for a marker on every input before handing state over.
    affected_chains: frozenset[str] = frozenset()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: Channels of the new plan that the old one did not have.
    new_channels: tuple[int, ...] = ()
    #: Steps that run a new function or new knob values.
    updated_steps: tuple[str, ...] = ()
    #: Tasks that move to another worker: the old instance hands all its key groups to
    #: the new one (``moves`` lists them with old == new owner) and leaves.
    relocated: tuple[str, ...] = ()
    #: source step -> {split: (old task index, new task index)} for splits that change
    #: task (a rescale of the source, or old == new for a source task that moves). The
    #: chains that read such a source restart its watermarks at the reconfiguration.
    split_moves: Mapping[str, Mapping[int, tuple[int, int]]] = field(default_factory=dict)

    def losing(self, step: str, index: int) -> dict[int, list[int]]:
        """New owner -> key groups that task ``index`` of ``step`` hands over."""
        return _by_task(self.moves.get(step, {}), index, losing=True)

    def gaining(self, step: str, index: int) -> dict[int, list[int]]:
        """Old owner -> key groups that task ``index`` of ``step`` takes over."""
        return _by_task(self.moves.get(step, {}), index, losing=False)

    def losing_splits(self, step: str, index: int) -> dict[int, list[int]]:
        """New task -> splits of source ``step`` that its task ``index`` hands over."""
        return _by_task(self.split_moves.get(step, {}), index, losing=True)

    def gaining_splits(self, step: str, index: int) -> dict[int, list[int]]:
        """Old task -> splits of source ``step`` that its task ``index`` takes over."""
        return _by_task(self.split_moves.get(step, {}), index, losing=False)


def _by_task(
    moves: Mapping[int, tuple[int, int]], index: int, losing: bool
) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for unit, (old, new) in sorted(moves.items()):
        if (old if losing else new) == index:
            out.setdefault(new if losing else old, []).append(unit)
    return out


@dataclass(frozen=True)
class Reconfiguration:
    plan: PhysicalPlan
    placement: dict[str, int]
    spec: ReconfigSpec


def balanced_owners(owners: Sequence[int], parallelism: int) -> tuple[int, ...]:
    """A balanced owner table for ``parallelism`` tasks that moves as few groups as it can.

    Each task keeps what it owned up to its fair share; the surplus and the groups of
    removed tasks go to the tasks below their share, in key-group order.

    >>> balanced_owners((0, 0, 0, 0, 1, 1, 1, 1), 4)
    (0, 0, 2, 2, 1, 1, 3, 3)
    >>> balanced_owners((0, 0, 2, 2, 1, 1, 3, 3), 2)
    (0, 0, 0, 0, 1, 1, 1, 1)
    """
    n = len(owners)
    share = [n // parallelism + (1 if i < n % parallelism else 0) for i in range(parallelism)]
    kept = [0] * parallelism
    out = list(owners)
    loose: list[int] = []
    for g, t in enumerate(owners):
        if t < parallelism and kept[t] < share[t]:
            kept[t] += 1
        else:
            loose.append(g)
    t = 0
    for g in loose:
        while kept[t] >= share[t]:
            t += 1
        out[g] = t
        kept[t] += 1
    return tuple(out)


# --- planning -------------------------------------------------------------------------


def plan_reconfiguration(
    plan: PhysicalPlan, placement: Mapping[str, int], workers: int,
    ops: Sequence[Operation], reconfig_id: int, allow_idle_tasks: bool = False,
    finished: Collection[str] = (),
) -> Reconfiguration:
    """The plan after ``ops`` (applied in order, as one change) and each task's part.

    ``allow_idle_tasks``: a task may own no key group (between stages of a migration).
    ``finished``: tasks that have finished; a source task among them takes no splits.
    """
    if not ops:
        raise ReconfigError("a reconfiguration needs at least one operation")
    steps: dict[str, Step] = dict(plan.steps)
    par = {c.chain_id: c.parallelism for c in plan.chains}
    owners = {s: list(o) for s, o in plan.key_group_owners.items()}
    updated: list[str] = []
    relocate = _relocations(plan, placement, workers, ops)
    n_splits: dict[str, int] = {}  # source step -> its splits, for sources whose tasks change
    for task in relocate:
        moving = plan.chain_of(TaskId(task).chain)
        head = plan.steps[moving.steps[0]]
        if isinstance(head, SourceStep):
            n_splits[head.step_id] = len(_source_splits(head, moving.parallelism,
                                                        f"place {task!r}"))
    for op in ops:
        if isinstance(op, Place):
            continue
        if op.step not in steps:
            raise ReconfigError(f"the job has no step {op.step!r}; its steps are "
                                f"{list(plan.order)}")
        chain = plan.chain_of(op.step)
        if isinstance(op, Rescale):
            n = _check_rescale(plan, chain, op)
            if n is not None:
                n_splits[chain.steps[0]] = n
            par[chain.chain_id] = op.parallelism
            for sid in chain.steps:
                if sid in owners:
                    owners[sid] = list(balanced_owners(owners[sid], op.parallelism))
        elif isinstance(op, MoveKeyGroups):
            if op.step not in owners:
                raise ReconfigError(f"step {op.step!r} is not keyed: it has no key groups "
                                    "to move")
            if not 0 <= op.to_task < par[chain.chain_id]:
                raise ReconfigError(f"step {op.step!r} has tasks 0..{par[chain.chain_id] - 1}; "
                                    f"there is no task {op.to_task}")
            bad = [g for g in op.groups if not 0 <= g < plan.max_parallelism]
            if bad or not op.groups:
                raise ReconfigError(f"key groups must be in 0..{plan.max_parallelism - 1} "
                                    f"(got {bad[:5] or 'none'})")
            for g in op.groups:
                owners[op.step][g] = op.to_task
        elif isinstance(op, SetOwners):
            if op.step not in owners or len(op.owners) != plan.max_parallelism:
                raise ReconfigError(f"owners of {op.step!r}: one task index per key group")
            owners[op.step] = list(op.owners)
        elif isinstance(op, UpdateFunction):
            step = steps[op.step]
            if step.kind not in UPDATABLE_KINDS:
                raise ReconfigError(f"step {op.step!r} ({step.kind}) has no function to "
                                    f"update; functions of {sorted(UPDATABLE_KINDS)} steps can")
            if not callable(op.function) and not hasattr(op.function, "process"):
                raise ReconfigError(f"update of step {op.step!r}: {op.function!r} is not a "
                                    "function")
            steps[op.step] = dataclasses.replace(step, fn=op.function)
            updated.append(op.step)
        elif isinstance(op, SetKnob):
            step = steps[op.step]
            steps[op.step] = dataclasses.replace(
                step, knobs={**step.knobs, op.name: check_knob(step, op.name, op.value)})
            updated.append(op.step)
    for sid, new_owners in owners.items():
        used = set(new_owners)
        p = par[plan.chain_of(sid).chain_id]
        if not used <= set(range(p)):
            raise ReconfigError(f"step {sid!r}: owner table names tasks beyond 0..{p - 1}")
        if used != set(range(p)) and not allow_idle_tasks:
            idle = sorted(set(range(p)) - used)
            raise ReconfigError(f"step {sid!r}: task(s) {idle} would own no key group; "
                                "rescale down instead of emptying a task")
    r = _build(plan, placement, workers, steps, par, owners, tuple(dict.fromkeys(updated)),
               reconfig_id, relocate, n_splits)
    if not relocate:
        _refuse_finished_readers(plan, r.spec, finished)
    return r


def _refuse_finished_readers(
    plan: PhysicalPlan, spec: ReconfigSpec, finished: Collection[str]
) -> None:
    """A source task that finished (its end of stream and final state are out) cannot
    read more: refuse to give it splits. An added task is a new instance: it can."""
    for sid, moved in spec.split_moves.items():
        chain = plan.chain_of(sid)
        done = sorted({chain.task_id(new) for _, new in moved.values()}
                      & set(finished) - set(spec.added))
        if done:
            raise ReconfigError(
                f"rescale of step {sid!r}: task(s) {', '.join(done)} have read all their "
                "splits and finished (the source is bounded and nearly done), so they cannot "
                "take over the splits of others; rescale to a parallelism that keeps them "
                "out, or let the source finish")


def _relocations(
    plan: PhysicalPlan, placement: Mapping[str, int], workers: int, ops: Sequence[Operation]
) -> dict[str, int]:
    """Task -> its new worker, for the ``Place`` operations in ``ops`` (alone in a
    request: a task moves as it is). Whether the worker exists is the controller's to
    check: an elastic backend may have started it for this request."""
    places = [op for op in ops if isinstance(op, Place)]
    if not places:
        return {}
    if len(places) != len(ops):
        raise ReconfigError("place() runs on its own: give other changes in another request")
    relocate: dict[str, int] = {}
    for op in places:
        if op.task not in placement:
            raise ReconfigError(f"the job has no task {op.task!r}; its tasks are "
                                f"{plan.task_ids}")
        if not isinstance(op.worker, int) or op.worker < 0:
            raise ReconfigError(f"place {op.task!r}: a worker is a number >= 0, got "
                                f"{op.worker!r}")
        if placement[op.task] == op.worker:
            raise ReconfigError(f"task {op.task!r} is on worker {op.worker} already")
        chain = next(c for c in plan.chains if TaskId(op.task).chain == c.chain_id)
        for sid in chain.steps:
            kind = plan.steps[sid].kind
            if kind in STATEFUL_KINDS and sid not in plan.key_group_owners:
                raise ReconfigError(f"task {op.task!r} holds state of step {sid!r} that is "
                                    "not split into key groups; it cannot move live")
        relocate[op.task] = op.worker
    return relocate


def check_knob(step: Step, name: str, value: Any) -> Any:
    """``value`` for declared knob ``name`` of ``step``, of the declared value's type."""
    if name not in step.knobs:
        declared = sorted(step.knobs) or "none"
        raise ReconfigError(f"step {step.step_id!r} declares no knob {name!r} (declared: "
                            f"{declared}); declare knobs with knobs={{...}} on the step")
    current = step.knobs[name]
    if current is not None and not isinstance(value, type(current)):
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise ReconfigError(f"knob {name!r} of step {step.step_id!r} is a "
                            f"{type(current).__name__}; got {value!r}")
    return value


def _check_rescale(plan: PhysicalPlan, chain: Chain, op: Rescale) -> int | None:
    """Refuse a rescale that cannot be done; for a source chain, its number of splits."""
    where = f"rescale of step {op.step!r}"
    if not 1 <= op.parallelism <= plan.max_parallelism:
        raise ReconfigError(f"{where}: parallelism must be in 1..{plan.max_parallelism}")
    for e in plan.edges:
        crosses = (e.dst_step in chain.steps) != (e.src_step in chain.steps)
        if crosses and e.routing.kind == "forward":
            raise ReconfigError(
                f"{where}: steps {e.src_step!r} and {e.dst_step!r} are joined by a forward "
                "edge, which needs equal parallelism; give the edge rebalance() or key_by()")
    head = plan.steps[chain.steps[0]]
    if not isinstance(head, SourceStep):
        return None
    if head.step_id != op.step:
        where += f" (it runs in one task with source step {head.step_id!r})"
    before = _source_splits(head, chain.parallelism, where)
    after = _source_splits(head, op.parallelism, where)
    if len(before) != len(after) or not all(_same(a, b) for a, b in zip(before, after)):
        raise ReconfigError(
            f"{where}: its source {head.source!r} makes its splits from the parallelism "
            f"({len(before)} at {chain.parallelism} tasks, {len(after)} at {op.parallelism}), "
            "so their read positions cannot move between tasks; give it a fixed number of "
            "splits to rescale it (rows(..., splits=N), synthetic(..., splits=N), "
            "nexmark(..., splits=N); file sources have one per file)")
    if op.parallelism > len(after):
        raise ReconfigError(
            f"{where}: its source makes {len(after)} split(s), so at most {len(after)} "
            f"task(s) can read it; rescale it to {len(after)} or fewer, or give the source "
            "more splits")
    return len(after)


def _source_splits(step: SourceStep, parallelism: int, where: str) -> list[Any]:
    try:
        return list(step.source.splits(parallelism))
    except Exception as exc:
        raise ReconfigError(f"{where}: the source of step {step.step_id!r} could not list "
                            f"its splits: {type(exc).__name__}: {exc}") from exc


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _build(
    plan: PhysicalPlan, placement: Mapping[str, int], workers: int, steps: dict[str, Step],
    par: dict[str, int], owners: dict[str, list[int]], updated: tuple[str, ...],
    reconfig_id: int, relocate: Mapping[str, int] | None = None,
    n_splits: Mapping[str, int] | None = None,
) -> Reconfiguration:
    relocate = relocate or {}
    n_splits = n_splits or {}
    chains = tuple(Chain(c.chain_id, c.steps, par[c.chain_id]) for c in plan.chains)
    chain_of = {sid: c for c in chains for sid in c.steps}
    old = {(c.edge, c.src_index, c.dst_index): c for c in plan.channels}
    next_id = max(plan.next_channel_id,
                  max((c.channel_id for c in plan.channels), default=-1) + 1)
    channels: list[Channel] = []
    new_ids: list[int] = []
    for e in plan.edges:
        src, dst = chain_of[e.src_step], chain_of[e.dst_step]
        if src is dst:
            continue
        pairs = ([(i, i) for i in range(src.parallelism)] if e.routing.kind == "forward"
                 else [(i, j) for i in range(src.parallelism) for j in range(dst.parallelism)])
        for i, j in pairs:
            moved = src.task_id(i) in relocate or dst.task_id(j) in relocate
            kept = None if moved else old.get((e, i, j))
            if kept is None:
                kept = Channel(next_id, e, src.task_id(i), i, dst.task_id(j), j)
                new_ids.append(next_id)
                next_id += 1
            channels.append(kept)
    channels.sort(key=lambda c: c.channel_id)
    new_owners = {sid: tuple(o) for sid, o in owners.items()}
    new_plan = dataclasses.replace(
        plan, steps=steps, parallelism={sid: par[chain_of[sid].chain_id] for sid in plan.order},
        chains=chains, channels=tuple(channels), key_group_owners=new_owners,
        next_channel_id=next_id,
    )
    moves = {
        sid: {g: (a, b) for g, (a, b) in enumerate(zip(plan.key_group_owners[sid], o))
              if a != b}
        for sid, o in new_owners.items()
    }
    for task in map(TaskId, relocate):  # every key group of a moving task goes with it
        chain_id, index = task.chain, task.index
        for sid in next(c for c in chains if c.chain_id == chain_id).steps:
            if sid in new_owners:
                moves.setdefault(sid, {}).update(
                    {g: (index, index) for g, o in enumerate(new_owners[sid]) if o == index})
    moves = {sid: m for sid, m in moves.items() if m}
    moved_splits: dict[str, dict[int, tuple[int, int]]] = {}
    for sid, n in n_splits.items():
        old_p, new_p = plan.chain_of(sid).parallelism, chain_of[sid].parallelism
        moved_splits[sid] = split_moves(n, old_p, new_p)
    for task in map(TaskId, relocate):  # every split of a moving source task goes with it
        chain_id, index = task.chain, task.index
        head = plan.chain_of(chain_id).steps[0]
        if head in n_splits:
            moved_splits.setdefault(head, {}).update(
                {s: (index, index) for s in splits_of(n_splits[head], par[chain_id], index)})
    moved_splits = {sid: m for sid, m in moved_splits.items() if m}
    old_tasks, new_tasks = set(plan.task_ids), set(new_plan.task_ids)
    rescaled = {c.chain_id for c in chains
                if c.parallelism != plan.chain_of(c.chain_id).parallelism}
    # The consumers of a source whose splits move restart its watermarks (markers first).
    reading = {chain_of[sid].chain_id for sid in moved_splits}
    consumers = {chain_of[e.dst_step].chain_id for e in plan.edges
                 if chain_of[e.src_step].chain_id in reading} - reading
    affected = frozenset(rescaled | {chain_of[sid].chain_id for sid in moves}
                         | {TaskId(t).chain for t in relocate} | reading | consumers)
    new_placement = {t: w for t, w in placement.items() if t in new_tasks}
    new_placement.update(relocate)
    for t in new_plan.task_ids:
        if t not in new_placement:
            new_placement[t] = t.index % workers
    spec = ReconfigSpec(
        reconfig_id, moves, affected,
        tuple(t for t in new_plan.task_ids if t not in old_tasks),
        tuple(t for t in plan.task_ids if t not in new_tasks),
        tuple(new_ids), updated, tuple(relocate), moved_splits,
    )
    return Reconfiguration(new_plan, new_placement, spec)


def stages(
    plan: PhysicalPlan, placement: Mapping[str, int], workers: int, ops: Sequence[Operation],
    max_groups: int,
) -> list[list[Operation]]:
    """``ops`` as a sequence of smaller reconfigurations, each moving at most ``max_groups``
    key groups (as Megaphone does: a short pause per piece instead of one long one).

    Only a request that changes one keyed step's owners (a rescale or moves) is split;
    anything else runs as one stage. Growing, the first stage adds the tasks (with some
    key groups each); shrinking, the last stage retires the emptied tasks.

    >>> from rheostat.plan.logical import SourceStep, KeyedProcessStep, Input, Port, Routing
    >>> from rheostat.plan.physical import lower
    >>> plan = lower((SourceStep("s", ()), KeyedProcessStep(
    ...     "p", (Input(Port("s"), Routing("hash", ("k",))),), keys=("k",))), 2, 16)
    >>> [[describe(o) for o in st] for st in stages(plan, {}, 1, [Rescale("p", 4)], 3)]
    [['rescale p to 4', 'owners of p'], ['owners of p'], ['owners of p']]
    """
    if max_groups <= 0 or not all(isinstance(o, Rescale | MoveKeyGroups) for o in ops):
        return [list(ops)]
    steps = {o.step for o in ops}
    if len(steps) != 1:
        return [list(ops)]
    (step,) = steps
    if step not in plan.key_group_owners:
        return [list(ops)]
    final = plan_reconfiguration(plan, placement, workers, ops, 0).plan
    old, new = plan.key_group_owners[step], final.key_group_owners[step]
    by_dest: dict[int, list[int]] = {}
    for g, (a, b) in enumerate(zip(old, new, strict=True)):
        if a != b:
            by_dest.setdefault(b, []).append(g)
    order = [g for batch in zip_longest(*by_dest.values()) for g in batch if g is not None]
    if len(order) <= max_groups:
        return [list(ops)]
    chunks = [order[i:i + max_groups] for i in range(0, len(order), max_groups)]
    p_old, p_new = plan.parallelism[step], final.parallelism[step]
    owners, out = list(old), []
    for i, chunk in enumerate(chunks):
        for g in chunk:
            owners[g] = new[g]
        stage: list[Operation] = [SetOwners(step, tuple(owners))]
        if (p_new > p_old and i == 0) or (p_new < p_old and i == len(chunks) - 1):
            stage.insert(0, Rescale(step, p_new))
        out.append(stage)
    return out
