"""Knobs: declared on steps, checked when the flow is built, passed to user functions."""

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import rheostat as rs
from rheostat.api.flow import check_knobs, missing_knob_parameters
from rheostat.plan.errors import FlowError
from rheostat.plan.logical import KeyedProcessStep, MapStep
from rheostat.runtime.operator import OperatorContext
from rheostat.runtime.operators.process import KeyedProcessOperator
from rheostat.runtime.operators.stateless import MapOperator

DATA = [{"k": "a" if i % 2 else "b", "x": i, "t": i * 10} for i in range(10)]


def scale(row, factor):
    return {"x": row["x"] * factor}


def test_map_filter_and_flat_map_get_their_knobs():
    flow = rs.Flow("knobs")
    out = rs.sinks.collect()
    (flow.source("s", rs.testing.rows(DATA, batch_size=4), timestamp="t")
        .filter(lambda row, least: row["x"] >= least, knobs={"least": 6}, name="keep")
        .map(scale, knobs={"factor": 3}, name="scale")
        .flat_map(lambda row, copies=1: [row] * copies, knobs={"copies": 2}, name="copy")
        .sink("out", out))
    rs.run(flow, backend="inline")
    assert sorted(r["x"] for r in out.to_pylist()) == [18, 18, 21, 21, 24, 24, 27, 27]
    assert flow.step("scale").knobs == {"factor": 3}
    assert flow.step("keep").knobs == {"least": 6}


def test_map_batches_gets_its_knobs_and_steps_without_knobs_are_unchanged():
    flow = rs.Flow("knobs_batches")
    out = rs.sinks.collect()

    def shift(batch, *, by, label):
        return batch.append_column(label, pc.add(batch["x"], by))

    (flow.source("s", rs.testing.rows(DATA, batch_size=4), timestamp="t")
        .map_batches(shift, knobs={"by": 100, "label": "y"}, name="shift")
        .map_batches(lambda b: b.filter(pc.less(b["x"], 3)), name="plain")
        .sink("out", out))
    rs.run(flow, backend="inline")
    assert sorted((r["x"], r["y"]) for r in out.to_pylist()) == [(0, 100), (1, 101), (2, 102)]
    assert flow.step("plain").knobs == {}


class UpTo(rs.KeyedProcess):
    """Counts rows per key; emits the count while it is at most the ``limit`` knob."""

    def process(self, key, rows, ctx):
        n = ctx.state.get(0) + len(rows)
        ctx.state.set(n)
        return [{"n": n}] if n <= ctx.knobs["limit"] else []


def test_keyed_process_reads_ctx_knobs():
    flow = rs.Flow("knobs_process")
    out = rs.sinks.collect()
    (flow.source("s", rs.testing.rows(DATA, batch_size=1), timestamp="t")
        .key_by("k").process(UpTo(), knobs={"limit": 2}, name="upto")
        .sink("out", out))
    rs.run(flow, backend="inline")
    assert sorted((r["k"], r["n"]) for r in out.to_pylist()) == [
        ("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert flow.step("upto").knobs == {"limit": 2}


def test_operators_read_the_current_knob_values():
    """A step swapped for one with new knob values takes effect at the next batch."""
    emitted: list[pa.RecordBatch] = []
    step = MapStep("m", (), fn=scale, mode="map", knobs={"factor": 2})
    op = MapOperator(step)
    op.open(OperatorContext.for_test(step, emitted.append))
    op.on_batch(pa.record_batch({"x": [1, 2]}), 0)
    op.step = dataclasses.replace(step, knobs={"factor": 10})
    op.on_batch(pa.record_batch({"x": [1, 2]}), 0)
    assert [b.column("x").to_pylist() for b in emitted] == [[2, 4], [10, 20]]


def test_ctx_knobs_is_read_only():
    seen = []

    class Peek(rs.KeyedProcess):
        def process(self, key, rows, ctx):
            seen.append(dict(ctx.knobs))
            with pytest.raises(TypeError):
                ctx.knobs["limit"] = 0  # type: ignore[index]
            return []

    step = KeyedProcessStep("p", (), keys=("k",), fn=Peek(), knobs={"limit": 5})
    op = KeyedProcessOperator(step)
    op.open(OperatorContext.for_test(step, lambda b: None))
    op.on_batch(pa.record_batch({"k": ["a"]}), 0)
    assert seen == [{"limit": 5}]


# --- check_state -----------------------------------------------------------------------


class Counter(rs.KeyedProcess):
    def process(self, key, rows, ctx):
        ctx.state.set(ctx.state.get(0) + len(rows))
        return []


class NeedsDicts(Counter):
    def __init__(self):
        self.checked = []

    def check_state(self, key, state):
        if not isinstance(state, dict):
            raise TypeError(f"key {key!r}: expected a dict, got {state!r}")
        self.checked.append(key)


def _counter_with_state() -> KeyedProcessOperator:
    step = KeyedProcessStep("p", (), keys=("k",), fn=Counter())
    op = KeyedProcessOperator(step)
    op.open(OperatorContext.for_test(step, lambda b: None))
    op.on_batch(pa.record_batch({"k": ["a", "b", "a"]}), 0)
    return op


def test_check_state_lets_a_new_version_refuse_state_it_cannot_read():
    op = _counter_with_state()
    op.check_state()  # the current function has no check_state: nothing to do
    with pytest.raises(TypeError, match=r"expected a dict, got [12]"):
        op.check_state(NeedsDicts)  # a class is instantiated, as the operator does
    op.fn = NeedsDicts()
    with pytest.raises(TypeError, match="expected a dict"):
        op.check_state()


def test_check_state_sees_every_key():
    op = _counter_with_state()
    for values in op._state.values():
        for key in values:
            values[key] = {"n": values[key]}
    checker = NeedsDicts()
    op.check_state(checker)
    assert sorted(checker.checked) == ["a", "b"]


# --- build-time checks ------------------------------------------------------------------


@pytest.mark.parametrize(("knobs", "message"), [
    ({"not valid": 1}, "knob name 'not valid' must be a Python identifier"),
    ({"class": 1}, "knob name 'class'"),
    ({3: 1}, "knob name 3"),
    ({"x": [1, 2]}, "knob 'x' = [1, 2]: a knob's value must be a number"),
    ({"x": {"a": 1}}, "a JSON scalar"),
    ({"x": object()}, "a JSON scalar"),
    ([("x", 1)], "knobs must be a dict"),
])
def test_bad_knobs_are_flow_errors_naming_the_step(knobs, message):
    flow = rs.Flow("bad")
    s = flow.source("s", rs.testing.rows(DATA))
    with pytest.raises(FlowError, match="step 'named'") as err:
        s.map(lambda row, **kw: row, knobs=knobs, name="named")
    assert message in str(err.value)
    with pytest.raises(FlowError, match="step 'proc'"):
        s.key_by("k").process(UpTo(), knobs=knobs, name="proc")


def test_a_function_must_take_its_knobs():
    flow = rs.Flow("bad")
    s = flow.source("s", rs.testing.rows(DATA))
    with pytest.raises(FlowError, match=r"step 'scale2'.*knob\(s\) \['factr'\]"):
        s.map(scale, knobs={"factr": 2}, name="scale2")
    with pytest.raises(FlowError, match=r"step 's.map_batches'"):
        s.map_batches(lambda b: b, knobs={"n": 1})
    s.map(scale, knobs={"factor": 2}, name="ok")


def test_check_knobs_and_missing_parameters():
    assert check_knobs("s", None) == {}
    assert check_knobs("s", {"a": True, "b": None, "c": "x", "d": 1.5}) == {
        "a": True, "b": None, "c": "x", "d": 1.5}
    assert missing_knob_parameters(lambda row, **kw: row, ["a"]) == []
    assert missing_knob_parameters(lambda row, *, a: row, ["a", "b"]) == ["b"]
    assert missing_knob_parameters(lambda row, *a: row, ["a"]) == ["a"]
    assert missing_knob_parameters(lambda row, a, /: row, ["a"]) == ["a"]
