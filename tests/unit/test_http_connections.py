"""The API closes a connection that sends nothing, or less body than it announced, and
serves a bounded number of connections at once."""

from http_calls import ADMIN, READ, call, connect, read_until_closed

from rheostat.control.http_api import HttpApi, HttpApiSettings, JobSnapshot
from rheostat.control.tables import JobTables


def serving(**settings):
    api = HttpApi(JobTables(), HttpApiSettings(tokens={"admin": ADMIN, "read": READ},
                                               **settings))
    url = api.start("conn").url
    api.publish(JobSnapshot("conn", "running", 0, (), {}, {}, {}))
    return api, url


def test_an_idle_connection_is_closed():
    api, url = serving(read_timeout_s=0.3)
    try:
        with connect(url) as idle:
            assert read_until_closed(idle) == b""  # closed, without an answer
        with connect(url) as half:  # a request line, then nothing
            half.sendall(b"GET /v1/job HTTP/1.0\r\n")
            read_until_closed(half)
        assert call(url + "/v1/job", READ)[0] == 200  # and the server still serves
    finally:
        api.close()


def test_a_body_shorter_than_its_content_length_is_answered_and_closed():
    api, url = serving(read_timeout_s=0.3)
    try:
        with connect(url) as liar:
            liar.sendall(b"POST /v1/savepoint HTTP/1.0\r\n"
                         b"Authorization: Bearer " + ADMIN.encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"name\": ")
            answer = read_until_closed(liar)
        assert answer.startswith(b"HTTP/1.0 408"), answer[:200]
        assert b"did not arrive" in answer
    finally:
        api.close()


def test_connections_beyond_the_bound_are_refused_and_a_freed_slot_serves_again():
    api, url = serving(read_timeout_s=60, max_connections=2)
    try:
        held = [connect(url), connect(url)]
        for sock in held:  # each holds a server thread, in the middle of its headers
            sock.sendall(b"GET /v1/job HTTP/1.0\r\n")
        with connect(url) as extra:
            extra.sendall(b"GET /v1/job HTTP/1.0\r\nAuthorization: Bearer "
                          + READ.encode() + b"\r\n\r\n")
            answer = read_until_closed(extra)
        assert answer == b"" or answer.startswith(b"HTTP/1.0 503"), answer[:200]
        assert b"200 OK" not in answer
        for sock in held:
            sock.close()
        status = None
        for _ in range(200):  # the threads of the closed ones end, freeing their slots
            try:
                status, _ = call(url + "/v1/job", READ)
            except OSError:  # refused: reset before the answer was read
                continue
            if status == 200:
                break
        assert status == 200
    finally:
        api.close()
