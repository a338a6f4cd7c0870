"""Issue 13's CI check: one x2 rate step converges in ONE decision on the virtual-core
cost model (``rs.testing.costly``: per-row cost as a sleep, so tasks scale linearly),
asserting the decision, not a time. The job is a fluid model of a paced source feeding a
step of known cost, reported as cumulative TaskMetrics through the real sensors."""

import math

from rheostat.control.autoscale import Autoscale, Autoscaler
from rheostat.control.sensing import MetricsHistory
from rheostat.plan.logical import Input, MapStep, Port, Routing, SourceStep
from rheostat.plan.physical import lower
from rheostat.plan.reconfig import Rescale
from rheostat.protocol import TaskMetrics

PER_ROW_S = 0.005  # 200 rows/s per task
DT = 0.5


def oracle(rate: float, utilisation: float = 0.85) -> int:
    return math.ceil(rate * PER_ROW_S / utilisation)


def test_a_x2_rate_step_converges_in_one_decision():
    steps = (SourceStep("src", (), rate=400.0, parallelism=1),
             MapStep("work", (Input(Port("src"), Routing("rebalance")),), fn=None))
    loop = Autoscaler(Autoscale(move_key_groups=False))
    par, t, queued = oracle(400), 0.0, 0.0
    src = TaskMetrics()
    work = [TaskMetrics() for _ in range(64)]
    history = MetricsHistory()
    carried: list[tuple[float, int]] = []
    while t < 30.0:
        rate = 400.0 if t < 10.0 else 800.0  # the x2 step at 10 s
        queued += rate * DT
        served = min(queued, par / PER_ROW_S * DT)  # a backpressured source waits
        queued -= served
        src = TaskMetrics(src.rows_in + int(served), src.rows_out + int(served),
                          busy_s=src.busy_s + 0.01, backlog_rows=int(queued),
                          paced_rate_per_s=rate)
        for i in range(par):
            m, share = work[i], served / par
            work[i] = TaskMetrics(m.rows_in + int(share), m.rows_out + int(share),
                                  busy_s=m.busy_s + int(share) * PER_ROW_S)
        t += DT
        plan = lower(steps, parallelism=par)
        history.add({"src#0": src, **{f"work#{i}": work[i] for i in range(par)}}, at=t)
        if loop.due(t):
            _, ops = loop.evaluate(history.snapshot(plan, t, 2.0), now=t, busy=False)
            for op in ops:
                assert isinstance(op, Rescale) and op.step == "work"
                carried.append((t, op.parallelism))
                par = op.parallelism
    after_step = [p for at, p in carried if at > 10.0]
    assert par == oracle(800) == 5
    assert after_step == [oracle(800)]  # the first change after the step is the oracle's
    assert all(p == oracle(400) for at, p in carried if at <= 10.0)  # nothing before it
