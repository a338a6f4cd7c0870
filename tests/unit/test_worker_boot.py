"""What a worker hosts when it boots: its tasks of the plan, or — a worker started for a
live reconfiguration (an elastic backend's) — nothing until ``Reconfigure`` arrives.

A joining worker that started the added tasks at boot let them take rows of the key
groups they gain before they knew to hold those rows back for the handed-over state; the
``Reconfigure`` then replaced them, and those rows were lost (seen on Ray as a partial
window in tests/e2e/test_reconfig.py, about one run in four under load).
"""

from __future__ import annotations

import threading
from collections import deque

import rheostat as rs
from rheostat.backends.hosting import WorkerLoop, boot_blob
from rheostat.plan.physical import lower


def plan():
    flow = rs.Flow("boot")
    (flow.source("n", rs.testing.rows([{"k": i % 5} for i in range(50)]))
     .key_by("k").process(rs.stateful_map(lambda s, r: ((s or 0) + 1, r)), name="count")
     .sink("out", rs.sinks.null()))
    return lower(flow.steps, 1, flow_name=flow.name)


def boot(joining: bool) -> WorkerLoop:
    p = plan()
    placement = {t: 0 for t in p.task_ids}
    events: list = []
    blob = boot_blob(p, placement, 1 << 20, 0.5, None, None, [], joining=joining)
    loop = WorkerLoop(0, events.append, deque(), threading.Event(), {}, blob)
    assert events == [], events  # it booted without a failure
    return loop


def test_a_worker_of_the_starting_job_hosts_its_tasks_of_the_plan():
    assert [t.task_id for t in boot(joining=False).host.tasks] == plan().task_ids


def test_a_worker_joining_a_running_job_hosts_nothing_until_its_reconfiguration():
    loop = boot(joining=True)
    assert loop.host.tasks == []
    assert loop.host.done  # its loop idles, waiting for commands
