"""The baselines behave as published, on the same snapshots and the same simulation."""

from policy_sim import WORK, changes, run, snapshot

from rheostat.policy import baselines
from rheostat.policy.baselines import FlinkConfig, FlinkMemory


def linear(p: int) -> float:
    return 1000.0 * p


def test_ds2_sizes_a_x2_step_in_one_decision_at_full_utilisation():
    seen = run(baselines.ds2, [1500.0] * 2 + [3000.0] * 4, 2, linear)
    assert seen == [2, 2, 2, 3, 3, 3, 3]
    d = baselines.ds2(snapshot(3000.0, 2, linear)).of(WORK)
    assert d.reason == ("target 3000 rows/s / 1000 rows/s per task = 3 tasks: rescale 2 -> 3")


def test_ds2_ignores_a_scale_down_by_one_but_not_by_two():
    d = baselines.ds2(snapshot(2500.0, 4, linear)).of(WORK)
    assert d.action == "none" and d.ideal_parallelism == 3 and "ignores" in d.reason
    assert baselines.ds2(snapshot(1500.0, 4, linear)).of(WORK).target_parallelism == 2


def test_ds2_has_no_catch_up():
    d = baselines.ds2(snapshot(3000.0, 3, linear, backlog=1_000_000)).of(WORK)
    assert d.action == "none"


FAST = FlinkConfig().time_compressed(60)  # 5 s stabilisation, 15 s window, 60 s scale-down


def test_flink_waits_for_stabilisation_and_its_metric_window():
    out = baselines.flink(snapshot(3000.0, 2, linear, time_s=0.0), FAST)
    assert out.of(WORK).action == "none" and "stabilising" in out.of(WORK).reason
    out = baselines.flink(snapshot(3000.0, 2, linear, time_s=19.0), FAST, out.memory)
    assert out.of(WORK).action == "none"
    out = baselines.flink(snapshot(3000.0, 2, linear, time_s=20.0), FAST, out.memory)
    d = out.of(WORK)
    # 3000 rows/s + a 5 s restart's rows over 30 s of catch-up, at 0.7 of 1000 rows/s a task
    assert d.action == "rescale" and d.target_parallelism == 5
    assert out.memory.last_change_s == 20.0
    again = baselines.flink(snapshot(3000.0, 5, linear, time_s=21.0), FAST, out.memory)
    assert "stabilising" in again.of(WORK).reason


def test_flink_reads_busy_time_as_the_max_over_subtasks_and_aligns_to_key_groups():
    snap = snapshot(2000.0, 2, linear)
    work = snap.steps[WORK]
    skewed = type(work)(WORK, 2, (work.tasks[0], type(work.tasks[0])(
        "work#1", 1000.0, 1000.0, 0.25)), inputs=("src",),
        key_group_owner=tuple(g * 2 // 128 for g in range(128)))
    snap = type(snap)(0.0, 1.0, {"src": snap.steps["src"], WORK: skewed})
    d = baselines.flink(snap, FAST, FlinkMemory(-100.0)).of(WORK)
    # capacity = 2000 rows/s / busy max 1.0: sized ceil(2 * 2111 / 1400) = 4, a divisor of 128
    assert d.target_parallelism == 4 and d.inputs["busy_max"] == 1.0
    plain = baselines.flink(snapshot(2000.0, 2, linear), FAST, FlinkMemory(-100.0)).of(WORK)
    assert plain.target_parallelism == 4  # ceil(2111 / 700) = 4 without alignment either
    odd = baselines.flink(snapshot(3000.0, 3, linear), FAST, FlinkMemory(-100.0)).of(WORK)
    assert odd.target_parallelism == 5


def test_flink_holds_a_scale_down_for_its_delay():
    memory = FlinkMemory(-100.0)
    out = baselines.flink(snapshot(500.0, 6, linear, time_s=0.0), FAST, memory)
    assert out.of(WORK).action == "none" and "scale-down waits until t=60s" in out.of(WORK).reason
    out = baselines.flink(snapshot(500.0, 6, linear, time_s=59.0), FAST, out.memory)
    assert out.of(WORK).action == "none"
    out = baselines.flink(snapshot(500.0, 6, linear, time_s=60.0), FAST, out.memory)
    assert out.of(WORK).action == "rescale" and out.of(WORK).target_parallelism == 1


def test_flink_does_nothing_inside_its_utilisation_band():
    d = baselines.flink(snapshot(1200.0, 2, linear), FAST, FlinkMemory(-100.0)).of(WORK)
    assert d.action == "none" and "within [40%, 100%]" in d.reason


def test_ray_style_takes_k_decisions_for_a_k_step_ramp():
    seen = run(baselines.ray_style, [5500.0] * 8, 2, linear)
    assert seen == [2, 3, 4, 5, 6, 6, 6, 6, 6]
    assert changes(seen) == 4
    down = run(baselines.ray_style, [1000.0] * 5, 6, linear)
    assert down == [6, 5, 4, 3, 2, 2]  # -1 a decision while under 0.5
