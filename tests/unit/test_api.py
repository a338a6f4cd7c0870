"""Building flows: build-time errors name the step and what to do."""

import threading

import pytest

import rheostat as rs
from rheostat.api.checks import check_serialisable
from rheostat.api.durations import to_ms
from rheostat.plan.errors import FlowError


def source(flow, name="rows"):
    return flow.source(name, rs.testing.rows([{"k": "a", "v": 1, "t": 0}]), timestamp="t")


def test_duplicate_step_id_is_refused():
    flow = rs.Flow("f")
    source(flow)
    with pytest.raises(FlowError, match="duplicate step id 'rows'"):
        source(flow)


def test_unknown_columns_are_caught_at_build_time_where_knowable():
    flow = rs.Flow("f")
    s = source(flow)
    with pytest.raises(FlowError, match=r"unknown column\(s\) \['nope'\]"):
        s.key_by("nope")
    with pytest.raises(FlowError, match="timestamp column 'when'"):
        flow.source("x", rs.testing.rows([{"a": 1}]), timestamp="when")
    keyed = s.key_by("k").window(rs.windows.tumbling("1s"))
    with pytest.raises(FlowError, match="unknown column"):
        keyed.aggregate(total=rs.agg.sum("missing"))


def test_windows_need_event_time():
    flow = rs.Flow("f")
    s = flow.source("rows", rs.testing.rows([{"k": 1}]))
    with pytest.raises(FlowError, match="needs event time"):
        s.key_by("k").window(rs.windows.tumbling("1s"))


def test_unconnected_step_and_missing_sink_are_reported():
    flow = rs.Flow("f")
    with pytest.raises(FlowError, match="has no steps"):
        flow.validate()
    s = source(flow)
    s.map(lambda r: r, name="dangling")
    with pytest.raises(FlowError, match="no sink"):
        flow.validate()
    s.sink("out", rs.sinks.null())
    with pytest.raises(FlowError, match="output of step 'dangling' goes nowhere"):
        flow.validate()


def test_step_ids_are_derived_stably():
    def build():
        flow = rs.Flow("f")
        s = source(flow)
        s.map(lambda r: r).map(lambda r: r).sink("out", rs.sinks.null())
        s.map(lambda r: r).sink("out2", rs.sinks.null())
        return [st.step_id for st in flow.steps]

    assert build() == build() == ["rows", "rows.map", "rows.map.map", "out", "rows.map_2", "out2"]


def test_unserialisable_function_names_the_step_and_the_captured_object():
    lock = threading.Lock()
    flow = rs.Flow("f")
    source(flow).map(lambda r: (lock, r)[1], name="locked").sink("out", rs.sinks.null())
    with pytest.raises(FlowError, match=r"step 'locked' cannot be sent.*'lock'"):
        check_serialisable(flow.steps)


def test_bad_arguments_are_refused():
    flow = rs.Flow("f")
    s = source(flow)
    with pytest.raises(FlowError, match="on_error"):
        s.map(lambda r: r, on_error="ignore")
    with pytest.raises(FlowError, match="expected a function"):
        s.map(42)
    with pytest.raises(FlowError, match="multiple of its slide"):
        rs.windows.sliding(size="10s", slide="3s")
    with pytest.raises(FlowError, match="not a source"):
        flow.source("bad", [1, 2, 3])
    with pytest.raises(FlowError, match="exactly one of"):
        s.key_by("k").join(s.key_by("k"))


def test_durations():
    assert to_ms("2s") == 2000 and to_ms("500ms") == 500 and to_ms("1h") == 3_600_000
    with pytest.raises(ValueError, match="cannot read"):
        to_ms("two seconds")


def test_mermaid_shows_steps_and_routing():
    flow = rs.Flow("f")
    agg = source(flow).key_by("k").window(rs.windows.tumbling("1s")).aggregate(n=rs.agg.count())
    agg.sink("out", rs.sinks.null())
    agg.late.sink("late", rs.sinks.null())
    text = flow.to_mermaid()
    assert text.startswith("flowchart LR")
    assert "hash(k)" in text and "-- late -->" in text
