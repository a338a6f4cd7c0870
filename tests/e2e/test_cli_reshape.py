"""The README's walk-through: reshape a job started by ``rheostat run`` from another shell.

``rheostat run`` runs a paced keyed window job (about 10 s) on worker processes;
``rheostat rescale``, ``move`` and ``status`` talk to it through its HTTP API while it
runs; its Parquet output must equal the same query in DuckDB.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

FLOW = '''
import random
import rheostat as rs

def events():
    rnd = random.Random(4)
    return [{"k": rnd.randint(0, 500), "v": rnd.randint(0, 9), "ts": 1_000_000 + i}
            for i in range(120_000)]

flow = rs.Flow("reshape-cli")
(flow.source("ev", rs.testing.rows(events(), batch_size=200), timestamp="ts",
             out_of_order="5ms", rate=12_000)
 .key_by("k").window(rs.windows.tumbling("250ms"))
 .aggregate(name="counts", n=rs.agg.count(), total=rs.agg.sum("v"))
 .sink("out", rs.sinks.parquet("out/")))
'''


def rheostat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rheostat.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def wait_for(path: Path, timeout: float = 60) -> None:
    """Pacing only: until the job has written its API tokens."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_rescale_and_move_a_running_job_from_the_cli(tmp_path):
    (tmp_path / "flow.py").write_text(FLOW)
    job = subprocess.Popen(
        [sys.executable, "-m", "rheostat.cli.main", "run", "flow.py", "--parallelism", "2",
         "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(tmp_path / ".rheostat" / "jobs" / "reshape-cli.tokens.json")
        up = rheostat("rescale", "reshape-cli", "counts", "3", cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "done" in up.stdout
        moved = rheostat("move", "reshape-cli", "counts", "0-1023", "--to", "2", cwd=tmp_path)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        status = rheostat("status", "reshape-cli", cwd=tmp_path)
        assert status.returncode == 0 and "counts#2" in status.stdout, status.stdout
        bad = rheostat("rescale", "reshape-cli", "ev", "3", cwd=tmp_path)
        assert bad.returncode == 1 and "splits=N" in bad.stdout + bad.stderr
        output, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 0, output
    got = pq.read_table(tmp_path / "out")
    namespace: dict = {}
    exec(FLOW.split("flow = ")[0], namespace)  # the same events, in this process
    ev = pa.Table.from_pylist(namespace["events"]())  # noqa: F841 - read by DuckDB
    ref = duckdb.sql("select k, ts // 250 as w, count(*) as n, sum(v) as total "
                     "from ev group by all").fetchall()
    rows = [(r["k"], int(r["window_end"].timestamp() * 1000) // 250 - 1, r["n"], r["total"])
            for r in got.to_pylist()]
    assert sorted(rows) == sorted(ref)
    states = rheostat("sql", "reshape-cli", "select state from reconfigurations "
                      "order by reconfig_id", cwd=tmp_path)
    assert states.returncode == 0
    assert states.stdout.split().count("done") == 2 and "refused" in states.stdout
