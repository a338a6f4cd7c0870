"""The API's tokens are never logged; a tokens file a killed driver left behind is
removed when the job starts again."""

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from http_calls import ADMIN, READ, call, wait_for_api

import rheostat as rs
from rheostat.control.controller import Controller


def tiny(name):
    flow = rs.Flow(name)
    flow.source("s", rs.testing.rows([{"k": i} for i in range(50)])).sink("o", rs.sinks.null())
    return flow


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Where the API keeps tokens files when there is no tables file."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"rheostat-{os.getuid()}"


def test_random_tokens_are_not_logged_but_written_to_a_private_file(
    caplog, monkeypatch, private_tmp
):
    caplog.set_level(logging.DEBUG)
    found: dict = {}
    original = Controller._start_api

    def spy(self):  # while the job runs: the file the log names holds working tokens
        original(self)
        info = self.api.info
        found["file"] = info.tokens_file
        found["mode"] = stat.S_IMODE(os.stat(info.tokens_file).st_mode)
        found["dir_mode"] = stat.S_IMODE(os.stat(info.tokens_file.parent).st_mode)
        found["content"] = json.loads(info.tokens_file.read_text())
        found["status"] = call(info.url + "/v1/job", found["content"]["read"])[0]

    monkeypatch.setattr(Controller, "_start_api", spy)
    result = rs.run(tiny("quiet"), backend="inline", http_port=0)
    tokens = result.http.tokens
    assert tokens.admin not in caplog.text and tokens.read not in caplog.text
    assert str(found["file"]) in caplog.text  # the log says where they are
    assert found["file"].parent.parent == private_tmp
    assert found["mode"] == 0o600 and found["dir_mode"] == 0o700
    assert found["content"]["admin"] == tokens.admin and found["status"] == 200
    assert not found["file"].exists()  # gone with the job


def test_given_tokens_are_not_logged_either(caplog):
    caplog.set_level(logging.DEBUG)
    result = rs.run(tiny("given"), backend="inline", http_port=0,
                    http_tokens={"admin": ADMIN, "read": READ})
    assert result.http.tokens_file is None
    assert ADMIN not in caplog.text and READ not in caplog.text
    assert "HTTP API at" in caplog.text


def test_a_killed_drivers_private_tokens_are_removed_on_the_next_start(private_tmp):
    old = private_tmp / str(dead_pid())
    old.mkdir(parents=True, mode=0o700)
    (old / "gone.tokens.json").write_text('{"url": "http://127.0.0.1:1", "admin": "a"}')
    alive = private_tmp / str(os.getppid())  # a process that still runs keeps its own
    alive.mkdir(mode=0o700)
    (alive / "kept.tokens.json").write_text("{}")
    private_tmp.chmod(0o700)
    rs.run(tiny("again"), backend="inline", http_port=0)
    assert not old.exists()
    assert (alive / "kept.tokens.json").exists()


def test_a_left_over_tokens_file_is_removed_before_the_api_starts(tmp_path):
    """A driver killed before it could remove its tokens file leaves an old URL and
    tokens; the next start removes them first, even when its API cannot start."""
    left = tmp_path / "left.tokens.json"
    left.write_text(json.dumps({"url": "http://127.0.0.1:1", "admin": ADMIN, "read": READ}))
    aside = tmp_path / f".left.tokens.json.{dead_pid()}.tmp"
    aside.write_text("{}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            rs.run(tiny("left"), backend="inline", tables=str(tmp_path / "left.sqlite"),
                   http_port=taken.getsockname()[1])
    assert not left.exists() and not aside.exists()


def test_a_failing_request_logs_no_token(caplog, tmp_path):
    """Errors are logged with the request line, never its headers."""
    caplog.set_level(logging.DEBUG)
    release = tmp_path / "release"

    def talk(url):
        try:
            call(url + "/v1/sql?q=select%20nope", READ)
            call(url + "/v1/job", "not-" + READ)
        finally:
            release.touch()

    flow = rs.Flow("talk")
    rows = rs.testing.rows([{"k": i} for i in range(10)])
    flow.source("s", rows).map(lambda r: _wait_for(release) or r).sink("o", rs.sinks.null())
    job = rs.start(flow, backend="inline", http_port=0,
                   http_tokens={"admin": ADMIN, "read": READ})
    talker = threading.Thread(target=talk, args=(wait_for_api(job),))
    talker.start()
    talker.join(timeout=120)
    job.wait(timeout=120)
    assert READ not in caplog.text and ADMIN not in caplog.text


def _wait_for(path, limit_s=60):
    deadline = time.monotonic() + limit_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
