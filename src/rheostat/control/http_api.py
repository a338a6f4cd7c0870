"""The job's HTTP API: read its state, tables and metrics; take a savepoint; reconfigure.

Standard library only: a :class:`http.server.ThreadingHTTPServer` on a daemon thread,
bound to 127.0.0.1 unless told otherwise. Every request needs ``Authorization: Bearer
<token>``: the admin token may do everything, the read-only token only ``GET``. A missing
or unknown token is answered 401 on every route, the read-only token 403 on a ``POST``.
See docs/security.md, "The HTTP API": the admin token runs code as the job's user.

A connection that sends nothing for ``read_timeout_s`` is closed, and at most
``max_connections`` are served at once (more are answered 503). The tokens are never
logged: they are in a file readable by the job's user only (next to the tables file, or
in a private temporary directory), or they are the ones given.

Routes (JSON unless said otherwise):

- ``GET /v1/job``: flow, state, restarts, completed checkpoints, per-task metrics.
- ``GET /v1/sql?q=select ...``: a read-only query over the job's tables, on its own
  read-only connection (SQLite refuses any write), stopped after ``query_timeout_s``.
- ``GET /metrics``: Prometheus text format.
- ``POST /v1/savepoint`` ``{"name": "..."}`` (admin): keep the newest complete
  checkpoint as savepoint ``name``.
- ``POST /v1/reconfigure`` ``{"ops": [...]}`` (admin): change the running job, all
  operations as one (see :mod:`rheostat.control.reconfig_json` for their JSON); answers
  ``{"reconfig_id", "status", "duration_ms", "reason"}`` once it is done or refused.

The HTTP threads never change the controller nor wait for it to read: queries run on
the HTTP thread, and the rest reads a snapshot the controller publishes each loop; a
change is read and checked on the HTTP thread, then goes on a queue as an
:class:`ApiRequest` that the controller's loop serves between event batches.

>>> tokens = ApiTokens(admin="a", read="r")
>>> authorize("Bearer a", tokens), authorize("Bearer r", tokens), authorize("Bearer x", tokens)
('admin', 'read', None)
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from rheostat.control.reconfig_json import ops_from_json
from rheostat.control.tables import JobTables
from rheostat.protocol import TaskId, TaskMetrics

log = logging.getLogger("rheostat.http")

Role = Literal["admin", "read"]
REPLY_TIMEOUT_S = 60.0  # how long a request waits for the controller's loop to serve it
#: A reconfiguration may first wait for a checkpoint in flight, then move state.
RECONFIGURE_TIMEOUT_S = 300.0
MAX_BODY_BYTES = 64 << 10
SAVEPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with HTTP status ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiTokens:
    """The admin token and the read-only token of one job."""

    admin: str
    read: str

    @classmethod
    def make(cls, given: Mapping[str, str] | None = None) -> ApiTokens:
        """The tokens in ``given`` (keys ``admin``, ``read``), random where not given."""
        given = dict(given or {})
        unknown = set(given) - {"admin", "read"}
        if unknown:
            raise ValueError(f"http_tokens: unknown keys {sorted(unknown)}; use 'admin', 'read'")
        tokens = cls(admin=given.get("admin") or secrets.token_urlsafe(32),
                     read=given.get("read") or secrets.token_urlsafe(32))
        if tokens.admin == tokens.read:
            raise ValueError("http_tokens: the admin and read tokens must differ")
        return tokens


@dataclass(frozen=True)
class HttpApiSettings:
    """Where the API listens (``port=0``: any free port) and its tokens (random if None);
    how long a query may run, how long a connection may send nothing, how many
    connections are served at once."""

    port: int = 0
    host: str = "127.0.0.1"
    tokens: Mapping[str, str] | None = None
    query_timeout_s: float = 10.0
    max_query_rows: int = 100_000
    read_timeout_s: float = 10.0
    max_connections: int = 16


@dataclass(frozen=True)
class HttpApiInfo:
    """Where a job's API listened and its tokens (on the job's result)."""

    url: str
    host: str
    port: int
    tokens: ApiTokens
    tokens_file: Path | None = None


def authorize(header: str | None, tokens: ApiTokens) -> Role | None:
    """The role of the bearer token in an ``Authorization`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    given = token.strip().encode()
    # Compare with both, always, in constant time.
    is_admin = hmac.compare_digest(given, tokens.admin.encode())
    is_read = hmac.compare_digest(given, tokens.read.encode())
    return "admin" if is_admin else "read" if is_read else None


# --- the controller's side --------------------------------------------------------------


@dataclass(frozen=True)
class JobSnapshot:
    """What the controller publishes each loop for the API's reads."""

    flow: str
    state: str
    restarts: int
    checkpoints: tuple[int, ...]
    metrics: dict[str, TaskMetrics]
    chains: dict[str, tuple[str, str]]  # task id -> (chain id, its steps joined by ",")
    #: step id -> kind: reconfigurations are checked against them (None: not checked)
    steps: Mapping[str, str] | None = None


def snapshot_metrics(metrics: Mapping[str, TaskMetrics]) -> dict[str, TaskMetrics]:
    """A copy of per-task metrics that later updates do not change."""
    return {t: replace(m, counters=dict(m.counters)) for t, m in metrics.items()}


@dataclass
class ApiRequest:
    """A change asked of the controller: served by its loop, answered through ``reply``."""

    kind: str  # "savepoint" or "reconfigure"
    args: dict[str, Any]
    reply: Future = field(default_factory=Future)


# --- rendering --------------------------------------------------------------------------


def metrics_summary(metrics: Mapping[str, TaskMetrics]) -> dict[str, dict[str, Any]]:
    return {
        t: {"rows_in": m.rows_in, "rows_out": m.rows_out, "batches_in": m.batches_in,
            "busy_s": m.busy_s, "backpressure_s": m.backpressure_s,
            "watermark": m.watermark, "counters": dict(m.counters)}
        for t, m in sorted(metrics.items())
    }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_prometheus(snapshot: JobSnapshot) -> str:
    """The snapshot's metrics in the Prometheus text exposition format (version 0.0.4)."""
    job = _label(snapshot.flow)
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, samples: Iterator[tuple[str, float]]) -> None:
        rows = list(samples)
        if not rows:
            return
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {_number(v)}" for labels, v in rows)

    def task_labels(task: str) -> str:
        chain, steps = snapshot.chains.get(task, (TaskId(task).chain, ""))
        return (f'job="{job}",task="{_label(task)}",chain="{_label(chain)}",'
                f'steps="{_label(steps)}"')

    tasks = sorted(snapshot.metrics.items())
    family("rheostat_job_restarts_total", "counter", "Restarts of the job.",
           iter([(f'job="{job}"', snapshot.restarts)]))
    family("rheostat_job_checkpoints_completed_total", "counter", "Completed checkpoints.",
           iter([(f'job="{job}"', len(snapshot.checkpoints))]))
    family("rheostat_task_rows_in_total", "counter", "Rows into the task.",
           ((task_labels(t), m.rows_in) for t, m in tasks))
    family("rheostat_task_rows_out_total", "counter", "Rows out of the task.",
           ((task_labels(t), m.rows_out) for t, m in tasks))
    family("rheostat_task_busy_seconds_total", "counter", "Seconds the task spent working.",
           ((task_labels(t), float(m.busy_s)) for t, m in tasks))
    family("rheostat_task_backpressure_seconds_total", "counter",
           "Seconds the task waited for downstream credit.",
           ((task_labels(t), float(m.backpressure_s)) for t, m in tasks))
    family("rheostat_task_watermark_ms", "gauge", "The task's event-time watermark (ms).",
           ((task_labels(t), m.watermark) for t, m in tasks if m.watermark is not None))
    family("rheostat_task_counter_total", "counter",
           "Named per-task counters (late, skipped, ...).",
           ((f'{task_labels(t)},counter="{_label(k)}"', v)
            for t, m in tasks for k, v in sorted(m.counters.items())))
    return "\n".join(lines) + "\n"


# --- the server -------------------------------------------------------------------------


class HttpApi:
    """The HTTP API of one job; :meth:`start` binds and serves, :meth:`close` stops."""

    def __init__(
        self, tables: JobTables, settings: HttpApiSettings, tokens_dir: Path | None = None,
    ) -> None:
        self.tables = tables
        self.settings = settings
        self.tokens = ApiTokens.make(settings.tokens)
        self.tokens_dir = tokens_dir
        self.requests: queue.Queue[ApiRequest] = queue.Queue()
        self._snapshot: JobSnapshot | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.info: HttpApiInfo | None = None

    # --- the controller's calls ----------------------------------------------------

    def start(self, flow: str) -> HttpApiInfo:
        api = self

        class Handler(_Handler):
            owner = api
            timeout = api.settings.read_timeout_s  # on every read and write of a socket

        tokens_file = self._tokens_file(flow)
        if tokens_file is not None:
            _remove_leftovers(tokens_file)  # a killed driver's: an old URL, old tokens
        server = _Server((self.settings.host, self.settings.port), Handler,
                         self.settings.max_connections)
        self._thread = threading.Thread(target=server.serve_forever, name="rheostat-http",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self._server = server  # only now: close() shuts down a server that serves
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        url = f"http://{shown}:{port}"
        self.info = HttpApiInfo(url, str(host), int(port), self.tokens, tokens_file)
        if tokens_file is not None:
            _write_private(tokens_file, {"url": url, "admin": self.tokens.admin,
                                         "read": self.tokens.read})
            where = f"tokens in {tokens_file}, readable by this user only"
        else:
            where = "tokens: the ones given in http_tokens"
        log.info("job %r: HTTP API at %s (%s)", flow, url, where)  # never the tokens
        return self.info

    def _tokens_file(self, flow: str) -> Path | None:
        """Next to the tables; else, unless the caller gave both tokens (and so knows
        them), in a directory private to this user and process."""
        if self.tokens_dir is not None:
            return self.tokens_dir / f"{flow}.tokens.json"
        given = self.settings.tokens or {}
        if given.get("admin") and given.get("read"):
            return None
        return _private_dir() / f"{flow}-{secrets.token_hex(3)}.tokens.json"

    def publish(self, snapshot: JobSnapshot) -> None:
        self._snapshot = snapshot  # one reference assignment: atomic for the readers

    def pending(self) -> Iterator[ApiRequest]:
        """The requests waiting for the controller, without blocking."""
        while True:
            try:
                yield self.requests.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """Stop serving; requests still queued are answered 503."""
        self._closed = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for request in self.pending():
            if request.reply.set_running_or_notify_cancel():
                request.reply.set_exception(ApiError(503, "the job has ended"))
        if self.info is not None and self.info.tokens_file is not None:
            self.info.tokens_file.unlink(missing_ok=True)  # the tokens open nothing now
            if self.tokens_dir is None:
                with contextlib.suppress(OSError):  # not empty: another API's file
                    self.info.tokens_file.parent.rmdir()

    # --- the HTTP threads' calls ---------------------------------------------------

    def snapshot(self) -> JobSnapshot:
        if self._snapshot is None:
            raise ApiError(503, "the job is starting")
        return self._snapshot

    def ask(self, kind: str, args: dict[str, Any], timeout: float = REPLY_TIMEOUT_S) -> Any:
        """Queue a change for the controller and wait up to ``timeout`` s for its answer."""
        if self._closed:
            raise ApiError(503, "the job has ended")
        request = ApiRequest(kind, args)
        self.requests.put(request)
        try:
            return request.reply.result(timeout=timeout)
        except TimeoutError:
            if request.reply.cancel():
                raise ApiError(503, "the controller did not answer in time; the request "
                                    "was withdrawn") from None
            raise ApiError(503, "the controller did not answer in time; the request is "
                                "still being carried out (see GET /v1/job)") from None


def _private_dir() -> Path:
    """``<tmp>/rheostat-<uid>/<pid>/`` (mode 0700), made if need be; first the folders
    of processes that have ended (a killed driver's tokens) are removed."""
    uid = os.getuid()
    base = Path(tempfile.gettempdir()) / f"rheostat-{uid}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise RuntimeError(f"{base} is not a directory private to this user (mode 0700): "
                           "remove it, or give the job a tables file or both http_tokens")
    for child in base.iterdir():
        if child.name.isdigit() and not _alive(int(child.name)):
            shutil.rmtree(child, ignore_errors=True)
    mine = base / str(os.getpid())
    mine.mkdir(mode=0o700, exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists
        return True
    return True


def _remove_leftovers(tokens_file: Path) -> None:
    """Remove a tokens file (and its half-written copies) that an earlier run of the
    job left behind, so that nothing points at its URL while this one starts."""
    tokens_file.unlink(missing_ok=True)
    if tokens_file.parent.is_dir():
        for aside in tokens_file.parent.glob(f".{tokens_file.name}.*.tmp"):
            aside.unlink(missing_ok=True)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path``, readable by its owner only (mode 0600), at
    once: a reader that sees the file sees all of it (written aside, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
        os.write(fd, json.dumps(data, indent=2).encode())
    finally:
        os.close(fd)
    os.replace(aside, path)


class _Server(ThreadingHTTPServer):
    """Serves at most ``max_connections`` connections at once; one more is answered 503
    and closed at once, without a thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler],
                 max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse(request, f"too many connections (at most {self.max_connections}); "
                             "try again")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # a thread serves it
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse(request: socket.socket, message: str) -> None:
    """Answer 503 on a connection no thread serves, without waiting on it."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        request.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            request.recv(MAX_BODY_BYTES)  # what the client sent, so that closing is clean
        request.send(head + body)


class _Handler(BaseHTTPRequestHandler):
    owner: HttpApi
    server_version = "rheostat"
    sys_version = ""

    GET_ROUTES = ("/v1/job", "/v1/sql", "/metrics")
    POST_ROUTES = ("/v1/savepoint", "/v1/reconfigure")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            role = authorize(self.headers.get("Authorization"), self.owner.tokens)
            if role is None:
                raise ApiError(401, "a valid token is required: Authorization: Bearer <token>")
            routes = {"GET": self.GET_ROUTES, "POST": self.POST_ROUTES}
            if url.path not in self.GET_ROUTES + self.POST_ROUTES:
                raise ApiError(404, f"no route {url.path}")
            if url.path not in routes.get(method, ()):
                raise ApiError(405, f"{method} is not allowed on {url.path}")
            if method != "GET" and role != "admin":
                raise ApiError(403, "the read-only token cannot change the job")
            if url.path == "/v1/job":
                self._json(200, self._job())
            elif url.path == "/v1/sql":
                self._json(200, self._sql(parse_qs(url.query).get("q", [""])[-1]))
            elif url.path == "/metrics":
                self._send(200, render_prometheus(self.owner.snapshot()).encode(),
                           "text/plain; version=0.0.4; charset=utf-8")
            elif url.path == "/v1/savepoint":
                self._json(200, self._savepoint(self._body()))
            elif url.path == "/v1/reconfigure":
                self._json(200, self._reconfigure(self._body()))
        except ApiError as exc:
            self._json(exc.status, {"error": exc.message})
        except Exception as exc:  # never kill the server thread; say what happened
            log.exception("HTTP API: %s %s failed", method, self.path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _job(self) -> dict[str, Any]:
        s = self.owner.snapshot()
        return {"flow": s.flow, "state": s.state, "restarts": s.restarts,
                "checkpoints_completed": list(s.checkpoints),
                "tasks": metrics_summary(s.metrics)}

    def _sql(self, query: str) -> dict[str, Any]:
        if not query.strip():
            raise ApiError(400, "give a query: /v1/sql?q=select ...")
        settings = self.owner.settings
        try:  # here, on a read-only connection of its own: the controller goes on
            table = self.owner.tables.query(query, timeout_s=settings.query_timeout_s,
                                            max_rows=settings.max_query_rows)
        except (ValueError, sqlite3.Error) as exc:  # QueryTimeout names the limit
            raise ApiError(400, str(exc)) from None
        return {"columns": table.column_names,
                "rows": [list(r.values()) for r in table.to_pylist()]}

    def _savepoint(self, body: Any) -> Any:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not SAVEPOINT_NAME.fullmatch(name):
            raise ApiError(400, 'give the savepoint a name: {"name": "..."} (letters, digits, '
                                '".", "_", "-"; at most 128)')
        return self.owner.ask("savepoint", {"name": name})

    def _reconfigure(self, body: Any) -> Any:
        ops = body.get("ops") if isinstance(body, dict) else None
        if not isinstance(ops, list) or not ops or set(body) != {"ops"}:
            raise ApiError(400, 'give the operations as {"ops": [...]}, a non-empty list, e.g. '
                                '{"ops": [{"op": "rescale", "step": "count", '
                                '"parallelism": 4}]}')
        try:  # the steps are checked before an update imports anything
            parsed = ops_from_json(ops, steps=self.owner.snapshot().steps)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, str(exc)) from None
        return self.owner.ask("reconfigure", {"ops": ops, "parsed": parsed},
                              RECONFIGURE_TIMEOUT_S)

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "request body too large")
        try:
            raw = self.rfile.read(length) if length > 0 else b""
        except TimeoutError:
            self.close_connection = True
            raise ApiError(408, f"the request body did not arrive (nothing for "
                                f"{self.timeout:g} s)") from None
        if len(raw) < length:  # the client closed its side early
            self.close_connection = True
            raise ApiError(400, "the request body is shorter than its Content-Length")
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="rheostat"')
        self.end_headers()
        self.wfile.write(body)
