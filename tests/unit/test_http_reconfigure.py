"""POST /v1/reconfigure and the tokens every route needs, against a stand-in controller."""

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from rheostat.control import http_api
from rheostat.control.http_api import ApiError, HttpApi, HttpApiSettings, JobSnapshot
from rheostat.control.reconfig_json import ops_from_json
from rheostat.control.tables import JobTables
from rheostat.plan.reconfig import Rescale, SetKnob
from rheostat.protocol import TaskMetrics

ADMIN, READ = "the-admin-token", "the-read-token"
ROUTES = [("GET", "/v1/job"), ("GET", "/v1/sql?q=select%201"), ("GET", "/metrics"),
          ("POST", "/v1/savepoint"), ("POST", "/v1/reconfigure"), ("GET", "/v1/reconfigure"),
          ("PUT", "/v1/reconfigure"), ("GET", "/nope")]
OPS = [{"op": "rescale", "step": "count", "parallelism": 3},
       {"op": "knob", "step": "score", "name": "threshold", "value": 0.5}]


class Job:
    """An API plus a stand-in for the controller's loop that records what it serves."""

    def __init__(self, serve: bool) -> None:
        self.api = HttpApi(JobTables(), HttpApiSettings(tokens={"admin": ADMIN, "read": READ}))
        self.url = self.api.start("j").url
        self.api.publish(JobSnapshot("j", "running", 0, (1,), {"s#0": TaskMetrics()},
                                     {"s#0": ("s", "s")}))
        self.served: list[tuple[str, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        if serve:
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
            except ValueError as exc:
                request.reply.set_exception(ApiError(400, str(exc)))
                continue
            self.served.append((request.kind, ops))
            request.reply.set_result({"reconfig_id": 3, "status": "done",
                                      "duration_ms": 12.5, "reason": None})

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.api.close()


@pytest.fixture(scope="module")
def shared_job() -> Iterator[Job]:
    j = Job(serve=True)
    yield j
    j.close()


@pytest.fixture
def job(shared_job: Job) -> Job:
    shared_job.served.clear()
    return shared_job


@pytest.fixture
def silent_job() -> Iterator[Job]:
    j = Job(serve=False)
    yield j
    j.close()


def call(url: str, token: str | None, method: str = "GET", body: object = None,
         raw: bytes | None = None) -> tuple[int, dict, bytes]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("token", [None, "", "wrong", ADMIN + "x", "Bearer"])
def test_every_route_refuses_a_missing_or_wrong_token(job, method, path, token):
    body = {"ops": OPS} if method != "GET" else None
    status, headers, payload = call(job.url + path, token, method, body)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in json.loads(payload)["error"]
    assert job.served == []


@pytest.mark.parametrize("path", ["/v1/reconfigure", "/v1/savepoint"])
def test_the_read_token_cannot_post(job, path):
    status, _, payload = call(job.url + path, READ, "POST", {"ops": OPS, "name": "x"})
    assert status == 403
    assert "read-only" in json.loads(payload)["error"]
    assert job.served == []


def test_the_read_token_reads_and_reconfigure_is_post_only(job):
    assert call(job.url + "/v1/job", READ)[0] == 200
    assert call(job.url + "/v1/reconfigure", ADMIN)[0] == 405


@pytest.mark.parametrize("body", [
    {}, {"ops": []}, {"ops": {}}, {"ops": "rescale"}, {"ops": None}, [OPS],
    {"ops": OPS, "dry_run": True}, {"op": "rescale"},
])
def test_a_bad_body_is_400_before_the_controller(job, body):
    status, _, payload = call(job.url + "/v1/reconfigure", ADMIN, "POST", body)
    assert status == 400
    assert '{"ops": [...]}' in json.loads(payload)["error"]
    assert job.served == []


def test_a_body_that_is_not_json_is_400(job):
    status, _, payload = call(job.url + "/v1/reconfigure", ADMIN, "POST", raw=b"{ops")
    assert status == 400 and "not JSON" in json.loads(payload)["error"]


def test_the_controller_gets_the_ops_and_its_answer_comes_back(job):
    status, _, payload = call(job.url + "/v1/reconfigure", ADMIN, "POST", {"ops": OPS})
    assert status == 200
    assert json.loads(payload) == {"reconfig_id": 3, "status": "done", "duration_ms": 12.5,
                                   "reason": None}
    assert job.served == [("reconfigure", [Rescale("count", 3),
                                           SetKnob("score", "threshold", 0.5)])]


def test_a_parse_error_from_the_controller_is_its_400(job):
    bad = {"ops": [OPS[0], {"op": "rescale", "step": "count", "parallelism": 0}]}
    status, _, payload = call(job.url + "/v1/reconfigure", ADMIN, "POST", bad)
    assert status == 400
    assert json.loads(payload)["error"].startswith("op 1 (rescale): ")


def test_reconfigure_waits_long_enough_for_a_checkpoint():
    assert http_api.RECONFIGURE_TIMEOUT_S >= 120


def test_an_unanswered_request_is_withdrawn(silent_job, monkeypatch):
    monkeypatch.setattr(http_api, "RECONFIGURE_TIMEOUT_S", 0.01)
    status, _, payload = call(silent_job.url + "/v1/reconfigure", ADMIN, "POST", {"ops": OPS})
    assert status == 503 and "withdrawn" in json.loads(payload)["error"]
    request = silent_job.api.requests.get_nowait()
    assert not request.reply.set_running_or_notify_cancel()  # the controller skips it
