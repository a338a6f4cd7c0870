"""Planning live reconfigurations: owner tables, specs, stages and refusals (pure logic)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rheostat.plan.logical import (
    Input,
    KeyedProcessStep,
    MapStep,
    Port,
    Routing,
    SinkStep,
    SourceStep,
)
from rheostat.plan.physical import lower
from rheostat.plan.reconfig import (
    MoveKeyGroups,
    Place,
    ReconfigError,
    Rescale,
    SetKnob,
    SetOwners,
    UpdateFunction,
    balanced_owners,
    plan_reconfiguration,
    stages,
)
from rheostat.testing import rows

MAXP = 64


def keyed_plan(parallelism=2):
    # rows() without splits=N: one split per task, so the source keeps its parallelism
    steps = (SourceStep("src", (), source=rows([{"k": 1}])),
             MapStep("m", (Input(Port("src")),), fn=lambda r, factor: r, knobs={"factor": 1}),
             KeyedProcessStep("p", (Input(Port("m"), Routing("hash", ("k",))),), keys=("k",)),
             SinkStep("out", (Input(Port("p")),)))
    return lower(steps, parallelism=parallelism, max_parallelism=MAXP)


def replan(plan, *ops, **kw):
    return plan_reconfiguration(plan, {t: 0 for t in plan.task_ids}, 1, list(ops), 1, **kw)


@given(st.integers(1, 8), st.integers(1, 8))
def test_balanced_owners_are_balanced_and_move_no_more_than_needed(old_p, new_p):
    old = balanced_owners(tuple(g * old_p // MAXP for g in range(MAXP)), old_p)
    new = balanced_owners(old, new_p)
    counts = [new.count(t) for t in range(new_p)]
    assert max(counts) - min(counts) <= 1 and set(new) == set(range(new_p))
    kept = sum(1 for a, b in zip(old, new, strict=True) if a == b)
    # each task that stays keeps up to its new share of what it had
    assert kept >= sum(min(old.count(t), counts[t]) for t in range(min(old_p, new_p)))


def test_rescale_up_adds_tasks_keeps_channel_ids_and_moves_only_changed_groups():
    plan = keyed_plan()
    r = replan(plan, Rescale("p", 3))
    assert r.spec.added == ("p#2",) and r.spec.removed == ()
    old_ids = {(c.src_task, c.dst_task): c.channel_id for c in plan.channels}
    for c in r.plan.channels:
        if (c.src_task, c.dst_task) in old_ids:
            assert old_ids[(c.src_task, c.dst_task)] == c.channel_id
        else:
            assert c.channel_id in r.spec.new_channels
    moves = r.spec.moves["p"]
    assert all(plan.key_group_owners["p"][g] == a and r.plan.key_group_owners["p"][g] == b
               for g, (a, b) in moves.items())
    assert set(r.spec.gaining("p", 2)) <= {0, 1} and r.spec.affected_chains == {"p"}


def test_rescale_down_retires_tasks():
    r = replan(keyed_plan(3), Rescale("p", 1))
    assert r.spec.removed == ("p#1", "p#2")
    assert set(r.plan.key_group_owners["p"]) == {0}


def test_function_and_knob_updates_replace_the_step_only():
    plan = keyed_plan()
    r = replan(plan, SetKnob("m", "factor", 3), UpdateFunction("m", lambda r, factor: r))
    assert r.plan.steps["m"].knobs == {"factor": 3}
    assert r.spec.updated_steps == ("m",) and not r.spec.moves
    assert r.plan.steps["p"] is plan.steps["p"]


@pytest.mark.parametrize("op, message", [
    (Rescale("src", 3), "makes its splits from the parallelism"),
    (Rescale("nope", 3), "no step"),
    (MoveKeyGroups("m", (1,), 0), "not keyed"),
    (MoveKeyGroups("p", (1,), 5), "no task 5"),
    (MoveKeyGroups("p", (MAXP,), 0), "key groups must be in"),
    (MoveKeyGroups("p", tuple(range(MAXP // 2)), 1), "would own no key group"),
    (UpdateFunction("out", print), "no function to update"),
    (SetKnob("m", "speed", 1), "declares no knob"),
    (SetKnob("m", "factor", "fast"), "is a int"),
    (Place("p#9", 1), "no task 'p#9'"),
    (Place("p#0", 0), "on worker 0 already"),
])
def test_requests_that_cannot_be_done_are_refused_with_the_reason(op, message):
    with pytest.raises(ReconfigError, match=message):
        replan(keyed_plan(), op)


def unchained_sink_plan():
    steps = (SourceStep("src", ()),
             KeyedProcessStep("p", (Input(Port("src"), Routing("hash", ("k",))),), keys=("k",)),
             SinkStep("out", (Input(Port("p")),), parallelism=1))
    return lower(steps, parallelism=2, max_parallelism=MAXP)


def test_a_placed_task_moves_with_all_its_key_groups_on_new_channels():
    plan = unchained_sink_plan()
    placement = {t: int(t[-1]) for t in plan.task_ids}
    r = plan_reconfiguration(plan, placement, 2, [Place("p#1", 0)], 1)
    assert r.spec.relocated == ("p#1",) and r.placement["p#1"] == 0
    assert r.spec.added == r.spec.removed == () and r.spec.affected_chains == {"p"}
    owned = {g for g, o in enumerate(plan.key_group_owners["p"]) if o == 1}
    assert r.spec.moves["p"] == {g: (1, 1) for g in owned}
    assert r.plan.key_group_owners == plan.key_group_owners
    old = {c.channel_id for c in plan.channels}
    for c in r.plan.channels:
        touches = "p#1" in (c.src_task, c.dst_task)
        assert (c.channel_id in r.spec.new_channels) == touches
        assert touches or c.channel_id in old
    with pytest.raises(ReconfigError, match="on its own"):
        plan_reconfiguration(plan, placement, 2, [Place("p#1", 0), Rescale("p", 3)], 2)


def test_an_idle_task_is_allowed_between_stages_only():
    owners = tuple([0] * MAXP)
    with pytest.raises(ReconfigError, match="own no key group"):
        replan(keyed_plan(), SetOwners("p", owners))
    assert replan(keyed_plan(), SetOwners("p", owners), allow_idle_tasks=True).spec.moves


@pytest.mark.parametrize("old_p, new_p", [(2, 4), (4, 2), (2, 2)])
def test_stages_move_every_group_once_growing_first_and_shrinking_last(old_p, new_p):
    plan = keyed_plan(old_p)
    ops = [Rescale("p", new_p)] if old_p != new_p else [MoveKeyGroups("p", tuple(range(20)), 1)]
    final = replan(plan, *ops).plan.key_group_owners["p"]
    parts = stages(plan, {}, 1, ops, max_groups=5)
    assert len(parts) > 1
    current, moved = plan, []
    for i, part in enumerate(parts):
        rescale = [o for o in part if isinstance(o, Rescale)]
        first, last = i == 0, i == len(parts) - 1
        assert bool(rescale) == ((new_p > old_p and first) or (new_p < old_p and last))
        r = plan_reconfiguration(current, {}, 1, part, i, allow_idle_tasks=True)
        assert len(r.spec.moves.get("p", {})) <= 5
        moved += list(r.spec.moves.get("p", {}))
        current = r.plan
    assert current.key_group_owners["p"] == final
    assert len(moved) == len(set(moved))


def test_channel_ids_are_never_reused_after_a_rescale_down_and_up():
    plan = keyed_plan(3)
    seen = {c.channel_id for c in plan.channels}
    for n in (1, 3, 2, 4):
        r = replan(plan, Rescale("p", n))
        assert not seen & set(r.spec.new_channels)
        seen |= set(r.spec.new_channels)
        plan = r.plan
