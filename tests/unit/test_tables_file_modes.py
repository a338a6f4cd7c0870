"""The job tables hold the plan, checkpoints and metrics of a job: their file (and its
-wal and -shm) is 0600 and the directories made for it 0700, whatever the umask
(issue 12, finding 1: table files must not expose state to other local users)."""

import os
import stat

import pytest

from rheostat.control.tables import JobTables, default_path, query_file


@pytest.fixture
def open_umask():
    old = os.umask(0o022)  # the usual umask: files 0644, directories 0755 by default
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_tables_file_and_its_new_directories_are_private(tmp_path, open_umask):
    path = default_path("flow", root=tmp_path / ".rheostat")
    tables = JobTables(path)
    tables.job_state("running")
    try:
        assert mode(path) == 0o600
        for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():
                assert mode(side) & 0o077 == 0, side
        assert mode(path.parent) == 0o700  # .rheostat/jobs
        assert mode(path.parent.parent) == 0o700  # .rheostat
        assert query_file(path, "select count(*) as n from steps").to_pylist() == [{"n": 0}]
    finally:
        tables.close()


def test_a_new_run_replaces_a_readable_file_and_keeps_an_existing_directory(
        tmp_path, open_umask):
    path = tmp_path / "jobs" / "flow.sqlite"
    path.parent.mkdir(mode=0o755)
    path.write_bytes(b"")
    path.chmod(0o644)
    JobTables(path).close()
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o755  # not rheostat's to change
