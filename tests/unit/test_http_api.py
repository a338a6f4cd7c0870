"""The job's HTTP API: tokens, routes, Prometheus text, savepoints through the controller."""

import json
import os
import re
import stat
import threading
import time
import urllib.parse

import pyarrow as pa
import pytest
from http_calls import call_raw as call

import rheostat as rs
from rheostat.control.controller import Controller
from rheostat.control.http_api import (
    ApiTokens,
    JobSnapshot,
    authorize,
    render_prometheus,
)
from rheostat.protocol import TaskMetrics
from rheostat.runtime.checkpoint import CheckpointStore
from rheostat.runtime.io import Source, SourceReader

# --- pure parts ---------------------------------------------------------------------------


def test_authorize_knows_both_tokens_and_nothing_else():
    tokens = ApiTokens(admin="adm-token", read="read-token")
    assert authorize("Bearer adm-token", tokens) == "admin"
    assert authorize("bearer read-token", tokens) == "read"
    for header in (None, "", "Bearer", "Bearer ", "Bearer wrong", "Basic adm-token",
                   "adm-token", "Bearer adm-token2", "Bearer read"):
        assert authorize(header, tokens) is None, header


def test_tokens_are_random_unless_given():
    a, b = ApiTokens.make(), ApiTokens.make()
    assert a.admin != b.admin and a.read != b.read and a.admin != a.read
    assert len(a.admin) >= 32
    assert ApiTokens.make({"admin": "x", "read": "y"}) == ApiTokens("x", "y")
    assert ApiTokens.make({"read": "y"}).read == "y"
    with pytest.raises(ValueError, match="differ"):
        ApiTokens.make({"admin": "same", "read": "same"})
    with pytest.raises(ValueError, match="unknown"):
        ApiTokens.make({"root": "x"})


PROM_LINE = re.compile(r'^[a-z_]+\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\} -?[0-9.e+-]+$')


def assert_prometheus(text: str) -> list[str]:
    """Every line is a comment (# HELP / # TYPE) or a sample; returns the samples."""
    assert text.endswith("\n")
    samples = []
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
        else:
            assert PROM_LINE.match(line), line
            samples.append(line)
    return samples


def test_prometheus_rendering():
    snap = JobSnapshot(
        flow='j"1', state="running", restarts=2, checkpoints=(1, 2, 3),
        metrics={"s#0": TaskMetrics(rows_in=5, rows_out=4, busy_s=0.5, backpressure_s=0.25,
                                    watermark=1000, counters={"late": 3}),
                 "o#0": TaskMetrics(rows_in=4)},
        chains={"s#0": ("s", "s,m"), "o#0": ("o", "o")},
    )
    text = render_prometheus(snap)
    samples = assert_prometheus(text)
    assert 'rheostat_job_restarts_total{job="j\\"1"} 2' in samples
    assert 'rheostat_job_checkpoints_completed_total{job="j\\"1"} 3' in samples
    labels = 'job="j\\"1",task="s#0",chain="s",steps="s,m"'
    assert f"rheostat_task_rows_in_total{{{labels}}} 5" in samples
    assert f"rheostat_task_rows_out_total{{{labels}}} 4" in samples
    assert f"rheostat_task_busy_seconds_total{{{labels}}} 0.5" in samples
    assert f"rheostat_task_backpressure_seconds_total{{{labels}}} 0.25" in samples
    assert f"rheostat_task_watermark_ms{{{labels}}} 1000" in samples
    assert f'rheostat_task_counter_total{{{labels},counter="late"}} 3' in samples
    assert "# TYPE rheostat_task_rows_in_total counter" in text
    assert not any(s.startswith("rheostat_task_watermark_ms") and 'task="o#0"' in s
                   for s in samples)  # no watermark yet: no sample


# --- a running job ------------------------------------------------------------------------


class HeldOpen(Source):
    """Some rows, then nothing ready until ``release`` exists: the job runs until the test
    has finished talking to it, however slow the machine."""

    def __init__(self, release, rows=20):
        self.release, self.rows = str(release), rows

    def splits(self, parallelism):
        return [0]

    def open(self, split, position=None, batch_size=0):
        return _HeldReader(self.release, self.rows, position or 0)


class _HeldReader(SourceReader):
    def __init__(self, release, rows, start):
        self.release, self.rows, self.next = release, rows, start

    def read(self):
        if self.next < self.rows:
            self.next += 1
            return pa.record_batch({"k": [self.next % 7], "t": [self.next]})
        if os.path.exists(self.release):
            return None
        time.sleep(0.005)
        return pa.record_batch({"k": pa.array([], pa.int64()), "t": pa.array([], pa.int64())})

    def position(self):
        return self.next


def exercise(tokens_file, seen, errors):
    """Talk to the running job: everything the test asserts lands in ``seen``; then let
    the job end."""
    try:
        deadline = time.monotonic() + 30
        while not tokens_file.exists():
            if time.monotonic() > deadline:
                raise AssertionError("no tokens file")
            time.sleep(0.01)
        info = json.loads(tokens_file.read_text())
        seen["mode"] = stat.S_IMODE(os.stat(tokens_file).st_mode)
        url, admin, read = info["url"], info["admin"], info["read"]
        assert url.startswith("http://127.0.0.1:")
        sql = "/v1/sql?q=" + urllib.parse.quote("select task_id, chain_id from tasks")
        routes = [("GET", "/v1/job"), ("GET", sql), ("GET", "/metrics"),
                  ("POST", "/v1/savepoint"), ("GET", "/nope")]
        for method, path in routes:
            body = {"name": "x"} if method == "POST" else None
            for token in (None, "wrong"):
                status, headers, payload = call(url + path, token, method, body)
                seen.setdefault("unauth", []).append(
                    (path, status, headers.get("WWW-Authenticate"), json.loads(payload)))
        for path in ("/v1/job", sql, "/metrics"):
            status, headers, payload = call(url + path, read)
            seen.setdefault("read_get", []).append((path, status, headers, payload))
        seen["read_post"] = call(url + "/v1/savepoint", read, "POST", {"name": "nope"})
        seen["delete"] = call(url + "/v1/sql?q=" + urllib.parse.quote("delete from jobs"),
                              admin)
        seen["missing"] = call(url + "/nope", admin)
        seen["bad_name"] = call(url + "/v1/savepoint", admin, "POST", {"name": "../x"})
        # Until the first checkpoint completes the answer is 409; then it is kept.
        while True:
            status, _, payload = call(url + "/v1/savepoint", admin, "POST", {"name": "sp1"})
            if status != 409 or time.monotonic() > deadline:
                break
            seen["early"] = json.loads(payload)
            time.sleep(0.05)
        seen["savepoint"] = (status, json.loads(payload))
        seen["again"] = call(url + "/v1/savepoint", admin, "POST", {"name": "sp1"})
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        (tokens_file.parent / "release").touch()


def test_http_api_of_a_running_job(tmp_path):
    flow = rs.Flow("api")
    (flow.source("s", HeldOpen(tmp_path / "release"), timestamp="t")
        .key_by("k").window(rs.windows.tumbling("1s")).aggregate(n=rs.agg.count())
        .sink("o", rs.sinks.null()))
    tokens_file = tmp_path / "api.tokens.json"
    seen: dict = {}
    errors: list = []
    talker = threading.Thread(target=exercise, args=(tokens_file, seen, errors), daemon=True)
    talker.start()
    result = rs.run(flow, backend="inline", checkpoint_interval="100ms",
                    checkpoint_dir=str(tmp_path / "chk"), tables=str(tmp_path / "t.sqlite"),
                    http_port=0)
    talker.join(timeout=60)
    assert not errors, [repr(e) for e in errors]
    assert result.state == "finished"
    assert result.http is not None and result.http.tokens_file == tokens_file
    assert not tokens_file.exists()  # removed once the job ends: the tokens open nothing
    assert seen["mode"] == 0o600

    assert len(seen["unauth"]) == 10
    for path, status, challenge, payload in seen["unauth"]:
        assert status == 401, path
        assert challenge and challenge.startswith("Bearer"), path
        assert "token" in payload["error"]

    (job, sql, metrics) = seen["read_get"]
    assert [r[1] for r in seen["read_get"]] == [200, 200, 200]
    job_body = json.loads(job[3])
    assert job_body["flow"] == "api" and job_body["state"] in ("running", "committing")
    assert {"restarts", "checkpoints_completed", "tasks"} <= set(job_body)
    sql_body = json.loads(sql[3])
    assert sql_body["columns"] == ["task_id", "chain_id"]
    assert sql_body["rows"] and all(len(r) == 2 for r in sql_body["rows"])
    assert metrics[2]["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = assert_prometheus(metrics[3].decode())
    assert any(s.startswith("rheostat_task_rows_in_total{") for s in samples)

    assert seen["read_post"][0] == 403
    assert seen["delete"][0] == 400 and b"read-only" in seen["delete"][2]
    assert seen["missing"][0] == 404
    assert seen["bad_name"][0] == 400

    status, body = seen["savepoint"]
    assert status == 200, body
    assert body["savepoint"] == "sp1" and body["checkpoint_id"] in result.checkpoints
    if "early" in seen:
        assert "no checkpoint has completed" in seen["early"]["error"]
    assert seen["again"][0] == 409 and b"already exists" in seen["again"][2]
    kept = CheckpointStore(str(tmp_path / "chk")).savepoints()
    assert [(s.savepoint, s.checkpoint_id) for s in kept] == [("sp1", body["checkpoint_id"])]


def test_a_job_without_checkpoints_refuses_a_savepoint_and_given_tokens_work(
    monkeypatch, tmp_path
):
    flow = rs.Flow("nochk")
    flow.source("s", HeldOpen(tmp_path / "release")).sink("o", rs.sinks.null())
    tokens = {"admin": "the-admin-token", "read": "the-read-token"}
    urls: list = []
    seen: dict = {}
    original = Controller._start_api

    def spy(self):  # without a tables file the URL is on the controller (and logged)
        original(self)
        urls.append(self.api.info.url)

    monkeypatch.setattr(Controller, "_start_api", spy)

    def talk():
        deadline = time.monotonic() + 30
        while not urls and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            seen["post"] = call(urls[0] + "/v1/savepoint", tokens["admin"], "POST",
                                {"name": "a"})
            seen["job"] = call(urls[0] + "/v1/job", tokens["read"])
        finally:
            (tmp_path / "release").touch()

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    result = rs.run(flow, backend="inline", http_port=0, http_tokens=tokens)
    talker.join(timeout=60)
    assert result.http is not None and result.http.tokens_file is None
    assert result.http.tokens == ApiTokens(tokens["admin"], tokens["read"])
    assert seen["post"][0] == 409 and b"takes no checkpoints" in seen["post"][2]
    assert seen["job"][0] == 200
