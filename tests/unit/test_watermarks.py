"""Watermark logic: minimum over live inputs, idleness, end of stream, generators."""

from rheostat.runtime.messages import MAX_WATERMARK, MIN_WATERMARK
from rheostat.runtime.watermarks import BoundedOutOfOrderness, InputWatermarks


def test_combined_watermark_is_the_minimum_and_only_advances():
    w = InputWatermarks(3)
    assert w.update(0, 100) is None
    assert w.update(1, 50) is None
    assert w.update(2, 70) == 50
    assert w.update(1, 40) is None  # a channel's watermark never goes back
    assert w.update(1, 200) == 70
    assert w.current == 70


def test_idle_input_does_not_hold_back_the_others():
    w = InputWatermarks(2)
    w.update(0, 10)
    assert w.set_idle(1) == 10
    assert w.update(0, 20) == 20
    assert w.update(1, 5) is None  # active again, behind: the watermark holds
    assert w.update(1, 30) is None and w.update(0, 31) == 30


def test_all_idle_holds_the_watermark():
    w = InputWatermarks(2)
    w.update(0, 10)
    w.update(1, 10)
    assert w.set_idle(0) is None and w.set_idle(1) is None
    assert w.all_idle and w.current == 10


def test_ended_inputs_count_as_maximal_and_all_ended_gives_max():
    w = InputWatermarks(2)
    w.update(0, 10)
    assert w.end(1) == 10
    assert not w.all_ended
    assert w.end(0) == MAX_WATERMARK
    assert w.all_ended


def test_bounded_out_of_orderness_trails_the_maximum():
    g = BoundedOutOfOrderness(2000)
    assert g.watermark == MIN_WATERMARK
    g.observe(10_000)
    g.observe(9_000)
    assert g.watermark == 10_000 - 2000 - 1
