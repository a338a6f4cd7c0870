"""Checkpoint storage: parts written by tasks, a manifest committed last, verified restore.

The format (layout, manifest, checksums, MAC, commit point, retention) is documented in
``docs/checkpoint-format.md``; the secret and the threat model in ``docs/security.md``.

>>> from rheostat.runtime.checkpoint import CheckpointStore
>>> store = CheckpointStore("memory://rheostat-doctest/package", keep=2,
...                         secret="a doctest secret, long enough")
>>> for cid in (1, 2, 3):
...     part = store.write_part(cid, "agg#0/state", f"state {cid}".encode())
...     _ = store.commit(cid, [part], {"flow": "demo"})
>>> [(c.checkpoint_id, c.status) for c in store.list()]
[(2, 'complete'), (3, 'complete')]
>>> store.latest().read_part("agg#0/state")
b'state 3'
>>> store.destroy()
"""

from rheostat.runtime.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSecretError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnauthenticatedCheckpointError,
)
from rheostat.runtime.checkpoint.manifest import (
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    Manifest,
    ManifestAuthError,
    ManifestError,
    PartInfo,
    decode_manifest,
    part_file_name,
)
from rheostat.runtime.checkpoint.secret import (
    ENV_SECRET,
    ENV_SECRET_FILE,
    CheckpointKey,
    default_secret_path,
)
from rheostat.runtime.checkpoint.store import (
    CheckpointInfo,
    CheckpointStore,
    CorruptCheckpoint,
    RestorePoint,
)

__all__ = [
    "ENV_SECRET",
    "ENV_SECRET_FILE",
    "FORMAT",
    "MANIFEST_NAME",
    "VERSION",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointKey",
    "CheckpointNotFoundError",
    "CheckpointSecretError",
    "CheckpointStore",
    "CheckpointWriteError",
    "CorruptCheckpoint",
    "CorruptCheckpointError",
    "Manifest",
    "ManifestAuthError",
    "ManifestError",
    "PartInfo",
    "RestorePoint",
    "UnauthenticatedCheckpointError",
    "decode_manifest",
    "default_secret_path",
    "part_file_name",
]
