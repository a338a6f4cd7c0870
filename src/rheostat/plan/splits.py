"""Which source task reads which split: one pure function of the split count and the
parallelism.

``split_owners(n, p)`` gives each of ``n`` splits the index of the task of ``p`` that reads
it. It is balanced (task split counts differ by at most one), deterministic, and moves
as few splits as it can between any two parallelisms: growing, old tasks only give
splits away (to the new tasks); shrinking, the remaining tasks only take the splits of
the retired ones. With ``p >= n``, task ``i`` reads split ``i`` (as ``splits[i::p]`` did).

The tables come from the identity at ``p = n`` by retiring the highest task one at a
time and giving each of its splits, in order, to the task with the fewest (the lowest
index on a tie).

>>> split_owners(4, 2)
(0, 1, 1, 0)
>>> split_owners(4, 3), split_owners(3, 5)
((0, 1, 2, 0), (0, 1, 2))
>>> split_moves(4, 2, 3)
{2: (1, 2)}
"""

from __future__ import annotations

import functools
import heapq


@functools.lru_cache(maxsize=64)
def split_owners(splits: int, parallelism: int) -> tuple[int, ...]:
    """The index of the task that reads each of ``splits`` splits at ``parallelism``."""
    if splits < 0 or parallelism < 1:
        raise ValueError(f"need splits >= 0 and parallelism >= 1, got {splits} and "
                         f"{parallelism}")
    owners = list(range(splits))
    if parallelism >= splits:
        return tuple(owners)
    held: list[list[int]] = [[s] for s in range(splits)]
    heap = [(1, t) for t in range(splits)]  # (splits held, task); stale entries skipped
    for retiring in range(splits - 1, parallelism - 1, -1):
        for s in held[retiring]:
            while True:
                size, t = heapq.heappop(heap)
                if t < retiring and size == len(held[t]):
                    break
            held[t].append(s)
            owners[s] = t
            heapq.heappush(heap, (size + 1, t))
        held[retiring] = []
    return tuple(owners)


def split_moves(splits: int, old: int, new: int) -> dict[int, tuple[int, int]]:
    """``{split: (old owner, new owner)}`` for the splits that change task when the
    parallelism goes from ``old`` to ``new``."""
    before, after = split_owners(splits, old), split_owners(splits, new)
    return {s: (a, b) for s, (a, b) in enumerate(zip(before, after)) if a != b}


def splits_of(splits: int, parallelism: int, index: int) -> list[int]:
    """The splits that task ``index`` of ``parallelism`` reads, in order."""
    return [s for s, t in enumerate(split_owners(splits, parallelism)) if t == index]
