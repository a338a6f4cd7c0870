"""Logical -> physical: chaining, channels, routing defaults, key-group tables."""

import pytest

from rheostat.plan.errors import FlowError
from rheostat.plan.logical import (
    FORWARD,
    Input,
    MapStep,
    Port,
    Routing,
    SinkStep,
    SourceStep,
    UnionStep,
    WindowAggregateStep,
)
from rheostat.plan.physical import assign_workers, lower


def src(sid="src", **kw):
    return SourceStep(sid, (), **kw)


def m(sid, up, routing=None, **kw):
    return MapStep(sid, (Input(Port(up), routing),), fn=len, **kw)


def sink(sid, up, routing=None, **kw):
    return SinkStep(sid, (Input(Port(up), routing),), **kw)


def test_forward_pipeline_fuses_into_one_chain_with_no_channels():
    plan = lower((src(), m("a", "src"), m("b", "a"), sink("out", "b")), parallelism=3)
    assert [c.steps for c in plan.chains] == [("src", "a", "b", "out")]
    assert plan.channels == ()
    assert plan.task_ids == ["src#0", "src#1", "src#2"]


def test_hash_edge_breaks_the_chain_and_connects_all_to_all():
    steps = (src(), m("a", "src", Routing("hash", ("k",))), sink("out", "a"))
    plan = lower(steps, parallelism=2)
    assert [c.steps for c in plan.chains] == [("src",), ("a", "out")]
    assert len(plan.channels) == 4
    assert {(c.src_index, c.dst_index) for c in plan.channels} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert plan.key_group_owners["a"][0] == 0 and plan.key_group_owners["a"][-1] == 1


def test_fan_out_and_parallelism_change_break_chains():
    steps = (src(), m("a", "src"), m("b", "src"), sink("o1", "a"), sink("o2", "b", parallelism=1))
    plan = lower(steps, parallelism=2)
    chains = {c.steps for c in plan.chains}
    assert ("src",) in chains and ("a", "o1") in chains and ("b",) in chains and ("o2",) in chains
    o2_edge = next(e for e in plan.edges if e.dst_step == "o2")
    assert o2_edge.routing.kind == "rebalance"  # parallelism differs: default is rebalance


def test_forward_edge_with_unequal_parallelism_is_refused():
    with pytest.raises(FlowError, match="forward edge"):
        lower((src(), sink("out", "src", FORWARD, parallelism=3)), parallelism=2)


def test_union_has_one_input_channel_per_upstream_task():
    steps = (src("a"), src("b"), UnionStep("u", (Input(Port("a")), Input(Port("b")))),
             sink("out", "u"))
    plan = lower(steps, parallelism=2)
    assert len(plan.inputs_of("u#0")) == 2
    assert plan.chain_of("out").chain_id == "u"


def test_side_output_consumers_get_their_own_channels():
    agg = WindowAggregateStep("w", (Input(Port("src"), Routing("hash", ("k",))),))
    steps = (src(), agg, sink("out", "w"), SinkStep("late", (Input(Port("w", "late")),)))
    plan = lower(steps, parallelism=2)
    assert plan.chain_of("out").chain_id == "w"
    assert plan.chain_of("late").chain_id == "late"
    assert any(c.edge.src_port == "late" for c in plan.channels)


def test_unknown_input_is_reported():
    with pytest.raises(FlowError, match="unknown step"):
        lower((sink("out", "nowhere"),))


def test_workers_get_matching_indices_so_forward_edges_stay_local():
    plan = lower((src(), m("a", "src", Routing("hash", ("k",))), sink("out", "a")), parallelism=4)
    placement = assign_workers(plan, 2)
    assert placement["src#1"] == placement["a#1"] == 1
    assert placement["src#2"] == 0
