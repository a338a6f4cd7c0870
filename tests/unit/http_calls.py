"""Helpers for the tests of the job's HTTP API: requests, raw sockets, a running job."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

import pyarrow as pa

from rheostat.runtime.io import Source, SourceReader

ADMIN, READ = "admin-token-of-the-test", "read-token-of-the-test"


def call_raw(url, token=None, method="GET", body=None, timeout=60):
    """(status, headers, body bytes) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def call(url, token=None, method="GET", body=None, timeout=60):
    """(status, parsed JSON body) of one request."""
    status, _, raw = call_raw(url, token, method, body, timeout)
    return status, json.loads(raw)


def read_until_closed(sock, limit_s=60):
    """All the server sends until it closes the connection. A server that neither sends
    nor closes within ``limit_s`` raises ``TimeoutError`` (a generous bound: the test
    asserts that the connection is closed, not when)."""
    sock.settimeout(limit_s)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def connect(url):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=60)


def wait_for_api(job, limit_s=60):
    """The URL of a started job's API, once it serves."""
    deadline = time.monotonic() + limit_s
    while job.controller.api is None or job.controller.api.info is None:
        if time.monotonic() > deadline:
            raise AssertionError("the job's API did not start")
        time.sleep(0.01)
    return job.controller.api.info.url


class Endless(Source):
    """A batch on every read until ``release`` exists; ``reads`` counts them."""

    reads = 0

    def __init__(self, release):
        self.release = str(release)

    def splits(self, parallelism):
        return [0]

    def open(self, split, position=None, batch_size=0):
        return _EndlessReader(self.release, position or 0)


class _EndlessReader(SourceReader):
    def __init__(self, release, start):
        self.release, self.next = release, start

    def read(self):
        if os.path.exists(self.release):
            return None
        Endless.reads += 1
        self.next += 1
        time.sleep(0.001)
        return pa.record_batch({"k": [self.next % 7], "v": [self.next]})

    def position(self):
        return self.next
