"""``rheostat status``, ``rescale``, ``move``, ``update`` and ``knob`` against a job's API."""

from __future__ import annotations

import json
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

import rheostat as rs
from rheostat.cli import main as cli_main
from rheostat.cli.main import cli, tokens_path
from rheostat.control.http_api import ApiError, HttpApi, HttpApiSettings, JobSnapshot
from rheostat.control.reconfig_json import ops_from_json
from rheostat.control.tables import JobTables
from rheostat.plan.reconfig import MoveKeyGroups, Rescale, SetKnob, UpdateFunction
from rheostat.protocol import TaskMetrics
from rheostat.runtime.io import Source, SourceReader

DONE = {"reconfig_id": 3, "status": "done", "duration_ms": 120.4, "reason": None}


def _invoke(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


class FakeJob:
    """A job's HTTP API (tokens file and all) whose controller answers with ``answer``."""

    def __init__(self, jobs_dir: Path) -> None:
        self.api = HttpApi(JobTables(), HttpApiSettings(), jobs_dir)
        self.info = self.api.start("hot")
        self.api.publish(JobSnapshot(
            "hot", "running", 1, (4, 5),
            {"count#0": TaskMetrics(rows_in=1200, rows_out=30, watermark=1_000),
             "src#0": TaskMetrics(rows_in=0, rows_out=1200)},
            {"count#0": ("count", "count"), "src#0": ("src", "src")}))
        self.answer: Callable[[list], Any] = lambda ops: DONE
        self.served: list[list] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request = self.api.requests.get(timeout=0.02)
            except queue.Empty:
                continue
            if not request.reply.set_running_or_notify_cancel():
                continue
            try:
                ops = ops_from_json(request.args["ops"])
                self.served.append(ops)
                request.reply.set_result(self.answer(ops))
            except ValueError as exc:
                request.reply.set_exception(ApiError(400, str(exc)))
            except Exception as exc:
                request.reply.set_exception(exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.api.close()


@pytest.fixture
def jobs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".rheostat" / "jobs"


@pytest.fixture
def job(jobs_dir: Path) -> Iterator[FakeJob]:
    fake = FakeJob(jobs_dir)
    yield fake
    fake.close()


def test_the_tokens_file_is_where_the_api_writes_it(job):
    assert job.info.tokens_file == tokens_path("hot").resolve()
    assert tokens_path("hot") == Path(".rheostat/jobs/hot.tokens.json")


def test_status_prints_a_summary(job):
    result = _invoke("status", "hot")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "job hot: running, 1 restarts, 2 checkpoints (latest 5)"
    assert lines[1].split() == ["task", "rows", "in", "rows", "out", "watermark"]
    assert lines[2].split() == ["count#0", "1200", "30", "1000"]
    assert lines[3].split() == ["src#0", "0", "1200", "-"]


def test_rescale(job):
    result = _invoke("rescale", "hot", "count", 4)
    assert result.exit_code == 0, result.output
    assert result.stdout == "reconfiguration 3 done in 120 ms\n"
    assert job.served == [[Rescale("count", 4)]]


def test_move_parses_the_groups(job):
    result = _invoke("move", "hot", "count", "0-3,8", "--to", 1)
    assert result.exit_code == 0, result.output
    assert job.served == [[MoveKeyGroups("count", (0, 1, 2, 3, 8), 1)]]


def test_update_names_a_function_the_job_imports(job):
    result = _invoke("update", "hot", "enrich", "json:dumps")
    assert result.exit_code == 0, result.output
    assert job.served == [[UpdateFunction("enrich", json.dumps)]]


@pytest.mark.parametrize(("given", "value"), [
    ("0.7", 0.7), ("3", 3), ("true", True), ("null", None), ("fast", "fast"), ('"7"', "7"),
])
def test_knob_values_are_json_if_they_parse(job, given, value):
    result = _invoke("knob", "hot", "score", "threshold", given)
    assert result.exit_code == 0, result.output
    assert job.served == [[SetKnob("score", "threshold", value)]]


def test_a_refused_reconfiguration_exits_1_with_the_reason(job):
    job.answer = lambda ops: {"reconfig_id": 4, "status": "failed", "duration_ms": 3.0,
                              "reason": "the job has no step 'nope'"}
    result = _invoke("rescale", "hot", "nope", 2)
    assert result.exit_code == 1
    assert "reconfiguration 4 failed in 3 ms: the job has no step 'nope'" in result.stderr


def test_an_api_error_exits_1_with_its_message(job):
    def refuse(ops):
        raise ApiError(409, "a reconfiguration is already running")

    job.answer = refuse
    result = _invoke("knob", "hot", "score", "threshold", "1")
    assert result.exit_code == 1
    assert "job hot: a reconfiguration is already running (HTTP 409)" in result.stderr
    result = _invoke("knob", "hot", "score", "not a name", "1")
    assert result.exit_code == 1
    assert "op 0 (knob)" in result.stderr and "(HTTP 400)" in result.stderr


def test_bad_arguments_are_usage_errors(job):
    assert _invoke("move", "hot", "count", "3-1", "--to", 0).exit_code == 2
    assert _invoke("move", "hot", "count", "0-3").exit_code == 2  # no --to
    assert _invoke("rescale", "hot", "count", 0).exit_code == 2
    assert _invoke("update", "hot", "enrich", "json.dumps").exit_code == 2
    assert job.served == []


@pytest.mark.parametrize("args", [("status",), ("rescale", "count", 2), ("knob", "s", "n", "1"),
                                  ("move", "count", "1", "--to", 0), ("update", "s", "m:f")])
def test_a_job_that_is_not_running(jobs_dir, args):
    result = _invoke(args[0], "gone", *args[1:])
    assert result.exit_code == 1
    assert ("job gone is not running (no .rheostat/jobs/gone.tokens.json); start it with "
            "rheostat run") in result.stderr


def test_a_left_over_tokens_file(jobs_dir):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    jobs_dir.mkdir(parents=True)
    (jobs_dir / "old.tokens.json").write_text(json.dumps(
        {"url": f"http://127.0.0.1:{port}", "admin": "a", "read": "r"}))
    result = _invoke("status", "old")
    assert result.exit_code == 1
    assert "cannot reach job old" in result.stderr and "left over" in result.stderr
    (jobs_dir / "old.tokens.json").write_text("{}")
    result = _invoke("status", "old")
    assert result.exit_code == 1 and "not a rheostat tokens file" in result.stderr


# --- against a running job ------------------------------------------------------------------


class HeldOpen(Source):
    """A few rows, then empty batches until ``release`` exists."""

    def __init__(self, release: Path) -> None:
        self.release = str(release)

    def splits(self, parallelism):
        return [0]

    def open(self, split, position=None, batch_size=0):
        return _HeldReader(self.release, position or 0)


class _HeldReader(SourceReader):
    def __init__(self, release: str, start: int) -> None:
        self.release, self.next = release, start

    def read(self):
        if self.next < 5:
            self.next += 1
            return pa.record_batch({"k": [self.next % 2], "t": [self.next]})
        if Path(self.release).exists():
            return None
        time.sleep(0.005)
        return pa.record_batch({"k": pa.array([], pa.int64()), "t": pa.array([], pa.int64())})

    def position(self):
        return self.next


def test_status_of_a_running_job(jobs_dir, tmp_path):
    flow = rs.Flow("live")
    flow.source("s", HeldOpen(tmp_path / "release"), timestamp="t").sink("o", rs.sinks.null())
    results: list = []
    runner = threading.Thread(target=lambda: results.append(rs.run(
        flow, backend="inline", tables=str(jobs_dir / "live.sqlite"), http_port=0)),
        daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while not tokens_path("live").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        result = _invoke("status", "live")
    finally:
        (tmp_path / "release").touch()
        runner.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("job live: running, 0 restarts, 0 checkpoints")
    assert "s#0" in result.stdout
    assert results and results[0].state == "finished"
    assert not tokens_path("live").exists()


FLOW_FILE = '''
import rheostat as rs

flow = rs.Flow("tiny_api")
flow.source("nums", rs.testing.rows([{"x": i} for i in range(10)])).sink("out", rs.sinks.null())
'''


@pytest.fixture
def flow_file(jobs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = jobs_dir.parent.parent / "tiny_api_flow.py"
    path.write_text(FLOW_FILE)
    yield path
    sys.modules.pop("_rheostat_flow_tiny_api_flow", None)


def test_run_serves_the_api_unless_told_not_to(flow_file, monkeypatch):
    ports: list = []
    real_run = cli_main.run_flow

    def spy(flow, **kw):
        ports.append(kw["http_port"])
        return real_run(flow, **kw)

    monkeypatch.setattr(cli_main, "run_flow", spy)
    result = _invoke("run", flow_file, "--backend", "inline", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "HTTP API" not in result.stderr  # said on a terminal, or when a port is given
    result = _invoke("run", flow_file, "--backend", "inline", "--no-progress",
                     "--http-port", 0)
    assert result.exit_code == 0, result.output
    assert ("HTTP API: rheostat status tiny_api (URL and tokens in "
            ".rheostat/jobs/tiny_api.tokens.json while the job runs)") in result.stderr
    assert not tokens_path("tiny_api").exists()  # removed when the job ended
    result = _invoke("run", flow_file, "--backend", "inline", "--no-progress", "--no-http")
    assert result.exit_code == 0, result.output
    assert "HTTP API" not in result.stderr
    assert ports == [0, 0, None]
    result = _invoke("run", flow_file, "--no-http", "--http-port", 0)
    assert result.exit_code == 2 and "contradict" in result.stderr
