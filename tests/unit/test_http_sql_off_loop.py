"""A long query through GET /v1/sql is stopped at its time limit, and the job goes on
processing meanwhile: the query runs on the HTTP thread, on a connection of its own."""

import functools
import threading
import urllib.parse

from http_calls import ADMIN, READ, Endless, call, wait_for_api

import rheostat as rs
from rheostat import launch
from rheostat.control.http_api import HttpApiSettings

LIMIT_S = 8
#: About a billion rows: minutes of work, unless stopped.
LONG = ("with recursive c(n) as (select 1 union all select n + 1 from c "
        "where n < 1000000000) select count(*) from c")


def source_rows(url):
    status, body = call(url + "/v1/job", READ)
    assert status == 200, body
    return body["tasks"]["s#0"]["rows_in"]


def test_a_long_query_is_cut_off_while_the_source_keeps_advancing(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "HttpApiSettings",
                        functools.partial(HttpApiSettings, query_timeout_s=LIMIT_S))
    flow = rs.Flow("busy")
    flow.source("s", Endless(tmp_path / "release")).sink("o", rs.sinks.null())
    job = rs.start(flow, backend="inline", http_port=0,
                   http_tokens={"admin": ADMIN, "read": READ})
    try:
        url = wait_for_api(job)
        answer: dict = {}
        query = threading.Thread(target=lambda: answer.update(
            reply=call(url + "/v1/sql?q=" + urllib.parse.quote(LONG), READ, timeout=300)))
        query.start()
        # While the query runs, the job's metrics go on changing: the controller's loop
        # (which on the inline backend also runs the source) is not held up.
        seen = [source_rows(url)]
        for _ in range(400):  # a bound for when they never change
            if not query.is_alive() or len(set(seen)) >= 5:
                break
            seen.append(source_rows(url))
            query.join(timeout=0.05)
        advanced_meanwhile = query.is_alive() and len(set(seen)) >= 5
        assert advanced_meanwhile, f"the source's rows while the query ran: {sorted(set(seen))}"
        query.join(timeout=300)
        status, body = answer["reply"]
    finally:
        (tmp_path / "release").touch()
    result = job.wait()
    assert status == 400 and f"time limit of {LIMIT_S} s" in body["error"], body
    assert result.state == "finished"
