"""The README's example run with ``--backend ray`` writes what it writes on the local
backend (the CLI starts its own Ray instance, as it would for a newcomer)."""

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hot_items.py"


def run_example(cwd: Path, *backend: str) -> list[tuple]:
    subprocess.run(
        [sys.executable, "-m", "rheostat.cli.main", "run", str(EXAMPLE), "--parallelism", "2",
         "--no-progress", "--no-http", *backend],
        cwd=cwd, check=True, timeout=240,
    )
    table = ds.dataset(str(cwd / "out" / "hot-items"), format="parquet").to_table()
    return sorted(tuple(r.values()) for r in table.to_pylist())


def test_the_readme_example_on_ray_writes_what_it_writes_locally(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = run_example(tmp_path / "local")
    on_ray = run_example(tmp_path / "ray", "--backend", "ray")
    assert len(local) > 10_000
    assert on_ray == local
