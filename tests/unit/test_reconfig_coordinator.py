"""The reconfiguration coordinator as a pure state machine: a request's stages, the
check phase of a function update, parts done, a restart abandoning a stage, the end."""

import pytest

from rheostat.control.reconfig import ReconfigCoordinator
from rheostat.plan.reconfig import ReconfigError


def started(c, checkers=None, remaining=()):
    req = c.next_request()
    return req, c.started(req, plan="p2", placement={"a#0": 0}, expected={"a#0", "a#1"},
                          removed=(), now=1.0, epoch=7, remaining=list(remaining),
                          checkers=checkers)


def test_a_stage_is_done_once_every_expected_task_reported_it():
    c = ReconfigCoordinator()
    c.submit(["rescale"])
    _, f = started(c, remaining=["stage 2"])
    assert c.next_request() is None  # one at a time
    assert c.part_done(7, "a#0", now=1.2) is None
    assert c.part_done(6, "a#1", now=1.3) is None  # another stage's report
    done = c.part_done(7, "a#1", now=1.5)
    assert done is f and done.duration_s == 0.5 and done.remaining == ["stage 2"]
    assert c.in_flight is None


def test_a_function_update_is_checked_by_every_checker_before_it_applies():
    c = ReconfigCoordinator()
    c.submit(["update"])
    _, f = started(c, checkers={"a#0", "a#1"})
    assert f.phase == "check" and f.expected == {"a#0", "a#1"}
    assert c.part_done(7, "a#0", now=2.0) is None  # no part counts before the check
    assert c.checked(7, "a#0", None) is None
    applied = c.checked(7, "a#1", None)
    assert applied is f and f.phase == "apply" and f.done == set()
    assert c.part_done(7, "a#0", now=2.0) is None
    assert c.part_done(7, "a#1", now=2.5) is f


def test_one_refusal_abandons_the_stage_before_anything_switched():
    c = ReconfigCoordinator()
    c.submit(["update"])
    _, f = started(c, checkers={"a#0", "a#1"})
    refused = c.checked(7, "a#1", "state does not fit")
    assert refused is f and refused.refusal == "state does not fit" and c.in_flight is None
    assert c.checked(7, "a#0", None) is None  # late answers are ignored


def test_a_request_put_back_comes_first_and_the_end_refuses_the_rest():
    c = ReconfigCoordinator()
    first, second = c.submit(["a"]), c.submit(["b"])
    req = c.next_request()
    c.put_back(req)  # e.g. waiting for workers to start
    assert c.next_request() is req
    rest = c.drain("the job ended (finished) before it ran")
    assert [r.ops for r in rest] == [["b"]]
    late = c.submit(["c"])
    with pytest.raises(ReconfigError, match="ended"):
        late.result(0)
    assert not first.done() and not second.done()  # the controller answers those


def test_a_restart_abandons_the_stage_in_flight():
    c = ReconfigCoordinator()
    c.submit(["rescale"])
    _, f = started(c)
    assert c.abandon() is f and c.in_flight is None
    assert c.part_done(7, "a#0", now=3.0) is None
