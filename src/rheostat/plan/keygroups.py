"""Key groups: the unit of keyed-state ownership, migration and checkpointing.

Keys hash to one of ``max_parallelism`` key groups; an owner table maps each key group to
the index of the task that owns it. The default table gives each task a contiguous range,
as Flink does, so that rescaling moves whole ranges.

>>> default_owners(2, 8)
(0, 0, 0, 0, 1, 1, 1, 1)
"""

from __future__ import annotations

import zlib
from array import array

DEFAULT_MAX_PARALLELISM = 4096


def default_owners(
    parallelism: int, max_parallelism: int = DEFAULT_MAX_PARALLELISM
) -> tuple[int, ...]:
    """Key group ``g`` belongs to task ``g * parallelism // max_parallelism``."""
    if not 1 <= parallelism <= max_parallelism:
        raise ValueError(f"parallelism must be in 1..{max_parallelism}, got {parallelism}")
    return tuple(g * parallelism // max_parallelism for g in range(max_parallelism))


def groups_of(owners: tuple[int, ...], task_index: int) -> list[int]:
    """The key groups that task ``task_index`` owns."""
    return [g for g, t in enumerate(owners) if t == task_index]


def owners_digest(owners: tuple[int, ...]) -> int:
    """A short, stable fingerprint of an owner table (kept in checkpoint manifests).

    >>> owners_digest((0, 1)) == owners_digest((0, 1)) != owners_digest((1, 0))
    True
    """
    return zlib.crc32(array("i", owners).tobytes())
