"""Checkpoints are authenticated: a manifest carries an HMAC-SHA256 under the deployment's
secret, so whoever can write to the store but lacks the secret cannot forge a checkpoint
(issue 12, finding 1); the secret and the checkpoint files are private to their owner."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import rheostat as rs
from rheostat.cli.main import cli
from rheostat.runtime.checkpoint import (
    ENV_SECRET,
    ENV_SECRET_FILE,
    MANIFEST_NAME,
    CheckpointSecretError,
    CheckpointStore,
    CorruptCheckpointError,
    UnauthenticatedCheckpointError,
    part_file_name,
)
from rheostat.runtime.checkpoint.manifest import canonical_json

SECRET = "this deployment's checkpoint secret"
OTHER = "another deployment's checkpoint secret"


@pytest.fixture
def no_env_secret(monkeypatch, tmp_path):
    """No secret in the environment; HOME is a fresh directory."""
    monkeypatch.delenv(ENV_SECRET, raising=False)
    monkeypatch.delenv(ENV_SECRET_FILE, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def commit(store: CheckpointStore, cid: int, parts: dict[str, bytes]) -> None:
    infos = [store.write_part(cid, name, data) for name, data in parts.items()]
    store.commit(cid, infos, {"flow": "f", "parallelism": 1})


def forge(store: CheckpointStore, cid: int, edit_doc=None, parts: dict[str, bytes] | None = None):
    """What someone who can write to the store can do without the secret: rewrite parts,
    put their sizes and hashes in the manifest and recompute the manifest's checksum."""
    directory = store.checkpoint_path(cid)
    manifest = f"{directory}/{MANIFEST_NAME}"
    doc = json.loads(store.fs.cat_file(manifest))
    for name, data in (parts or {}).items():
        store.fs.pipe_file(f"{directory}/{part_file_name(name)}", data)
        doc["parts"][name].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if edit_doc is not None:
        edit_doc(doc)
    doc.pop("manifest_sha256")
    body = {k: v for k, v in doc.items() if k != "manifest_hmac_sha256"}
    doc["manifest_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    store.fs.pipe_file(manifest, json.dumps(doc, indent=2).encode())


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    url = str(tmp_path / "store") if request.param == "local" else \
        f"memory://rheostat-auth/{uuid.uuid4().hex}"
    s = CheckpointStore(url, secret=SECRET)
    yield s
    s.destroy()


# -- forgeries ---------------------------------------------------------------------------


def test_a_forged_part_is_refused_and_not_replaced_by_an_older_checkpoint(store):
    commit(store, 1, {"src#0/_task": pickle.dumps({"position": 100})})
    commit(store, 2, {"src#0/_task": pickle.dumps({"position": 200})})
    forge(store, 2, parts={"src#0/_task": pickle.dumps({"position": 60_200})})
    with pytest.raises(UnauthenticatedCheckpointError, match="without the secret") as info:
        store.latest()  # not a silent fall back to checkpoint 1 either
    assert "chk-00000002" in str(info.value) and "not authenticated" in str(info.value)
    with pytest.raises(UnauthenticatedCheckpointError):
        store.load(2)
    assert [(c.checkpoint_id, c.status) for c in store.list(verify=True)] == [
        (1, "complete"), (2, "unauthenticated")]


def test_a_forged_manifest_is_refused(store):
    commit(store, 1, {"agg#0/state": b"state"})

    def more_parallelism(doc):
        doc["job"]["parallelism"] = 8

    forge(store, 1, more_parallelism)
    with pytest.raises(UnauthenticatedCheckpointError, match="MAC does not verify"):
        store.latest()


@pytest.mark.parametrize("strip", ["manifest_hmac_sha256", "key_id"])
def test_a_manifest_without_its_mac_or_key_id_is_refused(store, strip):
    commit(store, 1, {"agg#0/state": b"state"})
    forge(store, 1, lambda doc: doc.pop(strip))
    with pytest.raises(UnauthenticatedCheckpointError):
        store.latest()


def test_a_version_1_checkpoint_without_a_mac_is_refused_with_what_to_do(store):
    commit(store, 1, {"agg#0/state": b"state"})

    def as_version_1(doc):
        doc["version"] = 1
        del doc["key_id"], doc["manifest_hmac_sha256"]

    forge(store, 1, as_version_1)
    with pytest.raises(UnauthenticatedCheckpointError,
                       match=r"format version 1.*start the job afresh"):
        store.latest()


def test_a_checkpoint_from_another_secret_is_refused_with_the_message(tmp_path):
    writer = CheckpointStore(tmp_path / "store", secret=OTHER)
    commit(writer, 1, {"agg#0/state": b"state"})
    reader = CheckpointStore(tmp_path / "store", secret=SECRET)
    with pytest.raises(UnauthenticatedCheckpointError) as info:
        reader.latest()
    message = str(info.value)
    assert "signed with another secret" in message
    assert ENV_SECRET in message and ENV_SECRET_FILE in message
    assert writer.key().key_id in message and reader.key().key_id in message
    assert SECRET not in message and OTHER not in message
    with pytest.raises(UnauthenticatedCheckpointError):
        reader.load(1)


def test_a_savepoint_swapped_for_another_is_refused(tmp_path):
    store = CheckpointStore(tmp_path / "store", secret=SECRET)
    commit(store, 1, {"a": b"one"})
    store.promote_to_savepoint(1, "first")
    commit(store, 2, {"a": b"two"})
    store.promote_to_savepoint(2, "second")
    first, second = Path(store.savepoint_path("first")), Path(store.savepoint_path("second"))
    for f in second.iterdir():
        (first / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CorruptCheckpointError, match="is for savepoint 'second'"):
        store.load_savepoint("first")


# -- the secret ----------------------------------------------------------------------------


def test_the_default_secret_is_made_0600_on_first_write_and_kept(no_env_secret, tmp_path):
    path = no_env_secret / ".rheostat" / "checkpoint-secret"
    store = CheckpointStore(f"memory://rheostat-auth/{uuid.uuid4().hex}")
    with pytest.raises(CheckpointSecretError, match="no checkpoint secret"):
        store.key()  # reading never makes one
    commit(store, 1, {"a": b"x"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64
    again = CheckpointStore(store.url)  # another process of the same deployment
    assert again.latest().read_part("a") == b"x"
    assert again.key().source == str(path)
    store.destroy()


def test_the_secret_from_the_environment(no_env_secret, monkeypatch, tmp_path):
    writer = CheckpointStore(tmp_path / "store", secret=SECRET)
    commit(writer, 1, {"a": b"x"})
    monkeypatch.setenv(ENV_SECRET, SECRET)
    assert CheckpointStore(tmp_path / "store").latest().read_part("a") == b"x"
    shared = tmp_path / "shared" / "key"
    shared.parent.mkdir()
    shared.write_text(SECRET + "\n")
    monkeypatch.setenv(ENV_SECRET_FILE, str(shared))
    with pytest.raises(CheckpointSecretError, match="both"):
        CheckpointStore(tmp_path / "store").latest()
    monkeypatch.delenv(ENV_SECRET)
    assert CheckpointStore(tmp_path / "store").latest().read_part("a") == b"x"
    assert not (no_env_secret / ".rheostat").exists()


def test_a_secret_file_on_shared_storage_is_made_on_first_write(no_env_secret, monkeypatch,
                                                                tmp_path):
    shared = tmp_path / "shared" / "rheostat.key"
    shared.parent.mkdir()
    monkeypatch.setenv(ENV_SECRET_FILE, str(shared))
    store = CheckpointStore(tmp_path / "store")
    commit(store, 1, {"a": b"x"})
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    assert [p.name for p in shared.parent.iterdir()] == ["rheostat.key"]  # no temp left
    monkeypatch.setenv(ENV_SECRET_FILE, str(tmp_path / "missing-dir" / "key"))
    with pytest.raises(CheckpointSecretError, match="cannot create"):
        commit(CheckpointStore(tmp_path / "other"), 1, {"a": b"x"})


def test_a_short_secret_is_refused():
    with pytest.raises(CheckpointSecretError, match="at least 16"):
        CheckpointStore("memory://rheostat-auth/short", secret="hunter2").key()


def test_the_secret_does_not_travel_with_a_pickled_store(no_env_secret, tmp_path):
    store = CheckpointStore(tmp_path / "store", secret=SECRET)
    commit(store, 1, {"a": b"x"})
    point = store.latest()
    blob = pickle.dumps(point)
    assert SECRET.encode() not in blob
    shipped = pickle.loads(blob)
    assert shipped.read_part("a") == b"x"  # a worker reads the parts the controller verified
    with pytest.raises(CheckpointSecretError, match="no checkpoint secret"):
        shipped.store.key()  # and would find its own secret to verify a manifest


# -- file modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_checkpoint_files_are_private_to_their_owner(tmp_path, scheme):
    old = os.umask(0o022)
    try:
        store = CheckpointStore(f"{scheme}{tmp_path}/jobs/store", secret=SECRET)
        commit(store, 1, {"agg#0/state": b"state", "src#0/_task": b"positions"})
        store.promote_to_savepoint(1, "keep")
    finally:
        os.umask(old)
    found = list((tmp_path / "jobs").rglob("*"))
    assert any(p.name == MANIFEST_NAME for p in found)
    for p in [tmp_path / "jobs", *found]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} is mode {mode:o}"


# -- the CLI and a real job ------------------------------------------------------------------


def test_rheostat_checkpoints_says_which_verify(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SECRET, SECRET)
    monkeypatch.delenv(ENV_SECRET_FILE, raising=False)
    store = CheckpointStore(tmp_path / "store")
    commit(store, 1, {"a": b"x"})
    commit(store, 2, {"a": b"y"})
    forge(store, 2, parts={"a": b"z"})
    result = CliRunner().invoke(cli, ["checkpoints", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert f"key id {store.key().key_id}" in result.output
    assert "checkpoint 1: complete, verifies" in result.output
    assert "checkpoint 2: NOT AUTHENTICATED" in result.output


def test_resuming_a_job_from_forged_source_positions_is_refused(tmp_path):
    sink = rs.sinks.collect()
    flow = rs.Flow("forged")
    flow.source("ev", rs.sources.synthetic(events=20_000, keys=10, seed=1), batch_size=1000) \
        .sink("out", sink)
    chk = str(tmp_path / "chk")
    result = rs.run(flow, backend="inline", checkpoint_interval="10ms", checkpoint_dir=chk)
    assert result.state == "finished" and sink.rows == 20_000
    store = CheckpointStore(chk)
    point = store.latest()
    name = next(n for n in point.part_names if n.endswith("/_task"))
    meta = pickle.loads(point.read_part(name))
    meta["sources"] = {}  # whatever the forger likes; here, nothing read yet
    forge(store, point.checkpoint_id, parts={name: pickle.dumps(meta)})
    with pytest.raises(UnauthenticatedCheckpointError, match="without the secret"):
        rs.run(flow, backend="inline", checkpoint_interval="10ms", checkpoint_dir=chk,
               resume=True)
