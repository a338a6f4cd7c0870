"""Routing a batch over the tasks of the next step: vectorised, one ``take`` per batch.

>>> import pyarrow as pa
>>> r = HashRouter(("k",), owners=(0, 0, 1, 1), max_parallelism=4)
>>> parts = r.route(pa.record_batch({"k": list(range(8))}))
>>> sorted(dest for dest, _ in parts), sum(b.num_rows for _, b in parts)
([0, 1], 8)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from rheostat.plan.logical import Routing
from rheostat.runtime.keys import key_groups

Routed = list[tuple[int, pa.RecordBatch]]


class Router:
    def route(self, batch: pa.RecordBatch) -> Routed:
        raise NotImplementedError


class ForwardRouter(Router):
    def __init__(self, own_index: int) -> None:
        self.own_index = own_index

    def route(self, batch: pa.RecordBatch) -> Routed:
        return [(self.own_index, batch)]


class RebalanceRouter(Router):
    """Whole batches round-robin, starting at the sender's own index to spread load."""

    def __init__(self, targets: int, start: int = 0) -> None:
        self.targets = targets
        self._next = start % targets

    def route(self, batch: pa.RecordBatch) -> Routed:
        dest = self._next
        self._next = (self._next + 1) % self.targets
        return [(dest, batch)]


class BroadcastRouter(Router):
    def __init__(self, targets: int) -> None:
        self.targets = targets

    def route(self, batch: pa.RecordBatch) -> Routed:
        return [(i, batch) for i in range(self.targets)]


class HashRouter(Router):
    """Hash key columns to key groups, look up their owners, split with one ``take``.

    ``group_rows[g]`` counts the rows routed in key group ``g`` so far (the sensors' load
    per key group: one ``bincount`` over the groups the routing computes anyway).
    """

    def __init__(self, keys: Sequence[str], owners: Sequence[int], max_parallelism: int) -> None:
        self.keys = tuple(keys)
        self.max_parallelism = max_parallelism
        self.group_rows = np.zeros(max_parallelism, dtype=np.int64)
        self.set_owners(owners)

    def set_owners(self, owners: Sequence[int]) -> None:
        """Install a new owner table (the control plane changes it at run time)."""
        if len(owners) != self.max_parallelism:
            raise ValueError("owner table must have one entry per key group")
        self.owners = np.asarray(owners, dtype=np.int64)

    def route(self, batch: pa.RecordBatch) -> Routed:
        if batch.num_rows == 0:
            return []
        groups = key_groups(batch, self.keys, self.max_parallelism)
        self.group_rows += np.bincount(groups, minlength=self.max_parallelism)
        dest = self.owners[groups]
        first = dest[0]
        if (dest == first).all():
            return [(int(first), batch)]
        order = np.argsort(dest, kind="stable")
        counts = np.bincount(dest)
        shuffled = batch.take(pa.array(order))
        out: Routed = []
        offset = 0
        for target, n in enumerate(counts):
            if n:
                out.append((target, shuffled.slice(offset, int(n))))
                offset += int(n)
        return out


def make_router(
    routing: Routing, own_index: int, targets: int,
    owners: Sequence[int] | None, max_parallelism: int,
) -> Router:
    if routing.kind == "forward":
        return ForwardRouter(own_index)
    if routing.kind == "rebalance":
        return RebalanceRouter(targets, own_index)
    if routing.kind == "broadcast":
        return BroadcastRouter(targets)
    if owners is None:
        raise ValueError("hash routing needs the downstream step's key-group owners")
    return HashRouter(routing.keys, owners, max_parallelism)
