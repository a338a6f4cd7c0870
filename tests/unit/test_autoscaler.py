"""The loop's rules over the policies: skew before size, cooldown, sustained scale-down,
a reconfiguration in progress holds everything, every evaluation is recorded."""

from __future__ import annotations

import pytest

from rheostat.control.autoscale import Autoscale, Autoscaler
from rheostat.plan.reconfig import MoveKeyGroups, Rescale
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample

PER_TASK = 1000.0  # rows/s one task of "work" serves (its true rate)


def snapshot(rate: float, parallelism: int, t: float, groups: list[dict[int, float]] | None = None
             ) -> MetricsSnapshot:
    """``work`` at ``parallelism`` offered ``rate`` rows/s by a source; each task takes an
    equal share (or ``groups[i]``'s rows) at ``PER_TASK`` rows/s of useful time."""
    src = StepSample("src", 1, (TaskSample("src#0", rate, rate, 0.1),), is_source=True,
                     source_rate_per_s=rate)
    tasks = []
    for i in range(parallelism):
        offered = sum(groups[i].values()) if groups else rate / parallelism
        served = min(offered, PER_TASK)  # a saturated task takes what it can
        tasks.append(TaskSample(f"work#{i}", served, served, served / PER_TASK,
                                key_group_rows=groups[i] if groups else None))
    owner = None
    if groups:
        owner_of = {g: i for i, gs in enumerate(groups) for g in gs}
        owner = tuple(owner_of.get(g, 0) for g in range(8))
    work = StepSample("work", parallelism, tuple(tasks), inputs=("src",), max_parallelism=8,
                      key_group_owner=owner)
    return MetricsSnapshot(t, 1.0, {"src": src, "work": work})


def work_verdict(verdicts, policy="rate"):
    return next(v for v in verdicts if v.decision.step_id == "work" and v.decision.policy == policy)


def test_a_rate_step_is_carried_out_at_once_and_then_left_alone_for_the_cooldown():
    scaler = Autoscaler(Autoscale(cooldown_s=4.0))
    verdicts, ops = scaler.evaluate(snapshot(1700.0, 1, t=0.0), now=0.0, busy=False)
    assert ops == [Rescale("work", 2)]
    assert work_verdict(verdicts).done == "carried out"
    verdicts, ops = scaler.evaluate(snapshot(3400.0, 2, t=2.0), now=2.0, busy=False)
    assert ops == [] and "cooldown" in work_verdict(verdicts).done
    verdicts, ops = scaler.evaluate(snapshot(3400.0, 2, t=5.0), now=5.0, busy=False)
    assert ops == [Rescale("work", 4)]


def test_a_scale_down_waits_until_it_was_wanted_long_enough_and_a_dip_resets_it():
    scaler = Autoscaler(Autoscale(cooldown_s=0.0, scale_down_after_s=10.0))
    for now in (0.0, 4.0, 8.0):
        verdicts, ops = scaler.evaluate(snapshot(400.0, 4, t=now), now=now, busy=False)
        assert ops == [] and "scale-down" in work_verdict(verdicts).done
    scaler.evaluate(snapshot(3000.0, 4, t=9.0), now=9.0, busy=False)  # load is back
    verdicts, ops = scaler.evaluate(snapshot(400.0, 4, t=12.0), now=12.0, busy=False)
    assert ops == []  # the clock started again at 12
    _, ops = scaler.evaluate(snapshot(400.0, 4, t=22.0), now=22.0, busy=False)
    assert ops == [Rescale("work", 1)]


def test_while_a_reconfiguration_runs_the_loop_records_but_does_nothing():
    scaler = Autoscaler(Autoscale())
    verdicts, ops = scaler.evaluate(snapshot(3400.0, 1, t=0.0), now=0.0, busy=True)
    assert ops == []
    assert work_verdict(verdicts).decision.action == "rescale"
    assert work_verdict(verdicts).done == "held: a reconfiguration is queued or running"


def test_skewed_key_groups_move_first_and_the_step_is_not_rescaled_in_that_round():
    hot = [{0: 300.0, 1: 300.0, 2: 290.0}, {3: 10.0}]  # task 0 serves 900, task 1 only 10
    scaler = Autoscaler(Autoscale())
    verdicts, ops = scaler.evaluate(snapshot(910.0, 2, t=0.0, groups=hot), now=0.0, busy=False)
    moves = [op for op in ops if isinstance(op, MoveKeyGroups)]
    assert moves and all(op.to_task == 1 for op in moves)
    assert not any(isinstance(op, Rescale) for op in ops)
    assert work_verdict(verdicts, "skew").done == "carried out"


def test_every_evaluation_gives_a_verdict_per_step_and_policy_even_with_nothing_to_do():
    scaler = Autoscaler(Autoscale())
    verdicts, ops = scaler.evaluate(snapshot(1000.0, 2, t=0.0), now=0.0, busy=False)
    assert ops == []
    assert {(v.decision.step_id, v.decision.policy) for v in verdicts} >= {
        ("src", "rate"), ("work", "rate")}
    assert all(v.decision.reason for v in verdicts)


def test_the_first_evaluation_is_one_interval_in():
    scaler = Autoscaler(Autoscale(interval_s=2.0))
    assert not scaler.due(10.0)
    assert not scaler.due(11.0)
    assert scaler.due(12.0)


@pytest.mark.parametrize("field", ["interval_s", "window_s"])
def test_a_loop_without_a_positive_interval_or_window_is_refused(field):
    with pytest.raises(ValueError, match=field):
        Autoscale(**{field: 0})
