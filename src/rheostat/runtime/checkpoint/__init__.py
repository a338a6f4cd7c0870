"""Checkpoint storage: parts written by tasks, a manifest committed last, verified restore.

The format (layout, manifest, checksums, commit point, retention) is documented in
``docs/checkpoint-format.md``.

>>> from rheostat.runtime.checkpoint import CheckpointStore
>>> store = CheckpointStore("memory://rheostat-doctest/package", keep=2)
>>> for cid in (1, 2, 3):
...     part = store.write_part(cid, "agg#0/state", f"state {cid}".encode())
...     _ = store.commit(cid, [part], {"flow": "demo"})
>>> [(c.checkpoint_id, c.status) for c in store.list()]
[(2, 'complete'), (3, 'complete')]
>>> store.latest().read_part("agg#0/state")
b'state 3'
>>> store.destroy()
"""

from rheostat.runtime.checkpoint.manifest import (
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    Manifest,
    ManifestError,
    PartInfo,
    decode_manifest,
    part_file_name,
)
from rheostat.runtime.checkpoint.store import (
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointStore,
    CheckpointWriteError,
    CorruptCheckpoint,
    CorruptCheckpointError,
    RestorePoint,
)

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "VERSION",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "CheckpointWriteError",
    "CorruptCheckpoint",
    "CorruptCheckpointError",
    "Manifest",
    "ManifestError",
    "PartInfo",
    "RestorePoint",
    "decode_manifest",
    "part_file_name",
]
