"""Partial / merge / final aggregation against plain-Python definitions."""

from __future__ import annotations

import functools
import itertools
import operator

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rheostat.plan.logical import Agg
from rheostat.runtime.aggregates import AggPlan

ALL = (
    ("rows", Agg("count")),
    ("valid", Agg("count", "x")),
    ("total", Agg("sum", "x")),
    ("avg", Agg("mean", "x")),
    ("lo", Agg("min", "x")),
    ("hi", Agg("max", "x")),
    ("fx", Agg("first", "x")),
    ("lx", Agg("last", "x")),
    ("fy", Agg("first", "y")),
    ("ly", Agg("last", "y")),
    ("miny", Agg("min", "y")),
    ("prod", Agg("reduce", "x", operator.add)),
)


def expected(rows: list[dict]) -> dict[str, object]:
    """Each aggregation by its definition, over rows given in arrival order."""
    xs = [r["x"] for r in rows if r["x"] is not None]
    ys = [(r["_ts"], i, r["y"]) for i, r in enumerate(rows) if r["y"] is not None]
    xt = [(r["_ts"], i, r["x"]) for i, r in enumerate(rows) if r["x"] is not None]

    def first(v):  # least time, then earliest arrival
        return min(v)[2] if v else None

    def last(v):  # greatest time, then latest arrival
        return max(v)[2] if v else None

    return {
        "rows": len(rows), "valid": len(xs), "total": sum(xs) if xs else None,
        "avg": sum(xs) / len(xs) if xs else None, "lo": min(xs, default=None),
        "hi": max(xs, default=None), "fx": first(xt), "lx": last(xt), "fy": first(ys),
        "ly": last(ys), "miny": min((y for _, _, y in ys), default=None),
        "prod": functools.reduce(operator.add, xs) if xs else None,
    }


def final_by_key(plan: AggPlan, merged: pa.Table) -> dict[object, dict[str, object]]:
    final = {n: a.to_pylist() for n, a in plan.finalize(merged).items()}
    return {k: {n: v[i] for n, v in final.items()} for i, k in enumerate(merged["k"].to_pylist())}


def approx(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        for name, value in want[key].items():
            if isinstance(value, float):
                assert got[key][name] == pytest.approx(value), (key, name)
            else:
                assert got[key][name] == value, (key, name)


row = st.fixed_dictionaries({
    "k": st.sampled_from(["a", "b", None]),
    "x": st.none() | st.integers(-1000, 1000),
    "y": st.none() | st.sampled_from(["p", "q", "r", "s"]),
    "_ts": st.integers(0, 20),
})


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
def test_partials_merged_in_arrival_order_equal_direct(rows: list[dict], cuts: list[int]) -> None:
    """Split rows into arrival-ordered chunks, pre-aggregate each, merge: same as direct."""
    plan = AggPlan(ALL)
    schema = pa.schema([("k", pa.string()), ("x", pa.int64()), ("y", pa.string()),
                        ("_ts", pa.int64())])
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    parts = [plan.partial(pa.Table.from_pylist(rows[a:b], schema), ["k"])
             for a, b in itertools.pairwise(bounds)]
    # merge in two levels, as compaction does
    merged = plan.merge(pa.concat_tables(parts[:2]), ["k"])
    merged = plan.merge(pa.concat_tables([merged, *parts[2:]]), ["k"])
    want = {k: expected([r for r in rows if r["k"] == k]) for k in {r["k"] for r in rows}}
    approx(final_by_key(plan, merged), want)
    approx(final_by_key(plan, plan.merge(parts[0], ["k"])),
           {k: expected([r for r in rows[:bounds[1]] if r["k"] == k])
            for k in {r["k"] for r in rows[:bounds[1]]}})


def test_first_last_ties_go_by_arrival() -> None:
    plan = AggPlan((("f", Agg("first", "v")), ("l", Agg("last", "v"))))
    one = pa.table({"k": [1, 1], "v": ["a", "b"], "_ts": [5, 5]})
    two = pa.table({"k": [1, 1], "v": ["c", "d"], "_ts": [5, 2]})
    merged = plan.merge(pa.concat_tables([plan.partial(one, ["k"]), plan.partial(two, ["k"])]),
                        ["k"])
    final = plan.finalize(merged)
    assert final["f"].to_pylist() == ["d"]  # the only row at time 2
    merged = plan.merge(pa.concat_tables([plan.partial(one.slice(0, 1), ["k"]),
                                          plan.partial(one.slice(1), ["k"])]), ["k"])
    final = plan.finalize(merged)
    assert final["f"].to_pylist() == ["a"] and final["l"].to_pylist() == ["b"]


def test_result_types() -> None:
    plan = AggPlan((
        ("n", Agg("count")), ("si", Agg("sum", "i")), ("sf", Agg("sum", "f")),
        ("m", Agg("mean", "i")), ("lo", Agg("min", "t")), ("hi", Agg("max", "s")),
        ("fi", Agg("first", "i")), ("ls", Agg("last", "s")), ("su", Agg("sum", "u")),
    ))
    table = pa.table({
        "k": [1, 1], "i": pa.array([1, 2], pa.int32()), "f": pa.array([1.5, 2], pa.float32()),
        "t": pa.array([3, 4], pa.timestamp("ms")), "s": ["a", "b"],
        "u": pa.array([1, 2], pa.uint8()), "_ts": [0, 1],
    })
    final = plan.finalize(plan.merge(plan.partial(table, ["k"]), ["k"]))
    types = {name: arr.type for name, arr in final.items()}
    assert types == {
        "n": pa.int64(), "si": pa.int64(), "sf": pa.float64(), "m": pa.float64(),
        "lo": pa.timestamp("ms"), "hi": pa.string(), "fi": pa.int32(), "ls": pa.string(),
        "su": pa.int64(),
    }
    assert final["si"].to_pylist() == [3] and final["m"].to_pylist() == [1.5]


def test_all_null_group() -> None:
    plan = AggPlan(ALL)
    table = pa.table({"k": ["a"], "x": pa.array([None], pa.int64()),
                      "y": pa.array([None], pa.string()), "_ts": [1]})
    final = {n: a.to_pylist()[0] for n, a in plan.finalize(plan.partial(table, ["k"])).items()}
    assert final == {"rows": 1, "valid": 0, "total": None, "avg": None, "lo": None, "hi": None,
                     "fx": None, "lx": None, "fy": None, "ly": None, "miny": None, "prod": None}


def test_partial_extra_outputs_and_layout() -> None:
    plan = AggPlan((("n", Agg("count")), ("avg", Agg("mean", "x"))))
    part = plan.partial(pa.table({"k": [1, 1, 2], "x": [1.0, 2.0, 3.0], "_ts": [4, 2, 9]}),
                        ["k"], extra=[("_ts", "min", "lo")])
    assert part.column_names == ["k", "_a0_n", "_a1_s", "_a1_n", "lo"]
    assert plan.input_columns == ["x"]
    assert part.to_pylist() == [{"k": 1, "_a0_n": 2, "_a1_s": 3.0, "_a1_n": 2, "lo": 2},
                                {"k": 2, "_a0_n": 1, "_a1_s": 3.0, "_a1_n": 1, "lo": 9}]


def test_reduce_is_the_per_value_slow_path() -> None:
    calls = []

    def longest(a: str, b: str) -> str:
        calls.append((a, b))
        return a if len(a) >= len(b) else b

    plan = AggPlan((("w", Agg("reduce", "s", longest)),))
    t = pa.table({"k": [1, 1, 1, 2], "s": ["ab", None, "abc", "x"], "_ts": [0, 1, 2, 3]})
    part = plan.partial(t, ["k"])
    assert plan.finalize(plan.merge(pa.concat_tables([part, part]), ["k"]))["w"].to_pylist() \
        == ["abc", "x"]
    assert ("ab", "abc") in calls


def test_reduce_errors_name_the_aggregation() -> None:
    plan = AggPlan((("bad", Agg("reduce", "x", lambda a, b: a / 0)),))
    with pytest.raises(ValueError, match=r"'bad'.*reducer raised"):
        plan.partial(pa.table({"k": [1, 1], "x": [1, 2], "_ts": [0, 0]}), ["k"])
    plan = AggPlan((("str", Agg("reduce", "x", lambda a, b: "oops")),))
    with pytest.raises(ValueError, match=r"'str'.*column's type"):
        plan.partial(pa.table({"k": [1, 1], "x": [1, 2], "_ts": [0, 0]}), ["k"])


@pytest.mark.parametrize(("aggs", "message"), [
    ((("a", Agg("sum")),), "needs a column"),
    ((("a", Agg("median", "x")),), "unknown kind"),  # type: ignore[arg-type]
    ((("a", Agg("reduce", "x")),), "callable"),
    ((("a", Agg("count")), ("a", Agg("sum", "x"))), "used twice"),
])
def test_invalid_aggregations(aggs: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AggPlan(aggs)
