"""The checkpoint store: commit point, retention, savepoints, corruption, failing stores."""

from __future__ import annotations

import errno
import json
import pickle
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given
from hypothesis import strategies as st

from rheostat.runtime.checkpoint import (
    MANIFEST_NAME,
    VERSION,
    CheckpointError,
    CheckpointKey,
    CheckpointNotFoundError,
    CheckpointStore,
    CheckpointWriteError,
    CorruptCheckpointError,
    ManifestError,
    PartInfo,
    decode_manifest,
    part_file_name,
)
from rheostat.runtime.checkpoint.manifest import build_manifest, encode_manifest


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        s = CheckpointStore(tmp_path / "store")
    else:
        s = CheckpointStore(f"memory://rheostat-test/{uuid.uuid4().hex}")
    yield s
    s.destroy()


def checkpoint(store: CheckpointStore, cid: int, parts: dict[str, bytes] | None = None):
    if parts is None:
        parts = {"src#0/offsets": b"o%d" % cid, "agg#1/state": b"s" * cid}
    infos = [store.write_part(cid, name, data) for name, data in parts.items()]
    return store.commit(cid, infos, {"flow": "f", "parallelism": 2})


def ids(store: CheckpointStore) -> list[tuple[int | None, str]]:
    return [(c.checkpoint_id, c.status) for c in store.list()]


# -- round trip and the commit point ----------------------------------------------------


def test_round_trip(store):
    parts = {
        "window#3/state": b"\x00" * 1000,
        "Window#3/state": b"upper case is a different part",
        "src.v2#0/offsets": bytearray(b"\xff\xfe"),
        "empty": b"",
        "ünïcode/τ": memoryview(b"abc"),
        "arrow": pa.py_buffer(b"from an arrow buffer"),
        "long/" + "x" * 400: b"long name",
    }
    infos = [store.write_part(42, name, data) for name, data in parts.items()]
    manifest = store.commit(42, infos, {"flow": "nexmark", "steps": ["a", "b"], "max_p": 4096})
    assert manifest.checkpoint_id == 42 and manifest.kind == "checkpoint"
    point = store.latest()
    assert point is not None and point.skipped == ()
    assert point.checkpoint_id == 42
    assert point.job == {"flow": "nexmark", "steps": ["a", "b"], "max_p": 4096}
    assert point.part_names == sorted(parts)
    for name, data in parts.items():
        assert point.read_part(name) == bytes(memoryview(data))
    assert store.load(42).read_part("empty") == b""
    with pytest.raises(KeyError, match="no part"):
        point.read_part("nope")
    assert ids(store) == [(42, "complete")]


def test_no_manifest_means_no_checkpoint(store):
    checkpoint(store, 1)
    store.write_part(2, "src#0/offsets", b"written, never committed")
    point = store.latest()
    assert point is not None and point.checkpoint_id == 1
    assert ids(store) == [(1, "complete"), (2, "incomplete")]
    with pytest.raises(CheckpointNotFoundError):
        store.load(2)
    assert store.next_checkpoint_id() == 3


def test_empty_store(store):
    assert store.latest() is None
    assert store.list() == [] and store.savepoints() == []
    assert store.next_checkpoint_id() == 1


def test_commit_leaves_only_parts_and_manifest(store):
    manifest = checkpoint(store, 1)
    names = {p.rsplit("/", 1)[-1] for p in store.fs.ls(store.checkpoint_path(1), detail=False)}
    assert names == {MANIFEST_NAME} | {p.file for p in manifest.parts.values()}
    raw = store.fs.cat_file(f"{store.checkpoint_path(1)}/{MANIFEST_NAME}")
    doc = json.loads(raw)
    assert doc["format"] == "rheostat-checkpoint" and doc["version"] == VERSION
    assert decode_manifest(raw, store.key()) == manifest


def test_commit_checks_every_acknowledged_part_is_stored(store):
    real = store.write_part(1, "a", b"data")
    ghost = PartInfo.of("b", b"never written")
    with pytest.raises(CheckpointWriteError, match=r"'b'.*not in the store"):
        store.commit(1, [real, ghost])
    short = PartInfo.of("a", b"more data than was written")
    with pytest.raises(CheckpointWriteError, match="acknowledged"):
        store.commit(1, [short])
    assert ids(store) == [(1, "incomplete")]


def test_a_committed_checkpoint_is_never_overwritten_or_aborted(store):
    manifest = checkpoint(store, 1)
    with pytest.raises(CheckpointError, match="already committed"):
        store.commit(1, list(manifest.parts.values()))
    with pytest.raises(CheckpointWriteError, match="already committed"):
        store.write_part(1, "src#0/offsets", b"clobber")
    assert store.abort(1) is False
    assert store.load(1).read_part("src#0/offsets") == b"o1"


def test_job_metadata_must_be_json(store):
    part = store.write_part(1, "a", b"x")
    with pytest.raises(ValueError, match="JSON"):
        store.commit(1, [part], {"fn": object()})


# -- retention and savepoints -----------------------------------------------------------


def test_retention_keeps_newest_n_and_never_touches_savepoints(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    checkpoint(store, 1)
    store.promote_to_savepoint(1, "before-upgrade")
    store.write_part(2, "src#0/offsets", b"abandoned")  # incomplete, older than what follows
    for cid in (3, 4, 5):
        checkpoint(store, cid)
    store.write_part(6, "src#0/offsets", b"in progress")
    assert ids(store) == [(4, "complete"), (5, "complete"), (6, "incomplete")]
    assert [(s.savepoint, s.status) for s in store.savepoints()] == [("before-upgrade", "complete")]
    saved = store.load_savepoint("before-upgrade")
    assert saved.manifest.kind == "savepoint" and saved.manifest.savepoint == "before-upgrade"
    assert saved.checkpoint_id == 1 and saved.read_part("src#0/offsets") == b"o1"
    assert store.next_checkpoint_id() == 7


def test_savepoint_rules(store):
    checkpoint(store, 1)
    store.promote_to_savepoint(1, "sp")
    with pytest.raises(CheckpointError, match="already exists"):
        store.promote_to_savepoint(1, "sp")
    with pytest.raises(ValueError, match="savepoint name"):
        store.promote_to_savepoint(1, "../escape")
    with pytest.raises(CheckpointNotFoundError):
        store.promote_to_savepoint(9, "other")
    with pytest.raises(CheckpointNotFoundError):
        store.load_savepoint("missing")
    # A fresh store on the same root (the job was cancelled, a new one starts) sees it.
    again = pickle.loads(pickle.dumps(store))
    assert again.load_savepoint("sp").read_part("agg#1/state") == b"s"
    assert store.delete_savepoint("sp") and store.savepoints() == []


def test_a_corrupt_checkpoint_is_not_promoted(store):
    checkpoint(store, 1, {"a": b"hello world"})
    flip_bit(store, 1, "a")
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        store.promote_to_savepoint(1, "sp")
    assert store.savepoints() == []


# -- corruption -------------------------------------------------------------------------


def part_path(store: CheckpointStore, cid: int, name: str) -> str:
    return f"{store.checkpoint_path(cid)}/{part_file_name(name)}"


def manifest_path(store: CheckpointStore, cid: int) -> str:
    return f"{store.checkpoint_path(cid)}/{MANIFEST_NAME}"


def flip_bit(store, cid, name):
    path = part_path(store, cid, name)
    data = bytearray(store.fs.cat_file(path))
    data[len(data) // 2] ^= 0x10
    store.fs.pipe_file(path, bytes(data))


def truncate_part(store, cid, name):
    path = part_path(store, cid, name)
    store.fs.pipe_file(path, store.fs.cat_file(path)[:-3])


def delete_part(store, cid, name):
    store.fs.rm(part_path(store, cid, name))


def tear_manifest(store, cid, name):
    path = manifest_path(store, cid)
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])


def edit_manifest(store, cid, name):
    path = manifest_path(store, cid)
    doc = json.loads(store.fs.cat_file(path))
    doc["job"]["parallelism"] = 99
    store.fs.pipe_file(path, json.dumps(doc).encode())


def rehash_manifest_for_tampered_part(store, cid, name):
    """Flip a bit and fix the part's sha256 in the manifest: the manifest checksum catches it."""
    flip_bit(store, cid, name)
    path = manifest_path(store, cid)
    doc = json.loads(store.fs.cat_file(path))
    flipped = store.fs.cat_file(part_path(store, cid, name))
    doc["parts"][name]["sha256"] = PartInfo.of(name, flipped).sha256
    store.fs.pipe_file(path, json.dumps(doc).encode())


CORRUPTIONS = {
    "bit flip": (flip_bit, "sha256"),
    "truncated part": (truncate_part, "bytes, not"),
    "missing part": (delete_part, "missing"),
    "torn manifest": (tear_manifest, "not valid JSON"),
    "edited manifest": (edit_manifest, "checksum mismatch"),
    "re-hashed manifest": (rehash_manifest_for_tampered_part, "checksum mismatch"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_detected_and_the_previous_checkpoint_used(store, case, caplog):
    corrupt, reason = CORRUPTIONS[case]
    checkpoint(store, 1, {"agg#0/state": b"good old state " * 10})
    checkpoint(store, 2, {"agg#0/state": b"newer state " * 10})
    corrupt(store, 2, "agg#0/state")
    reports = []
    point = store.latest(reports=reports)
    assert point is not None and point.checkpoint_id == 1
    assert point.read_part("agg#0/state") == b"good old state " * 10
    assert [r.checkpoint_id for r in reports] == [2] and reason in reports[0].reason
    assert point.skipped == tuple(reports)
    assert "skipping checkpoint 2" in caplog.text
    with pytest.raises(CorruptCheckpointError, match=reason):
        store.load(2)
    with pytest.raises(CorruptCheckpointError, match=reason):  # parts hashed as streams
        CheckpointStore(store.url, cache_bytes=0).load(2)
    statuses = store.list(verify=True)
    assert [(s.checkpoint_id, s.status) for s in statuses] == [(1, "complete"), (2, "corrupt")]


def test_corrupt_checkpoints_do_not_count_towards_retention(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    checkpoint(store, 1)
    checkpoint(store, 2)
    flip_bit(store, 2, "src#0/offsets")
    assert store.latest().checkpoint_id == 1  # the job resumes from 1 and goes on
    store.write_part(store.next_checkpoint_id(), "x", b"x")  # 3: crashed in progress
    checkpoint(store, 4)
    assert ids(store) == [(1, "complete"), (4, "complete")]  # 1 kept rather than corrupt 2


def test_all_corrupt_gives_none_and_reports(store):
    checkpoint(store, 1)
    checkpoint(store, 2)
    delete_part(store, 1, "src#0/offsets")
    tear_manifest(store, 2, "")
    reports = []
    assert store.latest(reports=reports) is None
    assert [r.checkpoint_id for r in reports] == [2, 1]
    assert all(r.reason and r.path for r in reports)


def test_a_part_changed_after_verification_is_not_handed_out(tmp_path):
    store = CheckpointStore(tmp_path, cache_bytes=0)  # nothing cached: parts are re-read
    checkpoint(store, 1, {"a": b"state bytes"})
    point = store.latest()
    flip_bit(store, 1, "a")
    with pytest.raises(CorruptCheckpointError, match="changed after verification"):
        point.read_part("a")


def test_an_unreadable_store_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    checkpoint(store, 1)
    checkpoint(store, 2)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(store.fs, "cat_file", denied)
    with pytest.raises(CheckpointError, match="Permission denied"):
        store.latest()


def test_a_newer_format_version_is_refused():
    key = CheckpointKey.of("a secret of sixteen bytes or more", "the test")
    m = build_manifest(1, [], {})
    doc = json.loads(encode_manifest(m, key))
    doc["version"] = VERSION + 1
    with pytest.raises(ManifestError, match="newer rheostat"):
        decode_manifest(json.dumps(doc).encode(), key)


# -- failing stores ---------------------------------------------------------------------


class _FillingFile:
    """A writable file on a disk with ``fs.space`` bytes left."""

    def __init__(self, f, fs):
        self._f, self._fs = f, fs

    def write(self, data):
        data = memoryview(data).cast("B")
        room = min(self._fs.space, data.nbytes)
        self._f.write(data[:room])
        self._fs.space -= room
        if room < data.nbytes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return room

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FullLocalDisk(LocalFileSystem):
    space: float = float("inf")

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        return _FillingFile(f, self) if "w" in mode else f


class FullMemory(MemoryFileSystem):
    space: float = float("inf")

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        return _FillingFile(f, self) if "w" in mode else f


@pytest.fixture(params=["local", "memory"])
def full_store(request, tmp_path):
    if request.param == "local":
        fs, root = FullLocalDisk(skip_instance_cache=True), str(tmp_path / "store")
    else:
        fs, root = FullMemory(skip_instance_cache=True), f"/full-{uuid.uuid4().hex}"
    store = CheckpointStore(root, filesystem=fs)
    yield store
    fs.space = float("inf")
    store.destroy()


def test_disk_full_mid_part_fails_that_checkpoint_only(full_store):
    store = full_store
    checkpoint(store, 1)
    store.fs.space = 100
    ok = store.write_part(2, "agg#0/state", b"x" * 50)
    with pytest.raises(CheckpointWriteError) as info:
        store.write_part(2, "agg#1/state", b"y" * 1000)
    err = info.value
    assert (err.checkpoint_id, err.part) == (2, "agg#1/state")
    assert "No space left" in str(err)
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOSPC
    assert not store.fs.exists(part_path(store, 2, "agg#1/state"))  # no partial file left
    store.abort(2)
    assert not store.fs.exists(store.checkpoint_path(2))
    assert ok.size == 50
    point = store.latest()
    assert point.checkpoint_id == 1 and point.read_part("src#0/offsets") == b"o1"
    store.fs.space = float("inf")
    checkpoint(store, 3)  # the job goes on; the next checkpoint succeeds
    assert store.latest().checkpoint_id == 3


def test_disk_full_writing_the_manifest_commits_nothing(full_store):
    store = full_store
    checkpoint(store, 1)
    part = store.write_part(2, "a", b"fits")
    store.fs.space = 10
    with pytest.raises(CheckpointWriteError, match=MANIFEST_NAME):
        store.commit(2, [part])
    assert store.fs.ls(store.checkpoint_path(2), detail=False) == [
        f"{store.checkpoint_path(2)}/a"
    ]
    assert store.abort(2) and store.latest().checkpoint_id == 1


def test_write_errors_survive_pickling():
    err = CheckpointWriteError(3, "agg#0/state", "OSError: no space")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.part == "agg#0/state"
    corrupt = pickle.loads(pickle.dumps(CorruptCheckpointError("chk-3", "bad")))
    assert corrupt.reason == "bad"


# -- across processes -------------------------------------------------------------------

WORKER = """
import pickle, sys
store = pickle.loads(sys.stdin.buffer.read())
assert store._fs is None  # opened lazily in this process
parts = [store.write_part(7, f"map#{i}/state", bytes([i]) * (i + 1)) for i in range(3)]
sys.stdout.buffer.write(pickle.dumps(parts))
"""


def test_store_pickles_to_a_worker_process_that_writes_parts(tmp_path):
    store = CheckpointStore(tmp_path / "store")
    assert store.latest() is None  # the filesystem is open here; pickling drops it
    out = subprocess.run(
        [sys.executable, "-c", WORKER], input=pickle.dumps(store), capture_output=True, check=True
    )
    parts = pickle.loads(out.stdout)
    store.commit(7, parts, {"flow": "f"})
    point = store.latest()
    read = [point.read_part(f"map#{i}/state") for i in range(3)]
    assert read == [b"\x00", b"\x01\x01", b"\x02" * 3]
    shipped = pickle.loads(pickle.dumps(point))  # a restore point travels to workers too
    assert shipped.read_part("map#2/state") == b"\x02" * 3


# -- part names -------------------------------------------------------------------------


@given(st.lists(st.text(min_size=1, max_size=300), min_size=2, max_size=5, unique=True))
def test_part_file_names_are_distinct_and_safe(names):
    files = [part_file_name(n) for n in names]
    assert len({f.lower() for f in files}) == len(files)
    for f in files:
        assert len(f) <= 200 and not f.startswith(".") and "/" not in f
        assert f != MANIFEST_NAME and set(f) <= set("abcdefghijklmnopqrstuvwxyz0123456789-._~")
