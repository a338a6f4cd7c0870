"""Where checkpoints live: a local directory or any ``fsspec`` URL.

Tasks write their parts (opaque bytes) straight into the store with :meth:`write_part`;
once every part is acknowledged the controller calls :meth:`commit`, which writes the
manifest last, with an HMAC-SHA256 under the deployment's checkpoint secret (see
``secret.py``). A checkpoint exists exactly when its manifest does. Restoring verifies the
manifest's MAC first, then every part's size and SHA-256 against the authenticated
manifest, before handing anything out. It falls back to the previous complete checkpoint
when one is damaged, and refuses one whose manifest is not authenticated.

On a local disk (plain paths, ``file://``) files are made 0600 and directories 0700;
remote stores keep their own access rules (``docs/security.md``).

>>> store = CheckpointStore("memory://rheostat-doctest/store",
...                         secret="a doctest secret, long enough")
>>> part = store.write_part(1, "src#0/offsets", b"\\x00\\x01")
>>> _ = store.commit(1, [part], {"flow": "demo"})
>>> point = store.latest()
>>> point.checkpoint_id, point.read_part("src#0/offsets")
(1, b'\\x00\\x01')
>>> store.destroy()
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from rheostat.runtime.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnauthenticatedCheckpointError,
)
from rheostat.runtime.checkpoint.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestAuthError,
    ManifestError,
    PartInfo,
    build_manifest,
    decode_manifest,
    encode_manifest,
)
from rheostat.runtime.checkpoint.secret import (
    ENV_SECRET,
    ENV_SECRET_FILE,
    CheckpointKey,
    make_private_dirs,
    resolve_key,
)

log = logging.getLogger(__name__)

_CHK_DIR = re.compile(r"chk-(\d+)")
_SAVEPOINT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_CHUNK = 8 << 20


@dataclass(frozen=True)
class CorruptCheckpoint:
    """A report of a checkpoint that restoring skipped."""

    checkpoint_id: int | None
    reason: str
    path: str


@dataclass(frozen=True)
class CheckpointInfo:
    """One entry of :meth:`CheckpointStore.list`."""

    checkpoint_id: int | None
    status: Literal["complete", "incomplete", "corrupt", "unauthenticated"]
    path: str
    savepoint: str | None = None
    reason: str | None = None


class _Incomplete(Exception):
    """No manifest: the checkpoint was never committed."""


class RestorePoint:
    """A verified checkpoint or savepoint; hands out its parts' bytes.

    Every part was hashed before this object was made. Parts read then are kept in memory
    (up to the store's ``cache_bytes``); others are read again and re-verified, raising
    :class:`CorruptCheckpointError` if they changed since. Picklable (without the cache),
    so a worker can read its own parts.
    """

    def __init__(
        self,
        store: CheckpointStore,
        path: str,
        manifest: Manifest,
        cache: dict[str, bytes] | None = None,
        skipped: tuple[CorruptCheckpoint, ...] = (),
    ) -> None:
        self.store, self.path, self.manifest = store, path, manifest
        self.skipped = skipped
        self._cache = cache or {}

    @property
    def checkpoint_id(self) -> int:
        return self.manifest.checkpoint_id

    @property
    def job(self) -> dict[str, Any]:
        return self.manifest.job

    @property
    def part_names(self) -> builtins.list[str]:
        return sorted(self.manifest.parts)

    def read_part(self, name: str) -> bytes:
        """The verified bytes of part ``name``."""
        if name not in self.manifest.parts:
            raise KeyError(f"{self.path} has no part {name!r}")
        if name in self._cache:
            return self._cache[name]
        part = self.manifest.parts[name]
        try:
            data = self.store.fs.cat_file(f"{self.path}/{part.file}")
        except FileNotFoundError:
            raise CorruptCheckpointError(self.path, f"part {name!r} disappeared") from None
        if len(data) != part.size or hashlib.sha256(data).hexdigest() != part.sha256:
            raise CorruptCheckpointError(self.path, f"part {name!r} changed after verification")
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}

    def __repr__(self) -> str:
        return f"RestorePoint({self.path!r}, parts={len(self.manifest.parts)})"


class CheckpointStore:
    """Checkpoints under ``<url>/checkpoints/chk-<id>/``, savepoints under ``savepoints/<name>/``.

    ``url`` is a local path or any fsspec URL; ``storage_options`` go to fsspec, or pass a
    ready ``filesystem`` (then ``url`` is a path inside it). The newest ``keep`` complete
    checkpoints are kept. ``fsync`` makes local writes durable against power loss.
    ``secret`` authenticates the manifests; without it the secret comes from
    ``RHEOSTAT_CHECKPOINT_SECRET``, ``RHEOSTAT_CHECKPOINT_SECRET_FILE`` or
    ``~/.rheostat/checkpoint-secret`` (see :mod:`rheostat.runtime.checkpoint.secret`).
    Picklable: the filesystem is opened lazily in each process. The secret does not travel:
    workers only write parts and read the parts of a restore point the controller
    verified; a process that unpickles a store and verifies manifests finds its own.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        keep: int = 3,
        storage_options: dict[str, Any] | None = None,
        filesystem: fsspec.AbstractFileSystem | None = None,
        fsync: bool = True,
        cache_bytes: int = 64 << 20,
        secret: bytes | str | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        url = os.fspath(url)
        if filesystem is None and "://" not in url:
            url = os.path.abspath(url)
        self.url, self.keep, self.fsync, self.cache_bytes = url, keep, fsync, cache_bytes
        self.storage_options = dict(storage_options or {})
        self._given_fs = filesystem is not None
        self._fs = filesystem
        self._root = filesystem._strip_protocol(url) if filesystem is not None else None
        self._known_corrupt: set[int] = set()
        self._secret = secret
        self._key: CheckpointKey | None = None

    # -- where things are ---------------------------------------------------------------

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            self._fs, self._root = url_to_fs(self.url, **self.storage_options)
        return self._fs

    @property
    def root(self) -> str:
        if self._root is None:
            _ = self.fs
        return str(self._root).rstrip("/")

    def checkpoint_path(self, checkpoint_id: int) -> str:
        return f"{self.root}/checkpoints/chk-{checkpoint_id:08d}"

    def savepoint_path(self, name: str) -> str:
        if not _SAVEPOINT_NAME.fullmatch(name):
            raise ValueError(f"savepoint name {name!r}: use letters, digits, '.', '_', '-'")
        return f"{self.root}/savepoints/{name}"

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_known_corrupt": set(), "_secret": None, "_key": None}
        if self._given_fs:  # a filesystem given by the caller travels with the store
            return state
        return {**state, "_fs": None, "_root": None}

    def __repr__(self) -> str:
        return f"CheckpointStore({self.url!r}, keep={self.keep})"

    def key(self, *, create: bool = False) -> CheckpointKey:
        """The key this store signs and verifies manifests with (found once, then kept).

        ``create`` makes the default secret file if there is none (committing does).
        Raises :class:`CheckpointSecretError` saying what to set.
        """
        if self._key is None:
            self._key = resolve_key(self._secret, create=create)
        return self._key

    # -- writing ------------------------------------------------------------------------

    def write_part(
        self, checkpoint_id: int, name: str, data: bytes | bytearray | memoryview
    ) -> PartInfo:
        """Store one part of checkpoint ``checkpoint_id``; thread- and process-safe.

        Raises :class:`CheckpointWriteError` if the store fails (the partial file is removed
        where possible; the caller then aborts the checkpoint).
        """
        info = PartInfo.of(name, data)
        directory = self.checkpoint_path(checkpoint_id)
        path = f"{directory}/{info.file}"
        try:
            committed = self.fs.exists(f"{directory}/{MANIFEST_NAME}")
            if not committed:
                self._makedirs(directory)
                self._write_file(path, memoryview(data).cast("B"))
        except Exception as err:
            self._remove_quietly(path)
            raise CheckpointWriteError(checkpoint_id, name, _describe(err)) from err
        if committed:
            raise CheckpointWriteError(checkpoint_id, name, "the checkpoint is already committed")
        return info

    def commit(
        self, checkpoint_id: int, parts: Iterable[PartInfo], job: dict[str, Any] | None = None
    ) -> Manifest:
        """Make checkpoint ``checkpoint_id`` complete by writing its manifest, then prune.

        Every part must have been written (checked against a listing of the directory).
        ``job`` is JSON metadata kept in the manifest (flow, plan fingerprint, parallelism...).
        Committing subsumes older checkpoints still in progress: retention deletes them.
        """
        manifest = build_manifest(checkpoint_id, parts, job or {})
        self._publish(self.checkpoint_path(checkpoint_id), manifest)
        self._retain()
        return manifest

    def abort(self, checkpoint_id: int) -> bool:
        """Delete an uncommitted checkpoint's directory, best effort; never a committed one."""
        directory = self.checkpoint_path(checkpoint_id)
        try:
            if self.fs.exists(f"{directory}/{MANIFEST_NAME}"):
                log.warning("not aborting checkpoint %d: it is already committed", checkpoint_id)
                return False
        except Exception as err:
            log.warning("aborting checkpoint %d: %s", checkpoint_id, _describe(err))
            return False
        return self._delete(directory)

    def promote_to_savepoint(self, checkpoint_id: int, name: str) -> Manifest:
        """Copy complete checkpoint ``checkpoint_id`` to savepoint ``name`` (verified bytes).

        Savepoints are never deleted by retention and outlive the job.
        """
        src, dst = self.checkpoint_path(checkpoint_id), self.savepoint_path(name)
        if self._has_manifest(dst):
            raise CheckpointError(f"savepoint {name!r} already exists")
        try:
            manifest, _ = self._verified_manifest(src, checkpoint_id)
        except _Incomplete:
            raise CheckpointNotFoundError(f"no complete checkpoint at {src}") from None
        self._delete(dst)  # leftovers of an earlier failed attempt
        try:
            for part in manifest.parts.values():
                self._copy_verified(src, dst, part)
            self._makedirs(dst)
            self._publish(dst, replace(manifest, kind="savepoint", savepoint=name))
        except BaseException:
            self._delete(dst)
            raise
        return replace(manifest, kind="savepoint", savepoint=name)

    def delete_savepoint(self, name: str) -> bool:
        return self._delete(self.savepoint_path(name))

    def destroy(self) -> None:
        """Delete everything under the root, savepoints included (tests, ``rheostat reset``)."""
        self._delete(self.root)

    # -- reading ------------------------------------------------------------------------

    def latest(
        self, *, reports: builtins.list[CorruptCheckpoint] | None = None
    ) -> RestorePoint | None:
        """The newest complete checkpoint that verifies, or ``None``.

        Damaged checkpoints on the way (a torn manifest, a part that fails its hash) are
        logged, appended to ``reports`` and skipped. A store that cannot be read (other
        than a missing file) raises :class:`CheckpointError` rather than silently falling
        further back.

        A manifest that is intact but not authenticated (another secret, a forgery, a
        version-1 checkpoint without a MAC) raises :class:`UnauthenticatedCheckpointError`
        instead of falling back. Falling back would be wrong in each case: with the wrong
        secret every checkpoint fails, so the job would quietly rewind to an older one or
        start from nothing (rows read again or lost, sinks' staged output discarded); after
        an upgrade it would quietly drop the job's state; and a store someone else writes
        to needs a person to look at it, not a job that goes on from a point the writer
        picked. Deleting the checkpoint, or fixing the secret, is a decision for the
        operator, which the message spells out.
        """
        skipped: builtins.list[CorruptCheckpoint] = []
        found = None
        for cid in sorted(self._checkpoint_ids(), reverse=True):
            path = self.checkpoint_path(cid)
            try:
                found = self._open(path, cid, hash_parts=True)
                break
            except _Incomplete:
                continue
            except UnauthenticatedCheckpointError:
                raise
            except CorruptCheckpointError as err:
                self._known_corrupt.add(cid)
                skipped.append(CorruptCheckpoint(cid, err.reason, path))
                log.warning("skipping checkpoint %d: %s", cid, err.reason)
        if reports is not None:
            reports.extend(skipped)
        if found is None:
            if skipped:
                log.error("no checkpoint in %s verifies (%d corrupt)", self.url, len(skipped))
            return None
        found.skipped = tuple(skipped)
        return found

    def load(self, checkpoint_id: int) -> RestorePoint:
        """Checkpoint ``checkpoint_id``, fully verified (no fallback)."""
        return self._load(self.checkpoint_path(checkpoint_id), checkpoint_id)

    def load_savepoint(self, name: str) -> RestorePoint:
        """Savepoint ``name``, fully verified."""
        return self._load(self.savepoint_path(name), None)

    def list(self, *, verify: bool = False) -> builtins.list[CheckpointInfo]:
        """Every checkpoint directory, oldest first, with its status.

        Without ``verify`` only the manifest and the part sizes are checked (cheap); with it
        every part is hashed as well.
        """
        return [
            self._status(self.checkpoint_path(cid), cid, verify)
            for cid in sorted(self._checkpoint_ids())
        ]

    def savepoints(self, *, verify: bool = False) -> builtins.list[CheckpointInfo]:
        """Every savepoint directory, by name, with its status."""
        base = f"{self.root}/savepoints"
        names = sorted(n for n, kind in self._entries(base).items() if kind == "directory")
        return [
            replace(self._status(f"{base}/{n}", None, verify), savepoint=n) for n in names
        ]

    def next_checkpoint_id(self) -> int:
        """One more than any checkpoint id in the store (complete or not); 1 when empty.

        Use it when a job (re)starts, so a new checkpoint never lands in an old directory.
        """
        return max(self._checkpoint_ids(), default=0) + 1

    # -- internals ----------------------------------------------------------------------

    def _load(self, path: str, cid: int | None) -> RestorePoint:
        try:
            return self._open(path, cid, hash_parts=True)
        except _Incomplete:
            raise CheckpointNotFoundError(f"no complete checkpoint at {path}") from None

    def _status(self, path: str, cid: int | None, verify: bool) -> CheckpointInfo:
        try:
            point = self._open(path, cid, hash_parts=verify)
        except _Incomplete:
            return CheckpointInfo(cid, "incomplete", path)
        except UnauthenticatedCheckpointError as err:
            return CheckpointInfo(cid, "unauthenticated", path, reason=err.reason)
        except CorruptCheckpointError as err:
            return CheckpointInfo(cid, "corrupt", path, reason=err.reason)
        return CheckpointInfo(point.checkpoint_id, "complete", path, point.manifest.savepoint)

    def _open(self, path: str, cid: int | None, *, hash_parts: bool) -> RestorePoint:
        manifest, sizes = self._verified_manifest(path, cid)
        cache: dict[str, bytes] = {}
        budget = self.cache_bytes
        for part in manifest.parts.values():
            if sizes.get(part.file) != part.size:
                have = sizes.get(part.file)
                reason = "is missing" if have is None else f"is {have} bytes, not {part.size}"
                raise CorruptCheckpointError(path, f"part {part.name!r} ({part.file}) {reason}")
        if hash_parts:
            for part in manifest.parts.values():
                data = self._hash_part(path, part, keep=part.size <= budget)
                if data is not None:
                    cache[part.name] = data
                    budget -= part.size
        return RestorePoint(self, path, manifest, cache)

    def _verified_manifest(self, path: str, cid: int | None) -> tuple[Manifest, dict[str, int]]:
        """The decoded manifest and the sizes of the files next to it."""
        try:
            files = self._files(path)
        except FileNotFoundError:
            raise _Incomplete from None
        except Exception as err:
            raise CheckpointError(f"cannot list {path}: {_describe(err)}") from err
        if MANIFEST_NAME not in files:
            raise _Incomplete
        raw = self._read(path, f"{path}/{MANIFEST_NAME}")
        try:
            manifest = decode_manifest(raw, self.key())
        except ManifestAuthError as err:
            raise UnauthenticatedCheckpointError(path, self._advice(err)) from None
        except ManifestError as err:
            raise CorruptCheckpointError(path, str(err)) from None
        if cid is not None and manifest.checkpoint_id != cid:
            raise CorruptCheckpointError(
                path, f"the manifest is for checkpoint {manifest.checkpoint_id}"
            )
        if cid is None and path.rsplit("/", 1)[-1] != manifest.savepoint:
            raise CorruptCheckpointError(path, f"the manifest is for savepoint "
                                               f"{manifest.savepoint!r}")
        return manifest, files

    def _advice(self, err: ManifestAuthError) -> str:
        """What an unauthenticated manifest means and what to do, after ``err``'s facts."""
        if err.kind == "legacy":
            return (f"{err}; it is not restored: start the job afresh (no --resume), or "
                    "delete it (see docs/security.md, \"Checkpoints\")")
        if err.kind == "other-key":
            return (f"{err}; this process's secret comes from {self.key().source}. If the "
                    "checkpoint is yours, give this process the secret that wrote it "
                    f"({ENV_SECRET}, {ENV_SECRET_FILE} or CheckpointStore(secret=...)); if "
                    f"it is not, someone wrote to {self.url} who should not: delete it and "
                    "find out who (docs/security.md, \"Checkpoints\")")
        return (f"{err}; it is not restored. Someone who can write to {self.url} but lacks "
                "the secret made it (or it is damaged): delete it and find out who can "
                "write there (docs/security.md, \"Checkpoints\")")

    def _hash_part(self, path: str, part: PartInfo, *, keep: bool) -> bytes | None:
        file = f"{path}/{part.file}"
        digest, size, data = hashlib.sha256(), 0, None
        if keep:
            data = self._read(path, file)
            digest.update(data)
            size = len(data)
        else:
            try:
                with self.fs.open(file, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
            except FileNotFoundError:
                raise CorruptCheckpointError(path, f"part {part.name!r} is missing") from None
            except Exception as err:
                raise CheckpointError(f"cannot read {file}: {_describe(err)}") from err
        if size != part.size:
            raise CorruptCheckpointError(
                path, f"part {part.name!r} is {size} bytes, not {part.size}"
            )
        if digest.hexdigest() != part.sha256:
            raise CorruptCheckpointError(path, f"part {part.name!r} fails its sha256 check")
        return data

    def _read(self, checkpoint: str, file: str) -> bytes:
        try:
            return self.fs.cat_file(file)
        except FileNotFoundError:
            raise CorruptCheckpointError(checkpoint, f"{file} is missing") from None
        except Exception as err:
            raise CheckpointError(f"cannot read {file}: {_describe(err)}") from err

    def _publish(self, directory: str, manifest: Manifest) -> None:
        """Write the manifest last and atomically: the commit point."""
        cid = manifest.checkpoint_id
        try:
            files = self._files(directory)
        except FileNotFoundError:
            files = {}
        except Exception as err:
            raise CheckpointWriteError(cid, MANIFEST_NAME, _describe(err)) from err
        if MANIFEST_NAME in files:
            raise CheckpointError(f"{directory} is already committed")
        for part in manifest.parts.values():
            if files.get(part.file) != part.size:
                found = files.get(part.file)
                raise CheckpointWriteError(
                    cid, part.name, "not in the store" if found is None
                    else f"{found} bytes in the store, {part.size} acknowledged",
                )
        data = encode_manifest(manifest, self.key(create=True))
        final, tmp = f"{directory}/{MANIFEST_NAME}", f"{directory}/.{uuid.uuid4().hex}.tmp"
        try:
            self._makedirs(directory)
            self._sync_dir(directory)  # the parts' directory entries, before the manifest
            self._write_file(tmp, data)
            self.fs.mv(tmp, final)
            self._sync_dir(directory)
        except Exception as err:
            if self._holds(final, data):  # e.g. copy done, delete of tmp failed
                log.warning("committing %s: %s (the manifest is in place)", directory, err)
                self._remove_quietly(tmp)
                return
            self._remove_quietly(tmp)
            raise CheckpointWriteError(cid, MANIFEST_NAME, _describe(err)) from err

    def _retain(self) -> None:
        """Keep the newest ``keep`` complete checkpoints and anything newer than them."""
        try:
            ids = sorted(self._checkpoint_ids(), reverse=True)
            complete = [
                c for c in ids
                if c not in self._known_corrupt and self._has_manifest(self.checkpoint_path(c))
            ]
        except Exception as err:
            log.warning("checkpoint retention skipped: %s", _describe(err))
            return
        if not complete:
            return
        kept = set(complete[: self.keep])
        for cid in ids:
            if cid not in kept and cid < complete[0]:
                self._delete(self.checkpoint_path(cid))
                self._known_corrupt.discard(cid)

    def _copy_verified(self, src: str, dst: str, part: PartInfo) -> None:
        digest = hashlib.sha256()
        try:
            self._makedirs(dst)
            with self.fs.open(f"{src}/{part.file}", "rb") as fin, \
                    self._create(f"{dst}/{part.file}") as fout:
                while chunk := fin.read(_CHUNK):
                    digest.update(chunk)
                    fout.write(chunk)
                if self._local_durable():
                    fout.flush()
                    os.fsync(fout.fileno())
        except Exception as err:
            raise CheckpointWriteError(_dir_checkpoint_id(src), part.name, _describe(err)) from err
        if digest.hexdigest() != part.sha256:
            raise CorruptCheckpointError(src, f"part {part.name!r} fails its sha256 check")

    def _write_file(self, path: str, data: bytes | memoryview) -> None:
        with self._create(path) as f:
            f.write(data)
            if self._local_durable():
                f.flush()
                os.fsync(f.fileno())

    def _local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def _create(self, path: str) -> Any:
        """``path`` opened to write; on a local disk readable by its owner only (0600).

        The file is made 0600 first (a file that was there is set so), then opened
        through the filesystem, which truncates it and keeps the mode.
        """
        if self._local():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        return self.fs.open(path, "wb")

    def _makedirs(self, directory: str) -> None:
        """``directory`` and its parents; made 0700 on a local disk (others: the store's)."""
        if self._local():
            make_private_dirs(directory)
        else:
            self.fs.makedirs(directory, exist_ok=True)

    def _local_durable(self) -> bool:
        return self.fsync and self._local()

    def _sync_dir(self, directory: str) -> None:
        if self._local_durable() and hasattr(os, "O_DIRECTORY"):
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _entries(self, path: str) -> dict[str, str]:
        """Base name -> ``"file"`` or ``"directory"``; empty when ``path`` does not exist."""
        self.fs.invalidate_cache(path)
        try:
            listing = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as err:
            raise CheckpointError(f"cannot list {path}: {_describe(err)}") from err
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e["type"] for e in listing}

    def _files(self, path: str) -> dict[str, int]:
        """Base name -> size of the files in ``path``; raises FileNotFoundError if absent."""
        self.fs.invalidate_cache(path)
        listing = self.fs.ls(path, detail=True)
        return {
            e["name"].rstrip("/").rsplit("/", 1)[-1]: e["size"]
            for e in listing if e["type"] == "file"
        }

    def _checkpoint_ids(self) -> builtins.list[int]:
        entries = self._entries(f"{self.root}/checkpoints")
        return [
            int(m.group(1)) for name, kind in entries.items()
            if kind == "directory" and (m := _CHK_DIR.fullmatch(name))
        ]

    def _has_manifest(self, directory: str) -> bool:
        return bool(self.fs.exists(f"{directory}/{MANIFEST_NAME}"))

    def _holds(self, path: str, data: bytes) -> bool:
        try:
            return bool(self.fs.cat_file(path) == data)
        except Exception:
            return False

    def _delete(self, path: str) -> bool:
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
            return True
        except Exception as err:
            log.warning("could not delete %s: %s", path, _describe(err))
            return False

    def _remove_quietly(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except Exception:
            pass


def _dir_checkpoint_id(checkpoint_dir: str) -> int:
    """The checkpoint id of a ``chk-<id>`` directory path (``-1`` if it is not one)."""
    m = _CHK_DIR.fullmatch(checkpoint_dir.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else -1


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
