"""The snapshot's derived figures (DS2's definitions) and its immutability."""

import dataclasses

import pytest

from rheostat.policy.snapshot import MetricsSnapshot, StepSample, TaskSample


def _step() -> StepSample:
    return StepSample("agg", 2, (
        TaskSample("agg#0", 600.0, 300.0, 0.6, blocked_fraction=0.2, queued_rows=50,
                   key_group_rows={0: 400.0, 1: 200.0}, state_bytes_per_group={0: 10, 1: 20}),
        TaskSample("agg#1", 200.0, 100.0, 0.2, key_group_rows={2: 200.0}),
    ), inputs=("src",))


def test_rates_busy_and_selectivity():
    s = _step()
    assert s.input_rate == 800.0 and s.output_rate == 400.0 and s.selectivity == 0.5
    assert s.true_rates == (1000.0, 1000.0)
    assert s.true_rate_per_task == 1000.0 and s.capacity == 2000.0
    assert s.busy_max == 0.6 and s.busy_mean == pytest.approx(0.4)
    assert s.blocked_mean == pytest.approx(0.1)


def test_skew_index_and_lag():
    s = _step()
    assert s.skew_index == pytest.approx(600.0 / 400.0)
    assert dict(s.group_loads) == {0: 400.0, 1: 200.0, 2: 200.0}
    assert s.lag_rows == 50 and s.lag_s == pytest.approx(50 / 800)
    src = StepSample("src", 1, (TaskSample("src#0", 0.0, 0.0, 0.0),), is_source=True,
                     backlog_rows=10)
    assert src.lag_rows == 10 and src.lag_s == float("inf")
    assert src.true_rate_per_task is None and src.capacity is None


def test_a_task_with_no_useful_time_has_no_true_rate():
    t = TaskSample("x#0", 0.0, 0.0, 0.0)
    assert t.true_rate is None and t.true_output_rate is None and t.selectivity == 1.0


def test_a_snapshot_cannot_change_under_a_policy():
    rows = {0: 1.0}
    t = TaskSample("x#0", 1.0, 1.0, 0.5, key_group_rows=rows)
    rows[1] = 2.0
    assert dict(t.key_group_rows) == {0: 1.0}
    with pytest.raises(TypeError):
        t.key_group_rows[2] = 3.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.rows_in_per_s = 2.0  # type: ignore[misc]
    snap = MetricsSnapshot(0.0, 1.0, {"x": StepSample("x", 1, [t])})
    assert isinstance(snap.steps["x"].tasks, tuple)
    with pytest.raises(TypeError):
        snap.steps["y"] = snap.steps["x"]  # type: ignore[index]


def test_topological_order_and_cycles():
    snap = MetricsSnapshot(0.0, 1.0, {
        "c": StepSample("c", 1, (), inputs=("a", "b")),
        "b": StepSample("b", 1, (), inputs=("a",)),
        "a": StepSample("a", 1, (), is_source=True)})
    assert snap.topological() == ("a", "b", "c")
    loop = MetricsSnapshot(0.0, 1.0, {"a": StepSample("a", 1, (), inputs=("b",)),
                                      "b": StepSample("b", 1, (), inputs=("a",))})
    with pytest.raises(ValueError, match="cycle"):
        loop.topological()
