"""The skew policy: minimal greedy moves, state bytes as the tie-break, hot keys reported."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from rheostat.policy import rate, skew
from rheostat.policy.skew import SkewConfig, imbalance, plan_moves
from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample


def _step(*groups: dict[int, float], sizes: dict[int, int] | None = None,
          rate_per_task: float = 1000.0) -> MetricsSnapshot:
    tasks = tuple(
        TaskSample(f"agg#{i}", sum(g.values()), sum(g.values()),
                   sum(g.values()) / rate_per_task, key_group_rows=g,
                   state_bytes_per_group={k: (sizes or {}).get(k, 0) for k in g})
        for i, g in enumerate(groups))
    return MetricsSnapshot(1.0, 1.0, {"agg": StepSample("agg", len(tasks), tasks,
                                                        inputs=("src",))})


def test_balanced_enough_is_left_alone():
    d = skew.decide(_step({0: 100.0, 1: 90.0}, {2: 160.0})).of("agg")
    assert d.action == "none" and not d.moves and d.reason == "imbalance 16% is under 20%"


def test_moves_are_minimal_and_say_so():
    d = skew.decide(_step({0: 200.0, 1: 200.0, 2: 200.0, 3: 200.0}, {4: 400.0})).of("agg")
    assert d.action == "move" and dict(d.moves) == {0: 1}
    assert d.inputs["imbalance_after"] < 0.2 and d.inputs["groups_moved"] == 1.0
    assert "move 1 key group (200 rows/s" in d.reason
    assert d.predicted_capacity_per_s == 1000.0 * 1200.0 / 600.0


def test_of_equal_loads_the_group_with_less_state_moves():
    snap = _step({0: 100.0, 1: 100.0, 2: 100.0}, {}, sizes={0: 5000, 1: 10, 2: 700})
    d = skew.decide(snap).of("agg")
    assert dict(d.moves) == {1: 1} and d.inputs["state_bytes_moved"] == 10.0


def test_when_one_group_fills_its_task_no_move_is_made():
    d = skew.decide(_step({0: 500.0}, {1: 100.0})).of("agg")
    assert d.action == "none" and "no key group move lowers it" in d.reason


def test_a_hot_key_is_reported_not_scaled_and_the_rest_move_around_it():
    snap = _step({7: 920.0, 1: 50.0, 2: 30.0}, {3: 10.0})
    d = skew.decide(snap).of("agg")
    assert d.action == "report_hot_key" and d.target_parallelism == d.parallelism == 2
    assert not d.moves  # its task is within 20% of the hot group: moves would not help
    tight = skew.decide(snap, SkewConfig(threshold=0.05)).of("agg")
    assert tight.action == "report_hot_key" and dict(tight.moves) == {1: 1}
    assert d.reason.startswith("key group 7 carries 920 rows/s, more than 90% of what one "
                               "task serves (1000 rows/s)")
    assert "reported, not scaled" in d.reason
    r = rate.decide(snap).of("agg")  # and the rate policy does not add tasks for it either
    assert r.action == "none" and r.target_parallelism == 2


def test_not_keyed_and_max_moves():
    plain = MetricsSnapshot(0.0, 1.0, {"map": StepSample("map", 1, (
        TaskSample("map#0", 10.0, 10.0, 0.1),))})
    assert skew.decide(plain).of("map").reason.startswith("no key-group rows counted")
    groups = [{g: 1.0 for g in range(8)}, {}]
    assert len(plan_moves(groups, 0.2)) == 4
    assert len(plan_moves(groups, 0.2, max_moves=2)) == 2


def _minimal_moves(groups: list[dict[int, float]], threshold: float) -> int | None:
    items = [(w, i) for i, g in enumerate(groups) for w in g.values()]
    best = None
    for owners in itertools.product(range(len(groups)), repeat=len(items)):
        load = [0.0] * len(groups)
        for (w, _), o in zip(items, owners):
            load[o] += w
        if imbalance(load) < threshold:
            moved = sum(o != i for (_, i), o in zip(items, owners))
            best = moved if best is None else min(best, moved)
    return best


@settings(max_examples=120, deadline=None)
@given(owners=st.lists(st.integers(0, 2), min_size=1, max_size=7),
       tasks=st.integers(2, 3), threshold=st.sampled_from([0.1, 0.2, 0.34]))
def test_equal_groups_move_no_more_than_needed(owners, tasks, threshold):
    groups: list[dict[int, float]] = [{} for _ in range(tasks)]
    for g, o in enumerate(owners):
        groups[o % tasks][g] = 1.0
    moves = plan_moves(groups, threshold)
    need = _minimal_moves(groups, threshold)
    load = [sum(g.values()) for g in groups]
    for g, to in moves.items():
        load[next(i for i, gs in enumerate(groups) if g in gs)] -= 1.0
        load[to] += 1.0
    if need is None:
        assert max(load) <= max(sum(g.values()) for g in groups)  # never worse
    else:
        assert len(moves) == need and imbalance(load) < threshold


def test_an_unlimited_config_is_the_default():
    assert SkewConfig().max_moves is None and SkewConfig().threshold == 0.2
