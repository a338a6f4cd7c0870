"""A task's hand-over (``runtime.handover.Handover``) driven by hand: no task, channel,
process or Arrow. Each test feeds it what arrives, in one interleaving, and checks the
actions it answers with; rows and messages are plain strings to it."""

import itertools

import pytest

from rheostat.runtime.handover import (
    ExpectSplits,
    Handover,
    HandOverGroups,
    HandOverSplits,
    HandOverTransactions,
    Install,
    Part,
    Release,
    Replay,
    Report,
    RestartWatermarks,
    Retire,
    TakeOver,
)

R = 7  # the reconfiguration's id
LOSES = {"agg": {1: [3, 5], 2: [9]}}  # step -> new owner -> key groups this task loses
HANDED = [HandOverGroups(R, "agg", 1, (3, 5)), HandOverGroups(R, "agg", 2, (9,))]


def aligning(inputs=3, ended=(), **part):
    """A task of the changed step with ``inputs`` old inputs, losing LOSES."""
    h = Handover()
    part.setdefault("losing", LOSES)
    assert h.command(Part(R, index=0, aligns=True, reports=True, **part), inputs, ended) == []
    h.validate()
    return h


def feed(h, *events):
    """Feed ``("marker", ch)``, ``("end", ch)`` or ``("state", step, task, state)``;
    the actions of all of them, in order."""
    out = []
    for kind, *args in events:
        if kind == "marker":
            out += h.on_marker(R, *args)
        elif kind == "end":
            out += h.on_end(*args)
        else:
            out += h.state_arrived(*args)
        h.validate()
    return out


# --- marker alignment -------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_it_hands_over_once_the_last_marker_is_in_whatever_the_order(order):
    h = aligning()
    *first, last = order
    assert feed(h, *[("marker", c) for c in first]) == []
    assert h.aligning
    assert feed(h, ("marker", last)) == [*HANDED, Report(R)]
    assert not h.aligning


def test_an_end_of_stream_counts_as_the_marker_and_an_input_ended_before_needs_none():
    h = aligning(inputs=3, ended={2})
    assert feed(h, ("end", 0)) == []  # its sender ended before the change: no marker comes
    assert feed(h, ("marker", 1)) == [*HANDED, Report(R)]


def test_a_marker_and_an_end_on_one_channel_the_end_waits_for_the_hand_over():
    h = aligning(inputs=2)
    feed(h, ("marker", 0))
    assert h.defer(0, "wm 40") and h.defer(0, "end")  # after the marker: the new plan's
    assert not h.defer(1, "wm 30")  # before its marker: the old plan's, goes on now
    assert feed(h, ("marker", 1)) == [*HANDED, Replay(((0, "wm 40"), (0, "end"))), Report(R)]
    assert not h.defer(0, "wm 50")  # the switch is over: nothing waits any more


def test_deferred_messages_replay_by_channel_in_arrival_order():
    h = aligning(inputs=3)
    feed(h, ("marker", 2), ("marker", 0))
    for channel, message in [(2, "a"), (0, "b"), (2, "c")]:
        assert h.defer(channel, message)
    (replay,) = [a for a in feed(h, ("marker", 1)) if isinstance(a, Replay)]
    assert replay == Replay(((0, "b"), (2, "a"), (2, "c")))


def test_markers_of_other_reconfigurations_do_not_count():
    h = aligning(inputs=2)
    assert feed(h, ("marker", 0)) == []
    assert h.on_marker(R - 1, 1) == []  # an older change's late marker
    assert h.aligning


def test_a_marker_before_its_command_holds_the_input_and_counts_once_the_command_comes():
    h = Handover()
    assert h.on_marker(R, 1) == []
    assert h.early_inputs == {1}  # the task reads it no further for now
    assert h.command(Part(R, 0, aligns=True, losing=LOSES, reports=True), 2, ()) == []
    assert h.early_inputs == ()
    assert h.defer(1, "wm")  # it delivered its marker: what follows waits
    assert feed(h, ("marker", 0)) == [*HANDED, Replay(((1, "wm"),)), Report(R)]


def test_a_task_with_no_live_input_hands_over_at_the_command():
    h = Handover()
    part = Part(R, 0, aligns=True, losing=LOSES, reports=True)
    assert h.command(part, 2, ended={0, 1}) == [*HANDED, Report(R)]


def test_watermarks_of_a_rescaled_source_restart_except_on_ended_inputs():
    h = aligning(inputs=3, losing={}, restart={0, 1})
    feed(h, ("marker", 2), ("end", 1))
    assert feed(h, ("marker", 0)) == [RestartWatermarks((0,)), Report(R)]


# --- state on its way here --------------------------------------------------------------


def gaining(**part):
    """A task gaining groups 4 and 6 of step agg from task 1 and group 8 from task 2."""
    h = Handover()
    part.setdefault("gaining", {"agg": {1: [6, 4], 2: [8]}})
    actions = h.command(Part(R, 0, reports=True, **part))
    h.validate()
    return h, actions


def test_rows_watermark_and_end_wait_for_every_state_then_go_in_that_order():
    h, actions = gaining()
    assert actions == [] and h.pending.tolist() == [4, 6, 8]
    h.hold("rows a", 0)
    assert h.hold_watermark(10) and h.hold_watermark(20)
    h.hold("rows b", 1)
    assert h.hold_end()  # end of stream during the hand-over
    assert feed(h, ("state", "agg", "agg#2", "s2")) == [TakeOver("agg", "agg#2", "s2")]
    assert h.pending is not None  # task 1's state is still on its way
    assert feed(h, ("state", "agg", "agg#1", "s1")) == [
        TakeOver("agg", "agg#1", "s1"),
        Release((("rows a", 0), ("rows b", 1)), watermark=20, end=True),
        Report(R),
    ]
    assert h.pending is None
    assert not h.hold_watermark(30) and not h.hold_end()


def test_state_arriving_before_the_markers_waits_for_them_then_installs_after_the_replay():
    h = aligning(inputs=2, gaining={"agg": {1: [4]}})
    assert feed(h, ("state", "agg", "agg#1", "s1"), ("marker", 1)) == []  # kept: aligning
    h.defer(1, "wm 50")
    assert feed(h, ("marker", 0)) == [
        *HANDED, Replay(((1, "wm 50"),)), Install((("agg", "agg#1", "s1"),))]
    assert h.hold_watermark(50)  # the replayed watermark still waits for the state
    assert feed(h, ("state", "agg", "agg#1", "s1")) == [
        TakeOver("agg", "agg#1", "s1"), Release((), 50, False), Report(R)]


def test_a_new_task_reports_only_once_every_state_is_in():
    h, _ = gaining(gaining={"agg": {1: [4]}, "join": {3: [4]}})
    assert feed(h, ("state", "join", "agg#3", "j")) == [TakeOver("join", "agg#3", "j")]
    assert Report(R) in feed(h, ("state", "agg", "agg#1", "a"))


# --- retiring, leaving, function updates ------------------------------------------------


def test_a_retiring_task_hands_over_retires_and_reports_and_replays_nothing():
    h = aligning(inputs=2, retiring=True)
    feed(h, ("marker", 0))
    assert h.defer(0, "end")
    assert feed(h, ("marker", 1)) == [*HANDED, Retire(R, leaving=False), Report(R)]


def test_a_moved_task_hands_everything_with_its_transactions_and_leaves_unreported():
    h = Handover()
    part = Part(R, 0, aligns=True, retiring=True, leaving=True, losing=LOSES)
    assert h.command(part, 1, ()) == []
    assert h.leaving
    assert feed(h, ("marker", 0)) == [*HANDED, HandOverTransactions(R), Retire(R, leaving=True)]


def test_the_new_instance_of_a_moved_task_waits_for_its_sinks_transaction():
    h = Handover()
    assert h.command(Part(R, 3, transactions=("out",), reports=True)) == []
    assert feed(h, ("state", "out", "sink#3", "txn")) == [
        TakeOver("out", "sink#3", "txn"), Report(R)]
    assert not h.leaving


def test_a_function_update_alone_reports_at_once():
    assert Handover().command(Part(R, 0, reports=True)) == [Report(R)]
    assert Handover().command(Part(R, 0)) == []  # a task the change does not touch


# --- sources ----------------------------------------------------------------------------


def test_a_retiring_source_task_hands_its_splits_over_at_the_command():
    h = Handover()
    part = Part(R, 2, aligns=True, retiring=True, source_step="src",
                losing_splits={0: [5, 7], 1: [6]}, reports=True)
    assert h.command(part, 0, ()) == [
        HandOverSplits(R, 0, (5, 7)), HandOverSplits(R, 1, (6,)), Retire(R, False), Report(R)]


def test_a_source_task_gaining_splits_expects_them_and_reports_once_they_are_in():
    h = Handover()
    part = Part(R, 0, aligns=True, source_step="src", gaining_splits={2: [5, 7]},
                reports=True)
    assert h.command(part, 0, ()) == [ExpectSplits((5, 7))]
    assert h.pending is None  # splits hold no rows back: the source reads them later
    assert feed(h, ("state", "src", "src#2", {5: "at 10", 7: "at 3"})) == [
        TakeOver("src", "src#2", {5: "at 10", 7: "at 3"}), Report(R)]
