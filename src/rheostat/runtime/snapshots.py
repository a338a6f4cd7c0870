"""Task snapshots as checkpoint parts, and the restore each new task builds from them.

A task's snapshot becomes one part per stateful step, named ``"<task>/<step>"``, plus
``"<task>/_task"`` with its source splits' states (descriptor, position, watermark state)
and its watermark; each part is a pickle. On restore, a task of a keyed step reads the
parts of *every* old task of its chain and keeps the key groups it now owns, and a source
task gathers the states of every split from every old task's ``_task`` part and reads
those it now owns, so a job can resume at another parallelism; other state goes from old
task ``j`` to new task ``j % parallelism``.

>>> from rheostat.runtime.task import TaskSnapshot
>>> sorted(encode_snapshot(TaskSnapshot("w#0", 3, {"w": {1: "s"}}, None, 10)))
['w#0/_task', 'w#0/w']
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from rheostat.plan.ids import TaskId
from rheostat.plan.keygroups import owners_digest
from rheostat.plan.logical import STATEFUL_KINDS
from rheostat.plan.physical import PhysicalPlan
from rheostat.runtime.source import UNRECORDED, SplitState
from rheostat.runtime.task import TaskRestore, TaskSnapshot

TASK_PART = "_task"


def encode_snapshot(snapshot: TaskSnapshot) -> dict[str, bytes]:
    """One part per stateful step plus the task's own; Arrow data travels as Arrow IPC."""
    parts = {
        f"{snapshot.task_id}/{step}": dumps_state(state)
        for step, state in snapshot.states.items()
    }
    parts[f"{snapshot.task_id}/{TASK_PART}"] = dumps_state(
        {"sources": snapshot.sources, "watermark": snapshot.watermark}
    )
    return parts


class _StatePickler(pickle.Pickler):
    """Pickles Arrow tables and batches as IPC streams.

    Plain pickling of a table writes every chunk with the whole buffer it slices (group-by
    results are slices of one buffer), so a snapshot grew with the square of its rows;
    the IPC writer writes only the sliced range.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, pa.Table | pa.RecordBatch):
            return _from_ipc, (_to_ipc(obj), isinstance(obj, pa.Table))
        return NotImplemented


def _to_ipc(data: pa.Table | pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes, table: bool) -> pa.Table | pa.RecordBatch:
    reader = pa.ipc.open_stream(pa.py_buffer(blob))
    if table:
        return reader.read_all()
    return reader.read_next_batch()


def dumps_state(state: Any) -> bytes:
    """Serialise operator state for a checkpoint part (pickle, Arrow data as IPC).

    >>> import pickle, pyarrow as pa
    >>> t = pa.table({"x": [1, 2, 3]}).slice(1)
    >>> pickle.loads(dumps_state({"t": t}))["t"].to_pydict()
    {'x': [2, 3]}
    """
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=5).dump(state)
    return buffer.getvalue()


def restore_for_task(
    plan: PhysicalPlan,
    task_id: str,
    part_names: Iterable[str],
    old_parallelism: dict[str, int],
    read: Callable[[str], bytes],
    regrouped: frozenset[str] = frozenset(),
) -> TaskRestore:
    """The state task ``task_id`` of ``plan`` starts from, read from a checkpoint's parts.

    ``regrouped``: keyed steps whose key groups had other owners in the checkpoint.
    """
    task = TaskId(task_id)
    chain_id, index = task.chain, task.index
    chain = plan.chain_of(chain_id)
    names = set(part_names)
    # Tasks a live rescale retired leave their final parts in later checkpoints (their
    # sinks' transactions among them): they count as old tasks too.
    indexes = [t.index for t in (TaskId(n.split("/", 1)[0]) for n in names)
               if t.chain == chain_id]
    old_p = max([old_parallelism.get(chain_id, chain.parallelism), *(i + 1 for i in indexes)])
    mine = [j for j in range(old_p) if j % chain.parallelism == index]
    # Keyed state moves between tasks only when the parallelism or the owners changed:
    # otherwise a task's key groups are the ones it had, and it reads its own parts alone.
    rescaled = old_p != chain.parallelism or any(s in regrouped for s in chain.steps)
    restore = TaskRestore()
    chain_keyed = any(plan.steps[s].kind in STATEFUL_KINDS for s in chain.steps)
    is_source = plan.steps[chain.steps[0]].kind == "source"
    for step_id in chain.steps:
        keyed = plan.steps[step_id].kind in STATEFUL_KINDS
        sources = range(old_p) if keyed and rescaled else mine
        parts = [
            pickle.loads(read(name)) for j in sources
            if (name := f"{TaskId.of(chain_id, j)}/{step_id}") in names
        ]
        if parts:
            restore.states[step_id] = parts
    marks = []
    splits: dict[int, SplitState] = {}
    marked = range(old_p) if chain_keyed and rescaled else mine
    # A source task reads every old task's part: its splits may have been anyone's.
    for j in range(old_p) if is_source else marked:
        name = f"{TaskId.of(chain_id, j)}/{TASK_PART}"
        if name in names:
            meta = pickle.loads(read(name))
            if meta["sources"]:
                _gather_splits(chain.steps[0], splits, meta["sources"], j,
                               same_parallelism=old_p == chain.parallelism)
            if meta["watermark"] is not None and j in marked:
                marks.append(meta["watermark"])
    if is_source:
        restore.sources = splits
    restore.watermark = min(marks) if marks else None
    return restore


def _gather_splits(
    step_id: str, into: dict[int, SplitState], saved: dict[int, Any], task: int,
    same_parallelism: bool,
) -> None:
    """Add old task ``task``'s split states to ``into``: each split is in one task's part
    (or, ended, in the final parts of finished tasks that read it before)."""
    for sid, st in saved.items():
        if not isinstance(st, SplitState):  # a bare position, from before splits could move
            if not same_parallelism:
                raise ValueError(
                    f"source step {step_id!r}: the checkpoint keeps bare read positions "
                    "(written before sources could be rescaled); resume it at the "
                    "parallelism it had, or start afresh")
            st = SplitState(UNRECORDED, st)
        if sid in into:
            # A finished task's final part keeps the ended splits a rescale gave away.
            if st.ended and into[sid].ended:
                continue
            raise ValueError(f"source step {step_id!r}: split {sid} is in the checkpoint "
                             f"twice (task #{task} has it too); the checkpoint is inconsistent")
        into[sid] = st


def write_parts(store: Any, checkpoint_id: int, blobs: dict[str, bytes]) -> tuple[Any, ...]:
    """Write a snapshot's parts to the store; returns their PartInfo."""
    return tuple(store.write_part(checkpoint_id, name, data) for name, data in blobs.items())


def write_snapshot(store: Any, snapshot: TaskSnapshot) -> tuple[Any, ...]:
    """Serialise and write a snapshot (off the task thread: state objects are immutable)."""
    return write_parts(store, snapshot.checkpoint_id, encode_snapshot(snapshot))


def build_restores(
    plan: PhysicalPlan, task_ids: Iterable[str], point: Any, old_parallelism: dict[str, int]
) -> dict[str, TaskRestore]:
    """Every task's restore from a verified checkpoint (its RestorePoint)."""
    names = tuple(point.part_names)
    recorded = point.job.get("owners")
    regrouped = frozenset(
        sid for sid, owners in plan.key_group_owners.items()
        if recorded is None or recorded.get(sid) != owners_digest(owners)
    )
    return {
        t: restore_for_task(plan, t, names, old_parallelism, point.read_part, regrouped)
        for t in task_ids
    }
