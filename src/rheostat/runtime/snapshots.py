"""Task snapshots as checkpoint parts, and the restore each new task builds from them.

A task's snapshot becomes one part per stateful step, named ``"<task>/<step>"``, plus
``"<task>/_task"`` with its source positions and watermark; each part is a pickle. On
restore, a task of a keyed step reads the parts of *every* old task of its chain and keeps
the key groups it now owns, so a job can resume at another parallelism; other state goes
from old task ``j`` to new task ``j % parallelism``.

>>> from rheostat.runtime.task import TaskSnapshot
>>> sorted(encode_snapshot(TaskSnapshot("w#0", 3, {"w": {1: "s"}}, None, 10)))
['w#0/_task', 'w#0/w']
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any

from rheostat.plan.logical import STATEFUL_KINDS
from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.task import TaskRestore, TaskSnapshot

TASK_PART = "_task"


def encode_snapshot(snapshot: TaskSnapshot) -> dict[str, bytes]:
    parts = {
        f"{snapshot.task_id}/{step}": pickle.dumps(state, protocol=5)
        for step, state in snapshot.states.items()
    }
    parts[f"{snapshot.task_id}/{TASK_PART}"] = pickle.dumps(
        {"sources": snapshot.sources, "watermark": snapshot.watermark}, protocol=5
    )
    return parts


def restore_for_task(
    plan: PhysicalPlan,
    task_id: str,
    part_names: Iterable[str],
    old_parallelism: dict[str, int],
    read: Callable[[str], bytes],
) -> TaskRestore:
    """The state task ``task_id`` of ``plan`` starts from, read from a checkpoint's parts."""
    chain_id, index_text = task_id.rsplit("#", 1)
    index = int(index_text)
    chain = plan.chain_of(chain_id)
    names = set(part_names)
    old_p = old_parallelism.get(chain_id, chain.parallelism)
    mine = [j for j in range(old_p) if j % chain.parallelism == index]
    restore = TaskRestore()
    chain_keyed = any(plan.steps[s].kind in STATEFUL_KINDS for s in chain.steps)
    for step_id in chain.steps:
        keyed = plan.steps[step_id].kind in STATEFUL_KINDS
        sources = range(old_p) if keyed else mine
        parts = [
            pickle.loads(read(name)) for j in sources
            if (name := f"{chain_id}#{j}/{step_id}") in names
        ]
        if parts:
            restore.states[step_id] = parts
    marks = []
    for j in range(old_p) if chain_keyed else mine:
        name = f"{chain_id}#{j}/{TASK_PART}"
        if name in names:
            meta = pickle.loads(read(name))
            if meta["sources"] is not None and j in mine:
                if old_p != chain.parallelism:
                    raise ValueError(
                        f"source step {chain.steps[0]!r} ran with parallelism {old_p} in the "
                        f"checkpoint and {chain.parallelism} now; resume sources at the "
                        "parallelism they had"
                    )
                restore.sources = meta["sources"]
            if meta["watermark"] is not None:
                marks.append(meta["watermark"])
    restore.watermark = min(marks) if marks else None
    return restore


def write_parts(store: Any, checkpoint_id: int, blobs: dict[str, bytes]) -> tuple[Any, ...]:
    """Write a snapshot's parts to the store; returns their PartInfo."""
    return tuple(store.write_part(checkpoint_id, name, data) for name, data in blobs.items())


def build_restores(
    plan: PhysicalPlan, task_ids: Iterable[str], point: Any, old_parallelism: dict[str, int]
) -> dict[str, TaskRestore]:
    """Every task's restore from a verified checkpoint (its RestorePoint)."""
    names = tuple(point.part_names)
    return {
        t: restore_for_task(plan, t, names, old_parallelism, point.read_part) for t in task_ids
    }
