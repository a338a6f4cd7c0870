"""A failing store (a full disk) fails that checkpoint atomically; the job keeps running
within the tolerance, and the previous checkpoints still restore."""

import errno

import pytest
from fsspec.implementations.local import LocalFileSystem

import rheostat as rs
from rheostat.runtime.checkpoint import CheckpointStore


class DiskFullFor(LocalFileSystem):
    """A local disk that is full whenever a file of the given checkpoints is written."""

    def __init__(self, checkpoint_ids, **kw):
        super().__init__(**kw)
        self.names = {f"chk-{i:08d}" for i in checkpoint_ids}

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode and any(n in str(path) for n in self.names):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super()._open(path, mode, **kwargs)


def job(out):
    flow = rs.Flow("disk-full")
    rows = rs.testing.rows([{"k": i % 31, "t": i} for i in range(60_000)], batch_size=500)
    (flow.source("ev", rows, timestamp="t", rate=30_000)
        .key_by("k").window(rs.windows.tumbling("500ms")).aggregate(n=rs.agg.count())
        .sink("out", out))
    return flow


def rows(sink):
    return sorted(tuple(r.values()) for r in sink.to_pylist())


def test_failed_checkpoints_within_tolerance_do_not_stop_the_job(tmp_path):
    reference = rs.sinks.collect()
    rs.run(job(reference), backend="inline")
    fs = DiskFullFor({2, 3}, skip_instance_cache=True)
    store = CheckpointStore(str(tmp_path / "chk"), filesystem=fs)
    out = rs.sinks.collect()
    result = rs.run(job(out), backend="inline", checkpoint_interval="100ms",
                    checkpoint_dir=store, tolerable_checkpoint_failures=2)
    assert rows(out) == rows(reference)
    assert 1 in result.checkpoints and 4 in result.checkpoints
    assert 2 not in result.checkpoints and 3 not in result.checkpoints
    fs.names.clear()
    listed = {i.checkpoint_id: i.status for i in store.list()}
    assert 2 not in listed and 3 not in listed  # failed atomically: nothing left behind
    assert store.latest() is not None


def test_more_failures_in_a_row_than_tolerated_fail_the_job(tmp_path):
    fs = DiskFullFor({2, 3}, skip_instance_cache=True)
    store = CheckpointStore(str(tmp_path / "chk"), filesystem=fs)
    with pytest.raises(rs.JobFailed, match="2 checkpoints failed in a row"):
        rs.run(job(rs.sinks.collect()), backend="inline", checkpoint_interval="100ms",
               checkpoint_dir=store, tolerable_checkpoint_failures=1)
    fs.names.clear()
    assert store.latest().checkpoint_id == 1  # the previous checkpoint still restores
