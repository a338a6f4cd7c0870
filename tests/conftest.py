"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

LOCAL_WORKER = "rheostat.backends.local.worker"

# Checkpoints are signed with a per-deployment secret (docs/security.md, "Checkpoints").
# The suite uses its own, inherited by the workers and CLIs it starts, rather than make
# ~/.rheostat/checkpoint-secret on the machine; tests of the secret set theirs.
if not (os.environ.get("RHEOSTAT_CHECKPOINT_SECRET")
        or os.environ.get("RHEOSTAT_CHECKPOINT_SECRET_FILE")):
    os.environ["RHEOSTAT_CHECKPOINT_SECRET"] = "the rheostat test suite's checkpoint secret"


def local_worker_processes() -> list[psutil.Process]:
    """This process's local-backend worker processes. Not all its children: once a test
    used Ray, the session's Ray instance (raylet, GCS, actors) runs under it too."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if LOCAL_WORKER in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return found


@pytest.fixture
def local_workers() -> Any:
    """``local_workers()`` lists this process's local-backend worker processes."""
    return local_worker_processes


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A Ray instance on this machine for the whole session (started on first use).

    Eight logical CPUs, so jobs of up to eight workers get their placement group on a
    two-core machine; two units of a custom ``test_accelerator`` resource for the tests
    of step resources; a small object store, so it fits a CI machine's shared memory.
    """
    ray = pytest.importorskip("ray", reason="the Ray tests need: pip install -e '.[ray]'")
    ray.init(num_cpus=8, resources={"test_accelerator": 2}, object_store_memory=256 << 20,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def use_backend(request: pytest.FixtureRequest) -> Any:
    """``use_backend(name)`` returns ``name`` after starting what the backend needs
    (the session's Ray instance for ``"ray"``)."""

    def use(name: str) -> str:
        if name == "ray":
            request.getfixturevalue("ray_cluster")
        return name

    return use


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rounds N``: rounds of tests/faults/test_soak.py (here, not in tests/faults: an
    option must be added by a conftest pytest loads at startup, and a plain ``pytest``
    loads only this one)."""
    parser.addoption("--rounds", type=int, default=None,
                     help="rounds of the reconfiguration soak (default: RHEOSTAT_SOAK_ROUNDS or 6)")
